/**
 * The app as a Cloudflare module worker: configuration from the worker's bindings, the JSON event
 * log, the lifecycle helper and the probes, with no process, signal or socket anywhere. What the
 * platform owns instead is in ./_workerd_platform.ts and docs/policy.md#cloudflare-workers-workerd.
 */
import { fetchOf } from "../policy/app.ts";
import { type ConfigResult, EnvSchema, readEnv } from "../policy/config.ts";
import { limitBody } from "../../adapters/_request_body.ts";
import { bodyLimits, withDeclaredBodyLimit } from "../policy/body.ts";
import { internalError } from "../policy/errors.ts";
import { reportClientGone, trackStreamingResponses, withLifecycle } from "../policy/lifecycle.ts";
import { createLogger } from "../policy/log.ts";
import type { App, AppContext, FetchHandler, Registry } from "../policy/types.ts";
import { PLATFORM_OWNED, WEBSUB_OUT_OF_SCOPE } from "./_workerd_platform.ts";

/** What the worker's bindings configure: what the app is given. */
export interface WorkersConfig {
  /** BODY_LIMIT: the largest request body the app reads. @default 1_048_576 */
  readonly bodyLimitBytes: number;
}

/**
 * Validates the worker's bindings with the entries' own schema (EnvSchema), after refusing every
 * variable the platform owns, each with its reason, and every `WEBSUB_*`. Bindings that are not
 * the template's (a KV namespace, the app's own secrets) are left alone.
 */
export function loadWorkersConfig(bindings: Record<string, unknown>): ConfigResult<WorkersConfig> {
  const problems: string[] = [];
  const env: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(bindings)) {
    const shown = typeof value === "string" ? ` "${value}"` : "";
    if (Object.hasOwn(PLATFORM_OWNED, name)) problems.push(`${name}${shown} cannot be set on Cloudflare Workers: ${PLATFORM_OWNED[name]}`);
    // Never quoted: WEBSUB_SECRET is a secret.
    else if (name.startsWith("WEBSUB_")) problems.push(`${name} cannot be set on Cloudflare Workers: ${WEBSUB_OUT_OF_SCOPE}`);
    else if (Object.hasOwn(EnvSchema.entries, name)) {
      if (typeof value === "string") env[name] = value;
      else problems.push(`${name} is not a text binding: set it as a text variable (vars in wrangler.jsonc)`);
    }
  }
  const result = readEnv(EnvSchema, env);
  if (!result.ok) problems.push(...result.problems);
  if (!result.ok || problems.length > 0) return { ok: false, problems };
  return { ok: true, config: { bodyLimitBytes: result.config.BODY_LIMIT } };
}

/** What an app module default-exports: an app, or a function of the context that makes one. */
export type AppExport = App | ((context: AppContext) => App | Promise<App>);

/** The module worker's handler, as Workers calls it: `export default workersEntry(app)`. */
export interface WorkersHandler {
  fetch(request: Request, env: Record<string, unknown>, ctx: unknown): Promise<Response>;
}

/** One isolate's server: its answer to every request, made once from the first request's bindings. */
type Isolate = { ok: true; fetch: FetchHandler; bodyLimitBytes: number } | { ok: false; answer: () => Response };

/**
 * No metrics registry on Workers: a scrape reaches one isolate of many, which the platform starts
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
 * A module worker serving `made` (an app, or the function that makes one) with the same lifecycle
 * helper and JSON event log as the other entries, and `/healthz`, `/readyz` and `/metrics` in front.
 * A worker cannot exit 2, so a bad binding makes every request answer 500 with the variables'
 * names, and the problems are logged once per isolate (`config_invalid`).
 */
export function workersEntry(made: AppExport): WorkersHandler {
  // Bindings are fixed for an isolate's life; the key is the env object Workers passes each request.
  // Kept as a value once made: a promise made during one request is best not awaited by the next.
  const isolates = new WeakMap<object, Isolate | Promise<Isolate>>();
  return {
    async fetch(request, env, ctx) {
      let ready = isolates.get(env);
      if (!ready) isolates.set(env, ready = prepare(made, env));
      if (ready instanceof Promise) isolates.set(env, ready = await ready);
      if (!ready.ok) return ready.answer();
      // A body without a declared length is counted as it is read (a declared one is checked
      // before the app, in the request path).
      const seen = request.body !== null && request.headers.get("content-length") === null
        ? limitBody(request, ready.bodyLimitBytes)
        : request;
      // The platform's only word on a client that left: there is no transport to learn it from.
      // It aborts only from COMPATIBILITY_DATE on, never after a response is complete, and for a
      // FIN only once workerd writes (docs/runtimes.md#workerd-learns-of-a-client-that-left-when-it-writes).
      request.signal.addEventListener("abort", () => reportClientGone(seen), { once: true });
      // The lifecycle answers what the app throws, as every engine does.
      return await ready.fetch(seen, env, ctx);
    },
  };
}

/** The isolate's server for `env`; a promise only when the app's factory returns one. */
function prepare(made: AppExport, env: Record<string, unknown>): Isolate | Promise<Isolate> {
  const logger = createLogger((line) => console.log(line), { runtime: "workerd" });
  const config = loadWorkersConfig(env);
  if (!config.ok) {
    logger.error("config_invalid", { problems: config.problems });
    const names = [...new Set(config.problems.map((problem) => problem.split(" ", 1)[0]))];
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
  // The request path as serve() composes it (adapters/_serve.ts), but for the platform's probes.
  trackStreamingResponses();
  const { bodyLimitBytes } = config.config;
  const serving = (app: App): Isolate => ({
    ok: true,
    bodyLimitBytes,
    fetch: withLifecycle(withDeclaredBodyLimit(withProbes(fetchOf(app)), bodyLimits(bodyLimitBytes)), { logger }),
  });
  try {
    // A Hono app is a function's instance, not a function; anything callable is a factory.
    if (typeof made !== "function" || "fetch" in made) return serving(made as App);
    const app = (made as (c: AppContext) => App | Promise<App>)({
      logger,
      registry: NO_REGISTRY,
      bodyLimitBytes: config.config.bodyLimitBytes,
    });
    return app instanceof Promise ? app.then(serving, failed) : serving(app);
  } catch (error) {
    return failed(error);
  }
}

const METRICS_ANSWER = {
  error: "not_found",
  message:
    "No /metrics on Cloudflare Workers: a scrape would reach one isolate of many, whose counters neither add up nor last; use the platform's own analytics (docs/policy.md#cloudflare-workers-workerd)",
};

/**
 * `/healthz` and `/readyz` (always ready: the platform drains an isolate it retires, and no signal
 * reaches the worker), and `/metrics` answered 404 with the reason, in front of the app. Not the
 * other entries' routes module: that one renders the process's metrics registry, which a worker
 * does not bundle.
 */
function withProbes(fetch: FetchHandler): FetchHandler {
  const probes: Record<string, () => Response> = {
    "/healthz": () => Response.json({ status: "ok" }),
    "/readyz": () => Response.json({ status: "ready" }),
    "/metrics": () => Response.json(METRICS_ANSWER, { status: 404 }),
  };
  return (request, env, ctx) => {
    const path = new URL(request.url).pathname;
    const probe = probes[path];
    if (!probe) return fetch(request, env, ctx);
    if (request.method === "GET" || request.method === "HEAD") return probe();
    return Response.json({ error: "method_not_allowed", message: `Use GET for ${path}` }, { status: 405, headers: { allow: "GET, HEAD" } });
  };
}
