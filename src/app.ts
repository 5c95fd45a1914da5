import { Hono } from "hono";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import * as v from "valibot";
import { readBody } from "./body.ts";
import { type LifecycleOptions, requestLifecycle, withLifecycle } from "./lifecycle.ts";
import type { Logger } from "./log.ts";
import { METRICS_CONTENT_TYPE, type Registry } from "./metrics.ts";
import { type WebSubOptions, websubRoutes } from "./websub.ts";

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
export const DelayQuerySchema = v.object({ ms: IntParam("ms", 0, 600_000, 1_000) });
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

function tooLarge(c: Context, limitBytes: number): Response {
  // Closing spares the server reading (or the connection carrying) the rest of an unwanted body.
  return c.json({ error: "payload_too_large", message: `The request body is larger than BODY_LIMIT (${limitBytes} bytes)` }, 413, {
    connection: "close",
  });
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

export interface AppOptions {
  logger: Logger;
  /** Serves GET /metrics and counts requests and their outcomes; none given, no /metrics. */
  registry?: Registry;
  /** The largest request body POST /echo reads; larger gets 413. @default 1 MiB */
  bodyLimitBytes?: number;
  /** Mounts the WebSub callback at /websub/:id. */
  websub?: Omit<WebSubOptions, "logger" | "maxBodyBytes">;
}

const ERROR_NAMES: Record<number, string> = { 400: "bad_request", 408: "request_timeout", 413: "payload_too_large" };

/**
 * The 400 for a request whose Host header and target do not form a URL, or undefined for any
 * other error. The runtimes let some through (a host like `p27.0.0.1`: a numeric last label that
 * is no IPv4 address) and fail only when a Request is built from them: undici (Node) says "Failed
 * to parse URL from ...", Bun "Failed to construct 'Request': Invalid URL ...". The client's
 * error, not the handler's.
 */
export function invalidUrl(error: unknown): Response | undefined {
  if (!(error instanceof TypeError) || !/^Failed to parse URL from|Invalid URL/.test(error.message)) return undefined;
  return Response.json({ error: "bad_request", message: "The Host header and request target do not form a valid URL" }, { status: 400 });
}

/** The 500 every engine answers for an error no handler dealt with. */
export function internalError(): Response {
  return Response.json({ error: "internal_error", message: "The server failed to handle this request" }, { status: 500 });
}

/** The example app: routes only, no sockets. Adapters hand `app.fetch` to their runtime. */
export function createApp(options: AppOptions): Hono {
  const { logger, registry, bodyLimitBytes = 1_048_576 } = options;
  const app = new Hono();
  let tracked: LifecycleOptions = { logger };
  if (registry) {
    const requests = registry.counter("http_requests_total", "Requests answered, by status class.", ["class"]);
    const outcomes = registry.counter(
      "http_responses_total",
      "Responses by outcome: finished, or aborted because the client left first (notifyFinish).",
      ["outcome"],
    );
    // Each series looked up once; a request only adds to a number.
    const finished = outcomes.labels({ outcome: "finished" });
    const aborted = outcomes.labels({ outcome: "aborted" });
    const classes = ["1xx", "2xx", "3xx", "4xx", "5xx"].map((name) => requests.labels({ class: name }));
    const otherClass = requests.labels({ class: "other" });
    tracked = {
      logger,
      onOutcome: (outcome) => (outcome === "finished" ? finished : aborted).inc(),
      onResponse: (status) => (classes[Math.floor(status / 100) - 1] ?? otherClass).inc(),
    };
    app.get("/metrics", (c) => c.body(registry.render(), 200, { "content-type": METRICS_CONTENT_TYPE }));
  }

  app.get("/", (c) => c.text("Hello World"));

  app.get("/healthz", (c) => c.json({ status: "ok" }));

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

  // A handler that works for `ms` before it answers anything: the idle policy must not cut it.
  app.get("/delay", async (c) => {
    const { ms } = query(c, DelayQuerySchema);
    await sleep(ms, c.req.raw.signal);
    return c.json({ delayedMs: ms });
  });

  // Reads the whole request body, so slow uploads meet REQUEST_TIMEOUT; answers its size.
  app.post("/echo", async (c) => {
    const body = await readBody(c.req.raw, bodyLimitBytes);
    if (body === undefined) return tooLarge(c, bodyLimitBytes);
    return c.json({ bytes: body.byteLength });
  });

  if (options.websub) app.route("/websub", websubRoutes({ ...options.websub, logger, maxBodyBytes: bodyLimitBytes }));

  app.notFound((c) => c.json({ error: "not_found", message: `No route for ${c.req.method} ${c.req.path}` }, 404));

  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      if (error.res) return error.res;
      const headers: Record<string, string> = error.status === 408 ? { connection: "close" } : {};
      return c.json({ error: ERROR_NAMES[error.status] ?? "http_error", message: error.message }, error.status, headers);
    }
    const invalid = invalidUrl(error);
    if (invalid) return invalid;
    logger.error("handler_error", { method: c.req.method, path: c.req.path, error });
    return internalError();
  });

  // Every entry (adapters, app.request() in tests) goes through app.fetch, so the lifecycle wraps
  // it there, outside Hono's middleware chain (see withLifecycle).
  app.fetch = withLifecycle(app.fetch, tracked);
  return app;
}
