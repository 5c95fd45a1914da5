import { HTTPException } from "hono/http-exception";

/**
 * REQUEST_TIMEOUT for runtimes without one (Bun, Deno): the body must arrive by the deadline, or
 * reading it fails with a 408 HTTPException, which the app answers with `408` and
 * `Connection: close`. The clock starts when the head is complete, the earliest moment these
 * runtimes expose. Requests without a body are returned as they are; with REQUEST_TIMEOUT=0 a body
 * is still tracked, for `releaseBody`.
 */
export function withBodyDeadline(request: Request, timeoutMs: number, onExpire: () => void): Request {
  if (request.body === null) return request;
  const tracked = bodyWithDeadline(request.body, timeoutMs, onExpire);
  const wrapped = new Request(request, { body: tracked.body, duplex: "half" } as RequestInit) as WithRelease;
  wrapped[RELEASE] = tracked.release;
  return wrapped;
}

const RELEASE = Symbol("releaseBody");
type WithRelease = Request & { [RELEASE]?: () => boolean };

/**
 * For the adapter, once the response is complete: stops the deadline of a body the app did not
 * read to its end (a 413 answered from Content-Length, a handler that ignores the body), so it
 * cannot report a request_timeout for a request already answered, and discards the rest. True when
 * there was such a body: its unread bytes still sit on the connection.
 */
export function releaseBody(request: Request): boolean {
  return (request as WithRelease)[RELEASE]?.() ?? false;
}

/**
 * Passes `body` through, or errors it with a 408 if it has not ended within `timeoutMs`, and
 * calls `onExpire` so the adapter can close the connection once the 408 is sent: neither Bun
 * nor Deno closes on a `Connection: close` response while the body is still arriving.
 */
export function bodyWithDeadline(
  body: ReadableStream<Uint8Array>,
  timeoutMs: number,
  onExpire: () => void,
): { body: ReadableStream<Uint8Array>; release(): boolean } {
  const reader = body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let settled = false;
  let ended = false;
  let released = false;
  const release = () => {
    if (released) return false;
    released = true;
    if (!settled) {
      settled = true;
      clearTimeout(timer);
      reader.cancel().catch(() => {});
    }
    return !ended;
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        if (timeoutMs === 0) return;
        timer = setTimeout(() => {
          settled = true;
          controller.error(new HTTPException(408, { message: `The request body did not arrive within ${timeoutMs}ms` }));
          reader.cancel().catch(() => {});
          onExpire();
        }, timeoutMs);
      },
      async pull(controller) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (error) {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          controller.error(error);
          return;
        }
        if (settled) return;
        if (chunk.done) {
          ended = true;
          settled = true;
          clearTimeout(timer);
          controller.close();
        } else {
          controller.enqueue(chunk.value);
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
