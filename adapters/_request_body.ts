import type { HTTPException } from "hono/http-exception";
import { AnsweredException, bodyTooLarge, markOverBodyLimit } from "../src/policy/body.ts";
import { jsonResponse } from "../src/policy/respond.ts";

/** What a request body is held to where the runtime holds it to nothing (Bun, Deno). */
export interface BodyGuard {
  /** REQUEST_TIMEOUT: the body must have ended this long after the head; 0 for no deadline. */
  readonly timeoutMs: number;
  /** The body limit of this request: reading more fails with 413. */
  readonly limitBytes: number;
  /** Called once when the deadline passes, so the adapter can close the connection once the 408 is out. */
  onExpire(): void;
}

/**
 * REQUEST_TIMEOUT and the body limit for runtimes that enforce neither on a body (Bun, Deno): the
 * body must arrive by the deadline, or reading it fails with a 408 HTTPException (`Connection:
 * close`), and past `limitBytes` with a 413 one, the request then marked so that whatever error the
 * runtime hands the app for it is answered 413. The clock starts when the head is complete, the
 * earliest moment these runtimes expose. Requests without a body are returned as they are; with
 * REQUEST_TIMEOUT=0 a body is still guarded, for its limit and `releaseBody`.
 */
export function guardBody(request: Request, guard: BodyGuard): Request {
  if (request.body === null) return request;
  const tracked = bodyWithLimits(request.body, guard, (cut) => markOverBodyLimit(guarded, cut));
  const guarded: WithRelease = new Request(request, { body: tracked.body, duplex: "half" } as RequestInit);
  guarded[RELEASE] = tracked.release;
  return guarded;
}

/**
 * `request` held to the body limit alone: for node:http, whose parser keeps REQUEST_TIMEOUT itself,
 * and Cloudflare Workers, where the platform owns it; made only for a body without a declared length.
 */
export function limitBody(request: Request, limitBytes: number): Request {
  return guardBody(request, { timeoutMs: 0, limitBytes, onExpire: () => {} });
}

const RELEASE = Symbol("releaseBody");
type WithRelease = Request & { [RELEASE]?: () => Promise<boolean> | undefined };

/**
 * For the adapter, once the response is complete: what is left of a body the app did not read to
 * its end (a handler that ignores the body, a 413 answered from Content-Length) is read and
 * discarded, within the deadline and the limit, so that the connection can carry the next request
 * (docs/runtimes.md#deno-get-body-on-a-per-connection-server). Undefined when nothing is left: no
 * guarded body, or one read to its end. Else a promise: true once the rest has ended, false when
 * it could not be drained (over the limit, late, broken), and the adapter closes the connection.
 */
export function releaseBody(request: Request): Promise<boolean> | undefined {
  return (request as WithRelease)[RELEASE]?.();
}

/**
 * Passes `body` through, or errors it with a 408 if it has not ended within `timeoutMs` (calling
 * `onExpire`), or with a 413 once more than `limitBytes` arrive (calling `onOver`): neither Bun
 * nor Deno closes on a `Connection: close` response while the body is still arriving.
 */
export function bodyWithLimits(
  body: ReadableStream<Uint8Array>,
  { timeoutMs, limitBytes, onExpire }: BodyGuard,
  onOver: (cut: HTTPException) => void = () => {},
): { body: ReadableStream<Uint8Array>; release(): Promise<boolean> | undefined } {
  const reader = body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  /** The body ended, failed or was cancelled: nothing more passes. */
  let settled = false;
  let ended = false;
  let released = false;
  let size = 0;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  /** Stops the body with `error` (a 408 or 413), discarding the rest. */
  const stop = (error: unknown) => {
    settled = true;
    clearTimeout(timer);
    try {
      controller.error(error);
    } catch {
      // Already closed by its reader.
    }
    reader.cancel().catch(() => {});
  };
  const counted = (chunk: Uint8Array): boolean => {
    size += chunk.byteLength;
    if (size <= limitBytes) return true;
    const cut = bodyTooLarge(limitBytes);
    onOver(cut);
    stop(cut);
    return false;
  };
  const release = (): Promise<boolean> | undefined => {
    if (released) return undefined;
    released = true;
    if (ended) return undefined;
    if (settled) return Promise.resolve(false);
    // Nobody reads the rest any more: read it here, still within the deadline and the limit.
    return (async () => {
      for (;;) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch {
          return false;
        }
        if (settled) return false;
        if (chunk.done) {
          ended = settled = true;
          clearTimeout(timer);
          return true;
        }
        if (!counted(chunk.value)) return false;
      }
    })();
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        if (timeoutMs === 0) return;
        timer = setTimeout(() => {
          const message = `The request body did not arrive within ${timeoutMs}ms`;
          const late = new AnsweredException(
            408,
            message,
            () => jsonResponse({ error: "request_timeout", message }, 408, { connection: "close" }),
          );
          stop(late);
          onExpire();
        }, timeoutMs);
      },
      async pull(c) {
        if (released) {
          c.error(new Error("The request body was released once the response was complete"));
          return;
        }
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (error) {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          c.error(error);
          return;
        }
        if (settled) return;
        if (chunk.done) {
          ended = settled = true;
          clearTimeout(timer);
          c.close();
        } else if (counted(chunk.value)) {
          c.enqueue(chunk.value);
        }
      },
      cancel(reason) {
        settled = true;
        clearTimeout(timer);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return { body: stream, release };
}
