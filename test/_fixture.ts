/**
 * The policy suites' own app: the routes the conformance and hardening suites and the bench drive,
 * so that src/app.ts stays the user's to replace. Served through the real entry points:
 * `npm start -- test/_fixture.ts`.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { streamSSE as honoStreamSSE } from "hono/streaming";
import { payloadTooLarge, readBody } from "../src/policy/body.ts";
import { jsonErrors } from "../src/policy/errors.ts";
import { requestLifecycle } from "../src/policy/lifecycle.ts";
import { type PolicyWSContext, streamSSE, upgradeWebSocket } from "../src/policy/realtime.ts";
import type { AppContext } from "../src/policy/types.ts";

const encoder = new TextEncoder();

/** The integer query parameter `name`, 0 to `max`; anything else is a 400 naming it. */
function intQuery(c: Context, name: string, min: number, max: number, fallback: number): number {
  const raw = c.req.query(name) ?? String(fallback);
  const value = /^\d{1,9}$/.test(raw) ? Number(raw) : NaN;
  if (value >= min && value <= max) return value;
  const message = `${name} must be an integer from ${min} to ${max}`;
  throw new HTTPException(400, {
    res: Response.json({ error: "invalid_query", message, issues: [{ parameter: name, message }] }, { status: 400 }),
  });
}

/** Waits `ms`, or less if `signal` aborts first. */
const pause = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });

/**
 * A text body of `parts`, the first at once and each next one `gapMs` later, through the lifecycle
 * helper; with `lingerMs`, the body ends that long after its last part. It stops as soon as the
 * client leaves, and `onEnd` hears how it ended and how many parts went out.
 */
function paced(c: Context, parts: string[], gapMs: number, lingerMs: number, onEnd: (outcome: string, sent: number) => void) {
  const life = requestLifecycle(c);
  let sent = 0;
  life.done.then((outcome) => onEnd(outcome, sent));
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent > 0) await pause(sent < parts.length ? gapMs : lingerMs, life.signal);
      if (life.signal.aborted) return;
      if (sent === parts.length) return controller.close();
      controller.enqueue(encoder.encode(parts[sent++]));
      if (sent === parts.length && lingerMs === 0) controller.close();
    },
  }, { highWaterMark: 0 });
  return c.body(body, 200, { "content-type": "text/plain; charset=utf-8" });
}

export default function fixture({ logger, bodyLimitBytes }: AppContext): Hono {
  const app = new Hono()
    .get("/", (c) => c.text("Hello World"))
    // A response that starts at once and ends `ms` later.
    .get("/slow", (c) => {
      const ms = intQuery(c, "ms", 0, 600_000, 10_000);
      return paced(c, ["Hello World"], 0, ms, (outcome) => logger.info("slow_request", { ms, outcome }));
    })
    // `chunks` lines, one every `interval` ms.
    .get("/stream", (c) => {
      const chunks = intQuery(c, "chunks", 1, 10_000, 10);
      const interval = intQuery(c, "interval", 0, 60_000, 1_000);
      const lines = Array.from({ length: chunks }, (_, i) => `chunk ${i + 1} of ${chunks}\n`);
      return paced(c, lines, interval, 0, (outcome, sent) => logger.info("stream_request", { chunks, sent, outcome }));
    })
    // A handler that works `ms` before it answers anything.
    .get("/delay", async (c) => {
      const ms = intQuery(c, "ms", 0, 600_000, 1_000);
      await pause(ms, c.req.raw.signal);
      return c.json({ delayedMs: ms });
    })
    // Holds the event loop for `ms` before it answers, as CPU-bound work on a loaded server does.
    .get("/busy", (c) => {
      const ms = intQuery(c, "ms", 0, 5_000, 100);
      const until = performance.now() + ms;
      while (performance.now() < until) {
        // Spinning on purpose: nothing else in this process runs until it ends.
      }
      return c.json({ busyMs: ms });
    })
    // Reads the whole body, so a slow upload meets REQUEST_TIMEOUT; answers its size.
    .post("/echo", async (c) => {
      const body = await readBody(c.req.raw, bodyLimitBytes);
      return body === undefined ? payloadTooLarge(bodyLimitBytes) : c.json({ bytes: body.byteLength });
    })
    // A WebSocket echo (text as text, binary as binary); `flood N` asks for N bytes back in 64 KiB
    // messages, sent as fast as the socket takes them, to a client that may not read. `ws_onclose`
    // says when the app heard of the close, and how much a flood had sent and found waiting.
    .get(
      "/ws",
      upgradeWebSocket(() => {
        const flood = { sent: 0, maxBuffered: 0 };
        return {
          onMessage(event, ws) {
            // What the app's event is, as an app would look at it.
            if (event.data === "event?") {
              const { type, origin, lastEventId, ports } = event;
              return ws.send(JSON.stringify({ type, origin, lastEventId, ports, messageEvent: event instanceof MessageEvent }));
            }
            const match = typeof event.data === "string" ? /^flood (\d{1,10})$/.exec(event.data) : null;
            if (!match) return ws.send(event.data as string | ArrayBuffer);
            void (async () => {
              const chunk = new Uint8Array(65_536);
              const policy = ws as PolicyWSContext;
              while (flood.sent < Number(match[1]) && ws.readyState === 1) {
                ws.send(chunk);
                flood.sent += chunk.length;
                flood.maxBuffered = Math.max(flood.maxBuffered, policy.bufferedAmount);
                await new Promise((resolve) => setTimeout(resolve, 0));
              }
            })();
          },
          onClose(event) {
            logger.info("ws_onclose", { code: event.code, reason: event.reason, ...flood });
          },
        };
      }),
    )
    // One event every `interval` ms, numbered on from the Last-Event-ID the client sent.
    .get("/events", (c) => {
      const interval = intQuery(c, "interval", 1, 3_600_000, 1_000);
      return streamSSE(c, async (stream) => {
        const last = Number(stream.lastEventId);
        let id = Number.isSafeInteger(last) && last >= 0 ? last : 0;
        while (!stream.aborted && !stream.closed) {
          id += 1;
          await stream.writeSSE({ id: String(id), event: "tick", data: JSON.stringify({ id }) });
          await stream.sleep(interval);
        }
      });
    })
    // The same stream as a plain Hono app writes it, with Hono's own streamSSE and none of our
    // helpers: the event-stream policy must hold for it too. Hono's onAbort is logged.
    .get("/plain-events", (c) => {
      const interval = intQuery(c, "interval", 1, 3_600_000, 1_000);
      return honoStreamSSE(c, async (stream) => {
        let id = 0;
        stream.onAbort(() => logger.info("plain_events_aborted", { sent: id }));
        while (!stream.aborted && !stream.closed) {
          id += 1;
          await stream.writeSSE({ id: String(id), event: "tick", data: JSON.stringify({ id }) });
          await stream.sleep(interval);
        }
      });
    });
  return jsonErrors(app, logger);
}
