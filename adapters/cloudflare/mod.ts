/**
 * The app as a Cloudflare module worker: the request path every `serve()` composes
 * (adapters/_request_path.ts), with no process, signal or socket anywhere. What the platform owns
 * instead is in docs/policy.md#cloudflare-workers-workerd.
 */
import { appOf } from "../../src/policy/app.ts";
import { bodyLimits } from "../../src/policy/body.ts";
import type { ConfigResult } from "../../src/policy/config.ts";
import { internalError } from "../../src/policy/errors.ts";
import { reportClientGone, trackStreamingResponses } from "../../src/policy/lifecycle.ts";
import { createLogger, type Logger } from "../../src/policy/log.ts";
import { LONG_LIVED_DEFAULTS, LongLived } from "../../src/policy/long_lived.ts";
import { operationalRoutes, type ProbePaths } from "../../src/policy/routes.ts";
import type { AppExport, FetchHandler, Registry } from "../../src/policy/types.ts";
import { limitBody } from "../_request_body.ts";
import { requestPath } from "../_request_path.ts";
import { upgradeOf, WebSockets } from "../../src/policy/websocket.ts";
import { upgraded } from "./_websocket.ts";

/** What a worker is configured with, from its bindings. */
export interface CloudflareOptions {
  /** The largest request body the app reads. @default 1_048_576 */
  readonly bodyLimitBytes?: number;
  /** Body limits for path prefixes that need another one. @default {} */
  readonly bodyLimitByPath?: Record<string, number>;
  /** Where the probes are answered; `false` leaves one to the app. */
  readonly probes?: ProbePaths;
  /** A larger WebSocket message closes the socket with 1009; at most the platform's own limit. @default 1_048_576 */
  readonly websocketMaxMessageBytes?: number;
  /** This much queued for a WebSocket client that does not read closes it with 1008. @default 4_194_304 */
  readonly websocketMaxBufferedBytes?: number;
  /** A comment line whenever an event stream wrote nothing for this long; 0 disables. @default 15_000 */
  readonly sseHeartbeatMs?: number;
  /** Where the worker's events go. @default JSON lines on the console */
  readonly logger?: Logger;
}

/** The module worker's handler, as Cloudflare Workers calls it: `export default worker(app)`. */
export interface CloudflareHandler {
  fetch(request: Request, env: Record<string, unknown>, ctx: unknown): Promise<Response>;
}

/** The options for an isolate's bindings, or the problems with them (answered 500, named). */
export type Configure = (bindings: Record<string, unknown>) => ConfigResult<CloudflareOptions>;

/** One isolate's server: its answer to every request, made once from the first request's bindings. */
type Isolate =
  | { ok: true; fetch: FetchHandler; limitOf: (request: Request) => number; websockets: WebSockets }
  | { ok: false; answer: () => Response };

const DEFAULT_BODY_LIMIT = 1_048_576;

/**
 * No metrics registry on Cloudflare Workers: a scrape reaches one isolate of many, which the platform starts
 * and evicts at will, so its counters neither add up nor last (docs/policy.md#cloudflare-workers-workerd).
 * An app that uses `context.registry` fails with this, logged, and answers 500.
 */
const NO_REGISTRY = new Proxy({}, {
  get(_target, key) {
    if (key === "then") return undefined;
    throw new Error(
      `context.registry.${String(key)}: there is no metrics registry on Cloudflare Workers (docs/policy.md#cloudflare-workers-workerd)`,
    );
  },
}) as Registry;

/**
 * A module worker serving `made` (an app, or the function that makes one) with the request path of
 * every `serve()`: `/healthz` and `/readyz` (always ready: the platform drains an isolate it
 * retires, and no signal reaches the worker), `/metrics` answered 404 with the reason, the body
 * limit, one answer per error and the lifecycle events. A worker cannot exit 2, so bindings that
 * `configure` refuses make every request answer 500 with the variables' names, and the problems
 * are logged once per isolate (`config_invalid`).
 */
export function worker(made: AppExport, configure: Configure = () => ({ ok: true, config: {} })): CloudflareHandler {
  // Bindings are fixed for an isolate's life; the key is the env object Cloudflare Workers passes each request.
  // Kept as a value once made: a promise made during one request is best not awaited by the next.
  const isolates = new WeakMap<object, Isolate | Promise<Isolate>>();
  return {
    async fetch(request, env, ctx) {
      let ready = isolates.get(env);
      if (!ready) isolates.set(env, ready = prepare(made, configure(env)));
      if (ready instanceof Promise) isolates.set(env, ready = await ready);
      if (!ready.ok) return ready.answer();
      // A body without a declared length is counted as it is read (a declared one is checked
      // before the app, in the request path).
      const seen = request.body !== null && request.headers.get("content-length") === null
        ? limitBody(request, ready.limitOf(request))
        : request;
      // The platform's only word on a client that left: there is no transport to learn it from.
      // It aborts only from COMPATIBILITY_DATE on, never after a response is complete, and for a
      // FIN only once workerd writes (docs/runtimes.md#workerd-learns-of-a-client-that-left-when-it-writes).
      request.signal.addEventListener("abort", () => reportClientGone(seen), { once: true });
      // The lifecycle answers what the app throws, as every engine does.
      const response = await ready.fetch(seen, env, ctx);
      const upgrade = upgradeOf(response);
      return upgrade ? upgraded(ready.websockets, upgrade) ?? response : response;
    },
  };
}

const METRICS_ANSWER = {
  error: "not_found",
  message:
    "No /metrics on Cloudflare Workers: a scrape would reach one isolate of many, whose counters neither add up nor last; use the platform's own analytics (docs/policy.md#cloudflare-workers-workerd)",
};

/** The isolate's server for its configuration; a promise only when the app's factory returns one. */
function prepare(made: AppExport, configured: ConfigResult<CloudflareOptions>): Isolate | Promise<Isolate> {
  const logger = (configured.ok ? configured.config.logger : undefined) ??
    createLogger((line) => console.log(line), { runtime: "workerd" });
  if (!configured.ok) {
    logger.error("config_invalid", { problems: configured.problems });
    const names = [...new Set(configured.problems.map((problem) => problem.split(" ", 1)[0]))];
    const body = {
      error: "invalid_configuration",
      message: `The worker's bindings are invalid (${names.join(", ")}): see its config_invalid log event`,
    };
    return { ok: false, answer: () => Response.json(body, { status: 500 }) };
  }
  const failed = (error: unknown): Isolate => {
    logger.error("app_load_failed", { error });
    return { ok: false, answer: internalError };
  };
  trackStreamingResponses();
  const options = configured.config;
  const bodyLimitBytes = options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT;
  const limitOf = bodyLimits(bodyLimitBytes, options.bodyLimitByPath ?? {});
  const routes = operationalRoutes(() => true, () => Response.json(METRICS_ANSWER, { status: 404 }), options.probes);
  // Never closed by a shutdown: no signal reaches a worker. No ping sweep: a worker cannot ping.
  const longLived = new LongLived({
    pingIntervalMs: 0,
    maxMessageBytes: options.websocketMaxMessageBytes ?? LONG_LIVED_DEFAULTS.maxMessageBytes,
    maxBufferedBytes: options.websocketMaxBufferedBytes ?? LONG_LIVED_DEFAULTS.maxBufferedBytes,
    sseHeartbeatMs: options.sseHeartbeatMs ?? LONG_LIVED_DEFAULTS.sseHeartbeatMs,
  });
  const websockets = new WebSockets(longLived, logger, NO_METRICS);
  const serving = (app: Awaited<ReturnType<typeof appOf>>): Isolate => ({
    ok: true,
    limitOf,
    websockets,
    fetch: requestPath(app, { routes, limitOf, lifecycle: { logger, longLived } }),
  });
  try {
    const app = appOf(made, { logger, registry: NO_REGISTRY, bodyLimitBytes });
    return app instanceof Promise ? app.then(serving, failed) : serving(app);
  } catch (error) {
    return failed(error);
  }
}

/**
 * Where the WebSocket policy's gauge and close counter go on Cloudflare Workers: nowhere, as there is no
 * registry (NO_REGISTRY); the `websocket_closed` events still say why the policy closed a socket.
 */
const NO_METRICS = {
  collect() {},
  counter: () => ({ inc() {}, get: () => Promise.resolve(0), labels: () => ({ inc() {} }) }),
} as unknown as Registry;
