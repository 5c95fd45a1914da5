/**
 * `streamSSE` with Hono's shape (`streamSSE(c, async (stream) => ...)`). The event-stream policy
 * (SSE_HEARTBEAT, and `retry:` with a clean end at shutdown) holds for every `text/event-stream`
 * response, Hono's own `streamSSE` included, because the lifecycle applies it to the body
 * (src/policy/event_stream.ts, docs/policy.md#event-streams). This helper adds two things:
 * - the request's `Last-Event-ID` (what an `EventSource` sends when it reconnects) as `stream.lastEventId`;
 * - an error thrown by the callback is one `handler_error` event, as for any handler, where Hono's
 *   own would print it to stderr.
 */
import type { Context } from "hono";
import { type SSEStreamingApi, streamSSE as honoStreamSSE } from "hono/streaming";
import { requestLifecycleLogger } from "./lifecycle.ts";
import { pathOf } from "./url.ts";

/** Hono's stream, and the id of the last event the client saw before it reconnected. */
export type SSEStream = SSEStreamingApi & { readonly lastEventId: string | undefined };

export function streamSSE(
  c: Context,
  cb: (stream: SSEStream) => Promise<void>,
  onError?: (error: Error, stream: SSEStream) => Promise<void>,
): Response {
  return honoStreamSSE(c, async (hono) => {
    const stream = Object.assign(hono, { lastEventId: c.req.header("last-event-id") }) as SSEStream;
    try {
      await cb(stream);
    } catch (error) {
      if (error instanceof Error && onError) await onError(error, stream);
      else requestLifecycleLogger(c.req.raw).error("handler_error", { method: c.req.method, path: pathOf(c.req.url), error });
    }
  });
}
