/**
 * `streamSSE` with Hono's shape (`streamSSE(c, async (stream) => ...)`), under the event-stream
 * policy of the server it runs on (docs/policy.md#event-streams):
 * - SSE_HEARTBEAT: a comment line (`: heartbeat`) whenever nothing was written for that long, so no
 *   proxy or runtime on the path sees a quiet connection;
 * - at shutdown (step 5), a `retry:` field and a clean end, so an `EventSource` reconnects (to
 *   another instance) instead of being cut at SHUTDOWN_TIMEOUT; the callback's `stream.aborted`
 *   turns true and its `onAbort` listeners run, so its loop ends.
 * The request's `Last-Event-ID` (what an `EventSource` sends when it reconnects) is `stream.lastEventId`.
 */
import type { Context } from "hono";
import { type SSEStreamingApi, streamSSE as honoStreamSSE } from "hono/streaming";
import { notifyFinish, requestLifecycleLogger, requestLongLived } from "./lifecycle.ts";
import { LONG_LIVED_DEFAULTS, SSE_RETRY_MS } from "./long_lived.ts";
import { pathOf } from "./url.ts";

/** Hono's stream, and the id of the last event the client saw before it reconnected. */
export type SSEStream = SSEStreamingApi & { readonly lastEventId: string | undefined };

/** The heartbeat: an SSE comment, which an `EventSource` ignores. */
const HEARTBEAT = ": heartbeat\n\n";

export function streamSSE(
  c: Context,
  cb: (stream: SSEStream) => Promise<void>,
  onError?: (error: Error, stream: SSEStream) => Promise<void>,
): Response {
  const longLived = requestLongLived(c.req.raw);
  const heartbeatMs = (longLived?.policy ?? LONG_LIVED_DEFAULTS).sseHeartbeatMs;
  // In a server, the lifecycle follows the body to its end: the client has it all, or left.
  const finished = longLived ? notifyFinish(c) : undefined;
  return honoStreamSSE(c, async (hono) => {
    const stream = Object.assign(hono, { lastEventId: c.req.header("last-event-id") }) as SSEStream;
    let lastWrite = Date.now();
    const write = stream.write.bind(stream);
    stream.write = (input) => {
      lastWrite = Date.now();
      return write(input);
    };
    // Checked a few times per heartbeat: a comment goes out at most a quarter late.
    const heartbeat = heartbeatMs > 0
      ? setInterval(() => {
        if (Date.now() - lastWrite >= heartbeatMs) void stream.write(HEARTBEAT);
      }, Math.max(Math.floor(heartbeatMs / 4), 1))
      : undefined;
    const forget = longLived?.add({
      close: () =>
        void (async () => {
          await stream.write(`retry: ${SSE_RETRY_MS}\n\n`);
          await stream.close();
          // Once the client has the end (or left), the callback's loop is told to stop.
          await finished;
          stream.abort();
        })(),
      cut: () => stream.abort(),
    });
    void finished?.then(() => {
      clearInterval(heartbeat);
      forget?.();
    });
    try {
      await cb(stream);
    } catch (error) {
      // Hono's own would print it to stderr: one handler_error event instead, as for any handler.
      if (error instanceof Error && onError) await onError(error, stream);
      else requestLifecycleLogger(c.req.raw).error("handler_error", { method: c.req.method, path: pathOf(c.req.url), error });
    } finally {
      clearInterval(heartbeat);
    }
  });
}
