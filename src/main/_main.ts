/**
 * What the entry points share: the one place that reads the environment, loads the app, wires
 * modules, logging and metrics into `serve()`, installs signal handlers, and exits.
 */
import process from "node:process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { fetchOf } from "../policy/app.ts";
import { ConfigError, loadConfig } from "../policy/config.ts";
import { createLogger } from "../policy/log.ts";
import { createRegistry } from "../policy/metrics.ts";
import type { App, AppContext, Runtime, Serve, Server } from "../policy/types.ts";
import type { Module, Mounted } from "./_module.ts";
import * as modules from "./modules.ts";
import { operationalRoutes, withRoutes } from "./_routes.ts";

/** Exit code for a configuration the server cannot run with, before anything is bound. */
const EXIT_CONFIG = 2;
/** Exit code for a server that could not start (the port is taken, the app failed to load). */
const EXIT_START = 1;

/** What an app module default-exports: an app, or a function of the context that makes one. */
type AppModule = { default?: App | ((context: AppContext) => App | Promise<App>) };

/**
 * Starts the app on one runtime: validates the environment (exit 2, one stderr line per problem),
 * serves, and shuts down gracefully on SIGTERM or SIGINT (exit 0). The app is `src/app.ts`, or
 * the module named by the first argument (`npm start -- path/to/app.ts`).
 */
export async function main(runtime: Runtime, serve: Serve): Promise<void> {
  const env = process.env;
  const config = loadConfig(env);
  const enabled: Array<[Module<unknown>, unknown]> = [];
  const problems = config.ok ? [] : [...config.problems];
  for (const module of Object.values(modules) as Module<unknown>[]) {
    const result = module.configure(env);
    if (!result.ok) problems.push(...result.problems);
    else if (result.config !== null) enabled.push([module, result.config]);
  }
  if (!config.ok || problems.length > 0) exit(EXIT_CONFIG, problems);
  const { bodyLimitBytes, ...policy } = config.config;

  // A closed stdout (the log collector went away) must not take the server down with EPIPE.
  process.stdout.on("error", () => {});
  const logger = createLogger((line) => console.log(line), { runtime });
  const registry = createRegistry();
  const context: AppContext = { logger, registry, bodyLimitBytes };

  let app: App;
  try {
    app = await loadApp(process.argv[2], context);
  } catch (error) {
    exit(EXIT_START, [`Cannot load the app: ${(error as Error).message}`]);
  }
  const mounted: Mounted[] = enabled.map(([module, moduleConfig]) => module.create(moduleConfig, context));
  // The routes exist before the server: /readyz asks it once serve() has made it.
  let server: Server | undefined;
  const fetch = withRoutes(fetchOf(app), [
    ...operationalRoutes(registry, () => server?.ready() ?? false),
    ...mounted.map((m) => [m.prefix, m.fetch] as const),
  ]);

  try {
    server = await serve(fetch, { ...policy, engine: env[`${runtime.toUpperCase()}_ENGINE`] ?? "auto", logger, registry });
  } catch (error) {
    if (error instanceof ConfigError) exit(EXIT_CONFIG, error.problems);
    exit(EXIT_START, [`Cannot listen on ${policy.host}:${policy.port}: ${(error as Error).message}`]);
  }
  for (const m of mounted) m.listening?.(server.url);

  const shutdown = (signal: string) => void server.shutdown(signal).then(() => process.exit(0));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

/** The app module's default export, made with `context` when it is a function. */
async function loadApp(path: string | undefined, context: AppContext): Promise<App> {
  const url = path ? pathToFileURL(resolve(path)).href : new URL("../app.ts", import.meta.url).href;
  const made = (await import(url) as AppModule).default;
  if (made === undefined) throw new Error(`${path ?? "src/app.ts"} has no default export: export an app, or a function that makes one`);
  // A Hono app is a function's instance, not a function; anything callable is a factory.
  if (typeof made === "function" && !("fetch" in made)) return await (made as (context: AppContext) => App | Promise<App>)(context);
  return made as App;
}

function exit(code: number, lines: readonly string[]): never {
  for (const line of lines) process.stderr.write(`${line}\n`);
  process.exit(code);
}
