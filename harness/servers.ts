import type { Engine, Runtime } from "../src/policy/types.ts";
import { existsSync } from "node:fs";
import { ROOT, ServerProcess } from "./process.ts";

/**
 * What the suites start: an engine of a runtime, or Cloudflare's workerd, which runs the app as a
 * module worker (`npm run start:workerd`). The production Engine type names server engines only.
 */
export type Target = Engine | "workerd";

/** The npm script a user runs for each runtime, and for workerd. */
export const SCRIPTS: Record<Runtime | "workerd", string[]> = {
  node: ["npm", "start", "--silent"],
  bun: ["npm", "run", "start:bun", "--silent"],
  deno: ["npm", "run", "start:deno", "--silent"],
  workerd: ["npm", "run", "start:workerd", "--silent"],
};

/** The project's pinned runtimes (node_modules/.bin, as npm scripts see them), whatever is on PATH. */
export const NODE = existsSync(`${ROOT}node_modules/.bin/node`) ? `${ROOT}node_modules/.bin/node` : "node";
export const BUN = existsSync(`${ROOT}node_modules/.bin/bun`) ? `${ROOT}node_modules/.bin/bun` : process.execPath;
export const DENO = existsSync(`${ROOT}node_modules/.bin/deno`) ? `${ROOT}node_modules/.bin/deno` : "deno";
/** PATH with the project's binaries first, as `npm run` sets it. */
export const PROJECT_PATH = `${ROOT}node_modules/.bin:${process.env.PATH ?? ""}`;

/** The Node that serves Node engines in the suites: NODE_BINARY (the version matrix), else the pinned one. */
export function serverNode(): string {
  return process.env.NODE_BINARY || NODE;
}

/** The app the policy suites and the bench serve: their own fixture, never the example app. */
export const FIXTURE_APP = "test/_fixture.ts";

/** The runtime an engine runs on: the first word of its name. */
export function runtimeOf(engine: Engine): Runtime {
  return engine.slice(0, engine.indexOf("-")) as Runtime;
}

/** What runs `target`: its runtime, or workerd. */
export function runnerOf(target: Target): Runtime | "workerd" {
  return target === "workerd" ? "workerd" : runtimeOf(target);
}

export interface SpawnOptions {
  /** A lower limit on open file descriptors for the server (`ulimit -n`). */
  nofile?: number;
  /** The app module to serve, relative to the project; null for the entry's own (src/app.ts). @default FIXTURE_APP */
  app?: string | null;
}

/**
 * How a user starts `target`'s server: its npm script, serving `app`. With NODE_BINARY set, Node
 * engines run on that binary directly instead (the Node version matrix in .ci/run).
 */
function command(target: Target, app: string | null): string[] {
  const runner = runnerOf(target);
  const args = app === null ? [] : [app];
  if (runner === "node" && process.env.NODE_BINARY) return [serverNode(), "src/main/node.ts", ...args];
  return [...SCRIPTS[runner], ...(app === null ? [] : ["--", app])];
}

/** Spawns `target`'s server on 127.0.0.1, port 0; does not wait for it to listen. */
export function spawnServer(target: Target, env: Record<string, string>, options: SpawnOptions = {}): ServerProcess {
  const runner = runnerOf(target);
  const engineEnv = runner === "node" || runner === "workerd" ? {} : { [`${runner.toUpperCase()}_ENGINE`]: target };
  const start = command(target, options.app === undefined ? FIXTURE_APP : options.app);
  const cmd = options.nofile === undefined ? start : ["sh", "-c", `ulimit -n ${options.nofile} && exec "$@"`, "sh", ...start];
  return new ServerProcess(cmd, { ...process.env, PORT: "0", HOST: "127.0.0.1", ...engineEnv, ...env });
}

/**
 * At most this many servers start at once. Starting one (npm, then the runtime loading its
 * TypeScript) takes most of a core for a moment; a burst of them on a 2-core machine would delay
 * the timers of the servers already under test and skew their measurements.
 */
const STARTING_AT_ONCE = 2;
let starting = 0;
const startQueue: Array<() => void> = [];

async function startSlot(): Promise<() => void> {
  if (starting >= STARTING_AT_ONCE) await new Promise<void>((resolve) => startQueue.push(resolve));
  starting += 1;
  return () => {
    starting -= 1;
    startQueue.shift()?.();
  };
}

/** Spawns a server and resolves once its `listening` event names the URL. */
export function startServer(
  target: Target,
  env: Record<string, string>,
  timeoutMs = 15_000,
  options: SpawnOptions = {},
): Promise<ServerProcess> {
  return startListening(() => spawnServer(target, env, options), timeoutMs);
}

/** Spawns a server with `spawn` (in turn with the others starting) and resolves once its `listening` event names the URL. */
export async function startListening(spawn: () => ServerProcess, timeoutMs = 15_000): Promise<ServerProcess> {
  const release = await startSlot();
  const server = spawn();
  try {
    const listening = await server.waitForEvent("listening", timeoutMs);
    server.url = String(listening.url);
    server.port = Number(new URL(server.url).port);
  } catch (error) {
    await server.kill();
    throw error;
  } finally {
    release();
  }
  return server;
}
