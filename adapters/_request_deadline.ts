import { HTTPException } from "hono/http-exception";

/**
 * REQUEST_TIMEOUT for runtimes without one (Bun, Deno): the body must arrive by the deadline, or
 * reading it fails with a 408 HTTPException, which the app answers with `408` and
 * `Connection: close`. The clock starts when the head is complete, the earliest moment these
 * runtimes expose. Requests without a body are returned as they are.
 */
export function withBodyDeadline(request: Request, timeoutMs: number, onExpire: () => void): Request {
  if (timeoutMs === 0 || request.body === null) return request;
  const body = bodyWithDeadline(request.body, timeoutMs, onExpire);
  return new Request(request, { body, duplex: "half" } as RequestInit);
}

/**
 * Passes `body` through, or errors it with a 408 if it has not ended within `timeoutMs`, and
 * calls `onExpire` so the adapter can close the connection once the 408 is sent: neither Bun
 * nor Deno closes on a `Connection: close` response while the body is still arriving.
 */
export function bodyWithDeadline(body: ReadableStream<Uint8Array>, timeoutMs: number, onExpire: () => void): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let settled = false;
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
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
}
