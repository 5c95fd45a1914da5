/**
 * The example app: yours to replace. The entry points (src/main/) serve this file's default
 * export: a Hono app, or a function that makes one from the context (logger, metrics registry,
 * BODY_LIMIT). /healthz and /metrics are served in front of it, and the connection policy around
 * it; nothing else in the project depends on these routes.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import * as v from "valibot";
import { payloadTooLarge, readBody } from "./policy/body.ts";
import { jsonErrors } from "./policy/errors.ts";
import { requestLifecycle } from "./policy/lifecycle.ts";
import { streamSSE, upgradeWebSocket } from "./policy/realtime.ts";
import type { AppContext } from "./policy/types.ts";

const encoder = new TextEncoder();

/** An integer query parameter given as decimal digits, within [min, max]. */
function IntParam(name: string, min: number, max: number, fallback: number) {
  const message = `${name} must be an integer from ${min} to ${max}`;
  return v.optional(
    v.pipe(v.string(), v.regex(/^\d{1,9}$/, message), v.transform(Number), v.minValue(min, message), v.maxValue(max, message)),
    String(fallback),
  );
}

export const SlowQuerySchema = v.object({ ms: IntParam("ms", 0, 600_000, 10_000) });
export const EventsQuerySchema = v.object({ interval: IntParam("interval", 1, 3_600_000, 1_000) });
export const StreamQuerySchema = v.object({
  chunks: IntParam("chunks", 1, 10_000, 10),
  interval: IntParam("interval", 0, 60_000, 1_000),
});

/** Validates the query string; answers 400 with a JSON body naming each bad parameter. */
function query<S extends v.GenericSchema>(c: Context, schema: S): v.InferOutput<S> {
  const result = v.safeParse(schema, c.req.query());
  if (result.success) return result.output;
  const issues = result.issues.map((issue) => ({ parameter: v.getDotPath(issue), message: issue.message }));
  const res = Response.json({ error: "invalid_query", message: issues.map((i) => i.message).join("; "), issues }, { status: 400 });
  throw new HTTPException(400, { res });
}

/** Resolves after `ms`, or as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** The example routes: a hello, the seed's slow resource, a stream, an upload that respects BODY_LIMIT, a WebSocket echo and an event stream. */
export default function createApp({ logger, bodyLimitBytes }: Pick<AppContext, "logger" | "bodyLimitBytes">): Hono {
  const app = new Hono();

  app.get("/", (c) => c.text("Hello World"));

  // The seed's resource: a response that starts at once and ends `ms` later, and says whether
  // the client stayed for it (Twisted's request.notifyFinish()).
  app.get("/slow", (c) => {
    const { ms } = query(c, SlowQuerySchema);
    const life = requestLifecycle(c);
    life.done.then((outcome) => logger.info("slow_request", { ms, outcome }));
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode("Hello World"));
      },
      async pull(controller) {
        await sleep(ms, life.signal);
        if (!life.signal.aborted) controller.close();
      },
    });
    return c.body(body, 200, { "content-type": "text/plain; charset=utf-8" });
  });

  // A chunked response of `chunks` lines, one every `interval` ms, that stops producing as soon as
  // the client leaves.
  app.get("/stream", (c) => {
    const { chunks, interval } = query(c, StreamQuerySchema);
    const life = requestLifecycle(c);
    let sent = 0;
    life.done.then((outcome) => logger.info("stream_request", { chunks, sent, outcome }));
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent > 0) await sleep(interval, life.signal);
        if (life.signal.aborted) return;
        sent += 1;
        controller.enqueue(encoder.encode(`chunk ${sent} of ${chunks}\n`));
        if (sent === chunks) controller.close();
      },
    }, { highWaterMark: 0 });
    return c.body(body, 200, { "content-type": "text/plain; charset=utf-8" });
  });

  // Reads the whole request body, so slow uploads meet REQUEST_TIMEOUT; answers its size.
  app.post("/echo", async (c) => {
    const body = await readBody(c.req.raw, bodyLimitBytes);
    // The same 413 the server answers for any route (it closes the connection: the rest of an
    // unwanted body is not worth reading).
    if (body === undefined) return payloadTooLarge(bodyLimitBytes);
    return c.json({ bytes: body.byteLength });
  });

  // Echoes every message, text as text and binary as binary.
  app.get(
    "/ws",
    upgradeWebSocket(() => ({
      onMessage(event, ws) {
        ws.send(event.data as string | ArrayBuffer);
      },
    })),
  );

  // One event every `interval` ms, numbered from the last one the client saw (Last-Event-ID), so
  // an EventSource that reconnects (to this or another instance) resumes after it.
  app.get("/events", (c) => {
    const { interval } = query(c, EventsQuerySchema);
    return streamSSE(c, async (stream) => {
      const last = Number(stream.lastEventId);
      let id = Number.isSafeInteger(last) && last >= 0 ? last : 0;
      while (!stream.aborted && !stream.closed) {
        id += 1;
        await stream.writeSSE({ id: String(id), event: "tick", data: JSON.stringify({ id, at: new Date().toISOString() }) });
        await stream.sleep(interval);
      }
    });
  });

  return jsonErrors(app, logger);
}
