/**
 * What the entry points share: the one place that reads the environment, loads the app, wires
 * modules, logging and metrics into `serve()`, installs signal handlers, and exits.
 */
import process from "node:process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { appOf, fetchOf } from "../policy/app.ts";
import { ConfigError } from "../policy/config.ts";
import { createLogger, type Fields, type Logger } from "../policy/log.ts";
import { createRegistry } from "../policy/metrics.ts";
import type { App, AppContext, AppExport, Engine, Module, Mounted, Runtime, Serve, Server } from "../policy/types.ts";
import * as modules from "./modules.ts";
import { withRoutes } from "../policy/routes.ts";
import { loadWorkers, startWorker, supervise, workerOf } from "./_workers.ts";
import { engineVariable, envWording, loadConfig } from "./_env.ts";

/** Exit code for a configuration the server cannot run with, before anything is bound. */
const EXIT_CONFIG = 2;
/** Exit code for a server that could not start (the port is taken, the app failed to load). */
const EXIT_START = 1;

/**
 * The optional modules the template ships, by their export name in ./modules.ts, with the prefix of
 * their variables. Kept here rather than in the module so that it outlives the module's removal: a
 * variable left set for a module no longer installed is refused at startup, not silently ignored.
 */
export const OPTIONAL_MODULES: Readonly<Record<string, { readonly title: string; readonly prefix: string }>> = {
  websub: { title: "WebSub", prefix: "WEBSUB_" },
};

/**
 * One problem per variable (set, not empty) of an optional module that is not among `installed`.
 * Values are never quoted: WEBSUB_SECRET is a secret.
 */
export function uninstalledModuleVariables(env: Record<string, string | undefined>, installed: readonly string[]): string[] {
  const problems: string[] = [];
  for (const [name, { title, prefix }] of Object.entries(OPTIONAL_MODULES)) {
    if (installed.includes(name)) continue;
    for (const variable of Object.keys(env).filter((key) => key.startsWith(prefix) && env[key]?.trim()).sort()) {
      problems.push(`${variable} is set but the ${title} module is not installed (src/main/modules.ts): unset it or restore the module`);
    }
  }
  return problems;
}

/** What an app module default-exports: an app, or a function of the context that makes one. */
type AppModule = { default?: AppExport };

/**
 * Starts the app on one runtime: validates the environment (exit 2, one stderr line per problem),
 * serves, and shuts down gracefully on SIGTERM or SIGINT (exit 0). The app is `src/app.ts`, or
 * the module named by the first argument (`npm start -- path/to/app.ts`).
 */
export async function main<E extends Engine>(runtime: Runtime, serve: Serve<E>): Promise<void> {
  const env = process.env;
  const config = loadConfig(env);
  const workers = loadWorkers(env);
  const worker = workerOf(env);
  const enabled: Array<[Module<unknown>, unknown]> = [];
  const problems = config.ok ? [] : [...config.problems];
  for (const [name, module] of Object.entries(modules) as Array<[string, Module<unknown>]>) {
    const result = module.configure(env);
    if (!result.ok) problems.push(...result.problems);
    else if (result.config !== null) enabled.push([module, result.config]);
    const single = result.ok && result.config !== null ? module.singleProcess?.(result.config) : undefined;
    if (single && workers.ok && workers.config.WORKERS > 1 && !worker) {
      problems.push(`WORKERS "${env.WORKERS}" cannot run the ${name} module: ${single}; use WORKERS=1`);
    }
  }
  problems.push(...uninstalledModuleVariables(env, Object.keys(modules)));
  if (!workers.ok) problems.push(...workers.problems);
  if (!config.ok || problems.length > 0) exit(EXIT_CONFIG, problems);
  const policy = config.config;

  // A closed stdout (the log collector went away) must not take the server down with EPIPE.
  process.stdout.on("error", () => {});
  if (!worker && workers.ok && workers.config.WORKERS > 1) {
    const code = await supervise({
      runtime,
      workers: workers.config.WORKERS,
      command: selfCommand(runtime),
      host: policy.host,
      port: policy.port,
      drainMs: policy.shutdownDelayMs + policy.shutdownTimeoutMs,
      logger: createLogger((line) => console.log(line), { runtime }),
    });
    process.exit(code);
  }
  // A worker's `listening` is its own; the supervisor prints the server's.
  const logger = inVariables(
    worker
      ? renamed(createLogger((line) => console.log(line), { runtime, worker: worker.index }), "listening", "worker_listening")
      : createLogger((line) => console.log(line), { runtime }),
  );
  const registry = createRegistry();
  const siblings = worker ? await startWorker(worker, registry) : undefined;
  const context: AppContext = { logger, registry, bodyLimitBytes: policy.bodyLimitBytes };

  let app: App;
  try {
    app = await loadApp(process.argv[2], context);
  } catch (error) {
    exit(EXIT_START, [`Cannot load the app: ${(error as Error).message}`]);
  }
  let mounted: Mounted[];
  try {
    mounted = await Promise.all(enabled.map(([module, moduleConfig]) => module.create(moduleConfig, context)));
  } catch (error) {
    exit(EXIT_START, [(error as Error).message]);
  }
  // serve() answers the probes in front of these; the modules' routes go in front of the app.
  const fetch = withRoutes(fetchOf(app), mounted.map((m) => [m.prefix, m.fetch] as const));

  let server: Server<E>;
  try {
    server = await serve(fetch, {
      ...policy,
      ...(siblings ? { exposition: siblings.metrics } : {}),
      // Any string: serve() refuses a name this runtime has no engine by (a ConfigError, exit 2).
      engine: (env[engineVariable(runtime)] ?? "auto") as "auto" | E,
      reusePort: worker !== null,
      logger,
      registry,
    });
  } catch (error) {
    // serve() names the options it was given; the one who set them set these variables.
    if (error instanceof ConfigError) exit(EXIT_CONFIG, error.in(envWording(runtime)));
    exit(EXIT_START, [`Cannot listen on ${policy.host}:${policy.port}: ${(error as Error).message}`]);
  }
  for (const m of mounted) m.listening?.(server.url);
  await siblings?.announce({ pid: process.pid, url: server.url, engine: server.engine });

  const shutdown = (signal: string) => {
    // One time for the whole shutdown: what the modules still do shares the drain's SHUTDOWN_TIMEOUT.
    const deadline = Date.now() + policy.shutdownDelayMs + policy.shutdownTimeoutMs;
    void server.shutdown(signal)
      .then(() =>
        Promise.all(mounted.map((m) => m.close?.(deadline).catch((error: unknown) => logger.error("module_close_failed", { error }))))
      )
      .then(() => process.exit(0));
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

/** The app module's default export, made with `context` when it is a function. */
async function loadApp(path: string | undefined, context: AppContext): Promise<App> {
  const url = path ? pathToFileURL(resolve(path)).href : new URL("../app.ts", import.meta.url).href;
  const made = (await import(url) as AppModule).default;
  if (made === undefined) throw new Error(`${path ?? "src/app.ts"} has no default export: export an app, or a function that makes one`);
  return await appOf(made, context);
}

/** This entry again, as the runtime was started: how the supervisor starts a worker. */
function selfCommand(runtime: Runtime): string[] {
  const [script, ...args] = process.argv.slice(1);
  // Deno's process.execArgv is empty: its permissions (and deno.json's unstable flags) are given again.
  if (runtime === "deno") return [process.execPath, "run", "--allow-all", script!, ...args];
  return [process.execPath, ...process.execArgv, script!, ...args];
}

/** `logger` with the event `from` written as `to`. */
function renamed(logger: Logger, from: string, to: string): Logger {
  const name = (event: string) => (event === from ? to : event);
  return {
    info: (event, fields) => logger.info(name(event), fields),
    warn: (event, fields) => logger.warn(name(event), fields),
    error: (event, fields) => logger.error(name(event), fields),
  };
}

/**
 * `logger` with serve()'s word for a connection limit it was given, the `maxConnections` option,
 * written as the variable that gave it, MAX_CONNECTIONS: in `listening` (`maxConnectionsFrom`) and
 * in `connections_refused` (`source`, and the end of `message`), as docs/observability.md has them.
 */
function inVariables(logger: Logger): Logger {
  const said = (fields: Fields | undefined): Fields | undefined => {
    if (fields?.maxConnectionsFrom === "maxConnections") return { ...fields, maxConnectionsFrom: "MAX_CONNECTIONS" };
    if (fields?.source !== "maxConnections") return fields;
    const message = typeof fields.message === "string" ? fields.message.replace(/maxConnections$/, "MAX_CONNECTIONS") : fields.message;
    return { ...fields, source: "MAX_CONNECTIONS", message };
  };
  return {
    info: (event, fields) => logger.info(event, said(fields)),
    warn: (event, fields) => logger.warn(event, said(fields)),
    error: (event, fields) => logger.error(event, fields),
  };
}

function exit(code: number, lines: readonly string[]): never {
  for (const line of lines) process.stderr.write(`${line}\n`);
  process.exit(code);
}
