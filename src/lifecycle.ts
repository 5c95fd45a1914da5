import type { Context, MiddlewareHandler } from "hono";
import type { Logger } from "./log.ts";

/** How a response ended: its last byte was handed to the runtime, or the client left first. */
export type Outcome = "finished" | "aborted";

/** What a handler may know about the end of its own response (Twisted's `request.notifyFinish()`). */
export interface Lifecycle {
  /** Aborts when the client leaves before the response is complete; never after it is complete. */
  readonly signal: AbortSignal;
  /** Settles once, with the outcome. Never rejects. */
  readonly done: Promise<Outcome>;
}

declare module "hono" {
  interface ContextVariableMap {
    lifecycle: RequestState;
  }
}

class RequestState implements Lifecycle {
  #outcome: Outcome | undefined;
  #controller: AbortController | undefined;
  #done: Promise<Outcome> | undefined;
  #resolve: ((outcome: Outcome) => void) | undefined;
  /** True once a handler asked for the lifecycle, so its response body is tracked to the end. */
  tracked = false;
  #onOutcome: ((outcome: Outcome) => void) | undefined;

  constructor(onOutcome?: (outcome: Outcome) => void) {
    this.#onOutcome = onOutcome;
  }

  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    if (this.#outcome === "aborted") this.#controller.abort();
    return this.#controller.signal;
  }

  get done(): Promise<Outcome> {
    this.#done ??= this.#outcome
      ? Promise.resolve(this.#outcome)
      : new Promise<Outcome>((resolve) => (this.#resolve = resolve));
    return this.#done;
  }

  get outcome(): Outcome | undefined {
    return this.#outcome;
  }

  /** Records the outcome; only the first call counts. Returns whether this call decided it. */
  settle(outcome: Outcome): boolean {
    if (this.#outcome) return false;
    this.#outcome = outcome;
    if (outcome === "aborted") this.#controller?.abort();
    this.#resolve?.(outcome);
    this.#onOutcome?.(outcome);
    return true;
  }
}

export interface LifecycleOptions {
  logger: Logger;
  /** Called once per request with its outcome (for metrics). */
  onOutcome?(outcome: Outcome): void;
}

/**
 * Tracks every request's end and logs `request_aborted` when a client leaves before its response
 * is complete. Adapters guarantee that `c.req.raw.signal` aborts only in that case (Deno's legacy
 * abort-after-success is neutralised in adapters/deno.ts). A response counts as finished when its
 * last byte is handed to the runtime: when the handler returns, or, for a body tracked through
 * `requestLifecycle(c)`, when its last chunk is read.
 */
export function lifecycle({ logger, onOutcome }: LifecycleOptions): MiddlewareHandler {
  return async function lifecycleMiddleware(c, next) {
    const state = new RequestState(onOutcome);
    c.set("lifecycle", state);
    const raw = c.req.raw;
    const onAbort = () => {
      if (state.settle("aborted")) {
        logger.info("request_aborted", { method: raw.method, path: c.req.path });
      }
    };
    const rawSignal = raw.signal;
    if (rawSignal.aborted) onAbort();
    else rawSignal.addEventListener("abort", onAbort, { once: true });
    await next();
    if (state.outcome) return;
    // Not reading `c.res.body` unless asked to: on Bun that drops a string body's content type.
    const body = state.tracked ? c.res.body : null;
    if (body === null) {
      state.settle("finished");
      return;
    }
    const res = c.res;
    const tracked = trackBody(body, (outcome) => (outcome === "finished" ? state.settle(outcome) : onAbort()));
    c.res = new Response(tracked, { status: res.status, statusText: res.statusText, headers: res.headers });
    streamingResponses.add(c.res);
  };
}

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
  const state = c.get("lifecycle") as RequestState | undefined;
  if (!state) throw new Error("requestLifecycle() needs the lifecycle() middleware on the app");
  state.tracked = true;
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
  onEnd: (outcome: Outcome) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (error) {
          onEnd("aborted");
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
