import type { Context } from "hono";
import { errorResponse, markLogged } from "./errors.ts";
import { eventStreamBody, isEventStream } from "./event_stream.ts";
import { createLogger, type Logger } from "./log.ts";
import type { LongLived } from "./long_lived.ts";
import { countedStatus } from "./upgrade.ts";
import { pathOf } from "./url.ts";
import type { FetchHandler } from "./types.ts";

/** How a response ended: its last byte was handed to the runtime, or the client left first. */
export type Outcome = "finished" | "aborted";

/** What a handler may know about the end of its own response (Twisted's `request.notifyFinish()`). */
export interface Lifecycle {
  /** Aborts when the client leaves before the response is complete; never after it is complete. */
  readonly signal: AbortSignal;
  /** Settles once, with the outcome. Never rejects. */
  readonly done: Promise<Outcome>;
}

/** Where a request's state lives: a property, because a WeakMap or `c.set()` per request costs
 * a measurable share of Node's throughput. */
const STATE = Symbol("lifecycle");

type WithState = Request & { [STATE]?: RequestState };

/** What every request's state shares: the logger, the metric hooks and the server's long-lived connections. */
interface Shared {
  logger: Logger;
  onOutcome: ((outcome: Outcome) => void) | undefined;
  longLived: LongLived | undefined;
}

class RequestState implements Lifecycle {
  #outcome: Outcome | undefined;
  #controller: AbortController | undefined;
  #done: Promise<Outcome> | undefined;
  #resolve: ((outcome: Outcome) => void) | undefined;
  #shared: Shared;
  #request: Request;
  /** True once a handler asked for the lifecycle, so its response body is tracked to the end. */
  tracked = false;

  constructor(shared: Shared, request: Request) {
    this.#shared = shared;
    this.#request = request;
  }

  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    if (this.#outcome === "aborted") this.#controller.abort();
    return this.#controller.signal;
  }

  get done(): Promise<Outcome> {
    this.#done ??= this.#outcome ? Promise.resolve(this.#outcome) : new Promise<Outcome>((resolve) => (this.#resolve = resolve));
    return this.#done;
  }

  get outcome(): Outcome | undefined {
    return this.#outcome;
  }

  get logger(): Logger {
    return this.#shared.logger;
  }

  get longLived(): LongLived | undefined {
    return this.#shared.longLived;
  }

  /**
   * Records the outcome; only the first call counts. `error`: the response's own body failed,
   * so the client got less than the whole response without leaving (`response_failed`).
   */
  settle(outcome: Outcome, error?: unknown): void {
    if (this.#outcome) return;
    this.#outcome = outcome;
    if (outcome === "aborted") this.#controller?.abort();
    this.#resolve?.(outcome);
    if (outcome === "aborted") {
      const request = this.#request;
      const fields = { method: request.method, path: pathOf(request.url) };
      if (error === undefined) this.#shared.logger.info("request_aborted", fields);
      else {
        this.#shared.logger.error("response_failed", { ...fields, error });
        markLogged(error);
      }
    }
    this.#shared.onOutcome?.(outcome);
  }
}

/**
 * Adapters call this when the client of `request` left before its response was complete. They
 * learn it from the transport (a response's 'close' before 'finish' on node:http, a connection's
 * end on Deno), which costs far less per request than listening on every request's AbortSignal
 * (bench/README.md#per-request-costs-the-code-avoids). After the response is complete it does nothing.
 */
export function reportClientGone(request: Request): void {
  (request as WithState)[STATE]?.settle("aborted");
}

export interface LifecycleOptions {
  logger: Logger;
  /** Called once per request with its outcome (for metrics). */
  onOutcome?(outcome: Outcome): void;
  /** Called once per request with the status it was answered with (for metrics). */
  onResponse?(status: number): void;
  /** The server's WebSockets and event streams, which the helpers (`upgradeWebSocket`, `streamSSE`) join. */
  longLived?: LongLived;
}

/**
 * Wraps `fetch` so that it tracks every request's end and logs `request_aborted` when a client
 * leaves before its response is complete, as the adapter reports it (`reportClientGone`) or, for a
 * handler that asked for its lifecycle, as `c.req.raw.signal` says. Adapters guarantee that signal
 * aborts only in that case (Deno's legacy abort-after-success is turned off in deno.json). A
 * response counts as finished when its last byte is handed to the runtime: when the handler
 * returns, or, for a body tracked through `requestLifecycle(c)`, when its last chunk is read.
 *
 * A wrapper around the whole app rather than a Hono middleware: any middleware makes Hono compose
 * an async chain for every request, while a synchronous handler behind this wrapper stays
 * synchronous, and @hono/node-server writes such a response without awaiting anything (a fifth
 * of Node's throughput for `GET /`: bench/README.md#per-request-costs-the-code-avoids).
 */
export function withLifecycle<F extends FetchHandler>(fetch: F, { logger, onOutcome, onResponse, longLived }: LifecycleOptions): F {
  const shared: Shared = { logger, onOutcome, longLived };
  const answered = (state: RequestState, res: Response): Response => {
    onResponse?.(countedStatus(res));
    if (state.outcome) return res;
    const body = state.tracked || isStreaming(res) ? res.body : null;
    if (body === null) {
      state.settle("finished");
      return res;
    }
    const onEnd = (outcome: Outcome, error?: unknown) => state.settle(outcome, error);
    // Any event stream, however the app made it, is under the event-stream policy.
    const passed = isStreaming(res) && isEventStream(res.headers) ? eventStreamBody(body, longLived, onEnd) : trackBody(body, onEnd);
    const tracked = new Response(passed, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
    streamingResponses.add(tracked);
    return tracked;
  };
  return function fetchWithLifecycle(request: Request, env?: unknown, executionCtx?: unknown) {
    // A request gets its state only when something needs it: a handler that asks for its
    // lifecycle (then during the call, through `active`), a response that is not ready when the
    // call returns, or one whose body streams. One answered at once with a body of fixed size is
    // finished as it returns, and nothing can report it gone any more, so it needs none (an object
    // and a property on a runtime-owned Request: bench/README.md#per-request-costs-the-code-avoids).
    const outer = active;
    active = shared;
    let res: Response | Promise<Response>;
    try {
      res = fetch(request, env, executionCtx);
    } catch (error) {
      res = errorResponse(error, request, logger);
    } finally {
      active = outer;
    }
    let state = (request as WithState)[STATE];
    if (res instanceof Promise) {
      const pending = state ?? ((request as WithState)[STATE] = new RequestState(shared, request));
      return res.then(
        (res) => answered(pending, res),
        (error: unknown) => answered(pending, errorResponse(error, request, logger)),
      );
    }
    if (!state && isStreaming(res)) state = (request as WithState)[STATE] = new RequestState(shared, request);
    if (state) return answered(state, res);
    onResponse?.(countedStatus(res));
    onOutcome?.("finished");
    return res;
  } as F;
}

/**
 * The logger of the server `request` came through, for errors answered inside the app (Hono's
 * error handler): known while the app's synchronous part runs, and, once it has returned a
 * promise, from the request's state; outside a server (`app.request()` in tests), JSON lines on stdout.
 */
export function requestLifecycleLogger(request: Request): Logger {
  return (request as WithState)[STATE]?.logger ?? active?.logger ?? (stdoutLogger ??= createLogger((line) => console.log(line)));
}

let stdoutLogger: Logger | undefined;

/**
 * The long-lived connections of the server `request` came through, found as its logger is (at no
 * cost to a request that does not ask); undefined outside a server (`app.request()` in tests).
 */
export function requestLongLived(request: Request): LongLived | undefined {
  return (request as WithState)[STATE]?.longLived ?? active?.longLived;
}

/** Responses made with a body that streams (a ReadableStream), as `trackStreamingResponses` marks them. */
const STREAM_BODIES = new WeakSet<Response>();
let Marking: (new (body?: BodyInit | null, init?: ResponseInit) => Response) | undefined;

/**
 * Makes the global `Response` mark each response made with a stream body, so that the lifecycle
 * can follow every streaming response to its end (a client that leaves a stream is `aborted`)
 * without reading `response.body` of every response: reading it costs Bun.serve 6% of its
 * throughput and drops the content type Bun infers for a string body, and makes Deno stream a
 * body it would otherwise write at once (docs/policy.md#client-disconnect-for-any-app). A
 * subclass, installed once per process over whatever `Response` is there (@hono/node-server's on
 * Node); `instanceof Response` holds for every response as before.
 */
export function trackStreamingResponses(): void {
  const Base = globalThis.Response;
  if (Base === Marking) return;
  class MarkingResponse extends Base {
    constructor(body?: BodyInit | null, init?: ResponseInit) {
      super(body, init);
      if (body != null && typeof (body as ReadableStream).getReader === "function") STREAM_BODIES.add(this);
    }
  }
  // Every Response is one, as before: those made earlier, by fetch() or by a static method too.
  Object.defineProperty(MarkingResponse, Symbol.hasInstance, { value: (value: unknown) => value instanceof Base });
  Marking = MarkingResponse;
  Object.defineProperty(globalThis, "Response", { value: MarkingResponse, writable: true, configurable: true });
}

/**
 * Whether `res`'s body streams: made with a stream (marked), or a response from `fetch()` (its
 * type is not `default`), a proxied body. Other responses made before the marking or by a static
 * method (`Response.json()`) have a body of fixed size.
 */
function isStreaming(res: Response): boolean {
  if (STREAM_BODIES.has(res)) return true;
  return Marking !== undefined && Object.getPrototypeOf(res) !== Marking.prototype && res.type !== "default" && res.body !== null;
}

/** The shared state of the wrapped fetch whose synchronous part is running, for requestLifecycle. */
let active: Shared | undefined;

const streamingResponses = new WeakSet<Response>();

/**
 * Whether `response` is a body tracked by the lifecycle helper, i.e. a response that streams.
 * Adapters ask this instead of reading headers: touching `response.headers` makes Bun drop the
 * content type it would infer for a string body.
 */
export function isTrackedStream(response: Response): boolean {
  return streamingResponses.has(response);
}

/** The lifecycle of the current request; the response body is tracked to its last chunk. */
export function requestLifecycle(c: Context): Lifecycle {
  const request = c.req.raw as WithState;
  let state = request[STATE];
  if (!state) {
    if (!active) throw new Error("requestLifecycle() needs the app.fetch that withLifecycle() wraps");
    state = request[STATE] = new RequestState(active, request);
  }
  if (!state.tracked) {
    state.tracked = true;
    // Also the runtime's own word, for adapters that report nothing (and app.request() in tests).
    const signal = c.req.raw.signal;
    if (signal.aborted) state.settle("aborted");
    else signal.addEventListener("abort", () => state.settle("aborted"), { once: true });
  }
  return state;
}

/** Resolves once with "finished" or "aborted", like Twisted's `request.notifyFinish()`. */
export function notifyFinish(c: Context): Promise<Outcome> {
  return requestLifecycle(c).done;
}

/**
 * Passes `body` through unchanged and reports how it ended: "finished" when the source is
 * exhausted, "aborted" when the runtime cancels it because the client left.
 */
export function trackBody(
  body: ReadableStream<Uint8Array>,
  onEnd: (outcome: Outcome, error?: unknown) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (error) {
          onEnd("aborted", error);
          controller.error(error);
          return;
        }
        if (chunk.done) {
          onEnd("finished");
          controller.close();
        } else {
          controller.enqueue(chunk.value);
        }
      },
      cancel(reason) {
        onEnd("aborted");
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
