/**
 * The event-stream policy for any `text/event-stream` response, however the app made it (Hono's
 * own `streamSSE`, ours, or a ReadableStream of its own): the lifecycle passes every such body
 * through `eventStreamBody` (docs/policy.md#event-streams).
 * - SSE_HEARTBEAT: a comment line (`: heartbeat`) whenever nothing was written for that long, so no
 *   proxy or runtime on the path sees a quiet connection;
 * - at shutdown (step 5), a `retry:` field and a clean end, so an `EventSource` reconnects (to
 *   another instance) instead of being cut at SHUTDOWN_TIMEOUT; the app's stream is cancelled
 *   (Hono's `stream.aborted` turns true and its `onAbort` listeners run), so its loop ends.
 *
 * Both are written only where the event-stream format allows it without changing what the client
 * parses: a comment or a `retry:` line only at the start of a line, so it never splits one of the
 * app's lines, and never an empty line, which would dispatch an event the app had not finished
 * (an event cut by the end of the stream is dropped by the client, and its id with it, so the
 * client resumes after the last whole event: html.spec.whatwg.org, "event stream interpretation").
 */
import type { Closer, LongLived } from "./long_lived.ts";
import { LONG_LIVED_DEFAULTS, SSE_RETRY_MS } from "./long_lived.ts";
import type { Outcome } from "./lifecycle.ts";

const encoder = new TextEncoder();
const HEARTBEAT = encoder.encode(": heartbeat\n");
const RETRY = encoder.encode(`retry: ${SSE_RETRY_MS}\n`);
const LF = 0x0a;

/** Whether `headers` say the body is an event stream. */
export function isEventStream(headers: Headers): boolean {
  return headers.get("content-type")?.trimStart().toLowerCase().startsWith("text/event-stream") ?? false;
}

/**
 * `body` passed through unchanged, with heartbeats while it is quiet and a `retry:` and its end at
 * shutdown; `onEnd` as `trackBody`'s: "finished" when it ended (by itself or at shutdown),
 * "aborted" when the client left or the body failed.
 */
export function eventStreamBody(
  body: ReadableStream<Uint8Array>,
  longLived: LongLived | undefined,
  onEnd: (outcome: Outcome, error?: unknown) => void,
): ReadableStream<Uint8Array> {
  const heartbeatMs = (longLived?.policy ?? LONG_LIVED_DEFAULTS).sseHeartbeatMs;
  const source = body.getReader();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  /** The source's read in flight, if any: one at a time, whoever asked for it. */
  let reading: Promise<void> | undefined;
  /** Resolves the pull that waits, once something was enqueued (a chunk, a heartbeat) or the stream ended. */
  let wake: (() => void) | undefined;
  /** When the last bytes went out, and whether they ended a line (or nothing went out yet). */
  let lastWrite = Date.now();
  let atLineStart = true;
  let closing = false;
  let ended = false;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const end = (outcome: Outcome, error?: unknown) => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    forget?.();
    onEnd(outcome, error);
    wake?.();
    wake = undefined;
  };
  /** Step 5, at a line's start: the `retry:` and the end; the app's stream is told to stop. */
  const finish = () => {
    controller.enqueue(RETRY);
    controller.close();
    end("finished");
    void source.cancel().catch(() => {});
  };
  const read = () => (reading ??= source.read().then(
    (chunk) => {
      reading = undefined;
      if (ended) return;
      if (chunk.done) {
        controller.close();
        end("finished");
        return;
      }
      const bytes = chunk.value;
      if (bytes.byteLength > 0) {
        lastWrite = Date.now();
        atLineStart = bytes[bytes.byteLength - 1] === LF;
      }
      controller.enqueue(bytes);
      if (closing && atLineStart) finish();
      wake?.();
      wake = undefined;
    },
    (error: unknown) => {
      reading = undefined;
      if (ended) return;
      controller.error(error);
      end("aborted", error);
    },
  ));
  /** One timer per stream, re-armed when it fires rather than on every write. */
  const arm = (ms: number) => {
    timer = setTimeout(beat, ms);
    (timer as { unref?: () => void }).unref?.();
  };
  const beat = () => {
    if (ended) return;
    const quiet = Date.now() - lastWrite;
    if (quiet < heartbeatMs) return arm(heartbeatMs - quiet);
    // Only while the runtime waits for bytes (else what is queued has not left yet) and at a line's start.
    if (wake && atLineStart) {
      lastWrite = Date.now();
      controller.enqueue(HEARTBEAT);
      wake();
      wake = undefined;
    }
    arm(heartbeatMs);
  };
  const closer: Closer = {
    close() {
      if (ended) return;
      closing = true;
      if (atLineStart) finish();
    },
    cut() {
      if (ended) return;
      const error = new Error("event stream cut at SHUTDOWN_TIMEOUT");
      controller.error(error);
      end("aborted");
      void source.cancel(error).catch(() => {});
    },
  };
  // Declared last, read only once the stream runs (a late join's close comes in a microtask).
  const forget = longLived?.add(closer);

  return new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        if (heartbeatMs > 0) arm(heartbeatMs);
      },
      pull() {
        if (ended) return;
        void read();
        return new Promise<void>((resolve) => (wake = resolve));
      },
      cancel(reason) {
        end("aborted");
        return source.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
