/**
 * The servers the bench measures: each runtime's raw server and bare Hono (bench/fixtures/), and
 * the template serving the suites' fixture app, started directly or through its npm script.
 */
import { fetchOnce } from "../harness/http.ts";
import { ServerProcess } from "../harness/process.ts";
import { FIXTURE_APP, SCRIPTS } from "../harness/servers.ts";
import type { Runtime } from "../src/policy/types.ts";
import type { IdleKind, Kind, WsKind } from "./_config.ts";
import { BUN, DENO, NODE, PROJECT_PATH, SERVER_CPU } from "./_machine.ts";
import { track, untrack } from "./_process.ts";

/** How each server starts: fixtures for raw and bare Hono, the entry points directly for the template. */
export const COMMANDS: Record<Runtime, Record<Kind, string[]> & { engine?: string[] }> = {
  node: {
    raw: [NODE, "bench/fixtures/raw.node.ts"],
    hono: [NODE, "bench/fixtures/hono.node.ts"],
    template: [NODE, "src/main/node.ts", FIXTURE_APP],
  },
  bun: {
    raw: [BUN, "bench/fixtures/raw.bun.ts"],
    hono: [BUN, "bench/fixtures/hono.bun.ts"],
    template: [BUN, "src/main/bun.ts", FIXTURE_APP],
  },
  deno: {
    raw: [DENO, "run", "--allow-all", "bench/fixtures/raw.deno.ts"],
    hono: [DENO, "run", "--allow-all", "bench/fixtures/hono.deno.ts"],
    template: [DENO, "run", "--allow-all", "src/main/deno.ts", FIXTURE_APP],
    engine: [DENO, "run", "--allow-all", "bench/fixtures/engine.deno.ts"],
  },
};

/**
 * The WebSocket phase's servers: each runtime's bare WebSocket echo (fixtures/ws_raw.*.ts), and the
 * template run by its entry as `npm start` runs it, serving the example app (src/app.ts, whose
 * `GET /ws` echoes), not the fixture.
 */
export const WS_COMMANDS: Record<Runtime, Record<WsKind, string[]>> = {
  node: {
    "ws-bare": [NODE, "bench/fixtures/ws_raw.node.ts"],
    "ws-template": [NODE, "src/main/node.ts"],
  },
  bun: {
    "ws-bare": [BUN, "bench/fixtures/ws_raw.bun.ts"],
    "ws-template": [BUN, "src/main/bun.ts"],
  },
  deno: {
    "ws-bare": [DENO, "run", "--allow-all", "bench/fixtures/ws_raw.deno.ts"],
    "ws-template": [DENO, "run", "--allow-all", "src/main/deno.ts"],
  },
};

/** How a user starts the template: its npm script, serving the fixture app. */
export function npmCommand(runtime: Runtime): string[] {
  return [...SCRIPTS[runtime], "--", FIXTURE_APP];
}

export interface Server {
  runtime: Runtime;
  kind: Kind | IdleKind | WsKind;
  child: ServerProcess;
  url: string;
  pid: number;
  /**
   * Every process that serves it: just `pid` for a single process; with WORKERS above 1 the
   * supervisor's `pid` first, then each worker's, from the `listening` event's `workers` array.
   */
  pids: number[];
  engine: string;
  /** From spawning the process to reading its `listening` line, in ms. */
  startMs: number;
  /** Kills the server's process group. */
  stop(): Promise<void>;
}

/** Starts one of the servers in COMMANDS (optionally under a raised fd limit) and waits for its `listening` line. */
export function startServer(runtime: Runtime, kind: Kind | IdleKind, env: Record<string, string> = {}, nofile?: number): Promise<Server> {
  const command = COMMANDS[runtime][kind];
  if (!command) return Promise.reject(new Error(`no ${kind} server for ${runtime}`));
  return startCommand(runtime, kind, command, env, nofile);
}

/**
 * Starts one of the servers in COMMANDS on any core, not pinned to the server core: for the
 * workers phase, where pinning N worker processes to one core would measure the core, not N.
 */
export function startUnpinnedServer(runtime: Runtime, kind: Kind, env: Record<string, string> = {}): Promise<Server> {
  return startCommand(runtime, kind, COMMANDS[runtime][kind], env, undefined, []);
}

/** Starts the template through its npm script, with the project's binaries first on PATH as `npm run` has them. */
export function startNpmServer(runtime: Runtime, env: Record<string, string> = {}): Promise<Server> {
  return startCommand(runtime, "template", npmCommand(runtime), { PATH: PROJECT_PATH, ...env });
}

/**
 * Spawns `command` on the server core (or on the cores `cpu` pins it to, none for `[]`), bound to
 * 127.0.0.1 port 0, waits for its `listening` line and checks that `GET /` answers `Hello World`.
 */
export async function startCommand(...args: Parameters<typeof launchCommand>): Promise<Server> {
  const [runtime, kind] = args;
  const server = await launchCommand(...args);
  try {
    const response = await fetchOnce(`${server.url}/`);
    const body = await response.text();
    if (response.status !== 200 || body !== "Hello World") {
      throw new Error(`${runtime} ${kind}: GET / answered ${response.status} ${JSON.stringify(body)}`);
    }
    return server;
  } catch (error) {
    await server.stop();
    throw error;
  }
}

/**
 * `startCommand()` without its `GET /`: resolves as soon as the `listening` line is read, so the
 * next request is the server's first (the scrape phase times a first `GET /metrics`).
 */
export async function launchCommand(
  runtime: Runtime,
  kind: Kind | IdleKind | WsKind,
  command: string[],
  env: Record<string, string>,
  nofile?: number,
  cpu: string[] = SERVER_CPU,
): Promise<Server> {
  const base = [...cpu, ...command];
  const cmd = nofile ? ["prlimit", `--nofile=${nofile}:${nofile}`, "--", ...base] : base;
  const started = performance.now();
  const child = new ServerProcess(cmd, { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env });
  track(child.proc);
  const stop = async () => {
    await child.kill();
    untrack(child.proc);
  };
  // Reads its output every millisecond until it listens, not at the follow poll (10 ms), so the
  // start time is measured to the millisecond.
  const poll = setInterval(() => child.named("listening"), 1);
  try {
    const listening = await child.waitForEvent("listening", 30_000);
    const startMs = performance.now() - started;
    clearInterval(poll);
    const url = String(listening.url).replace(/\/$/, "");
    const engine = String(listening.engine ?? listening.server ?? "");
    const pid = Number(listening.pid);
    const workers = Array.isArray(listening.workers) ? (listening.workers as Array<{ pid: unknown }>).map((w) => Number(w.pid)) : [];
    return { runtime, kind, child, url, pid, pids: [pid, ...workers], engine, startMs, stop };
  } catch (error) {
    await stop();
    throw error;
  } finally {
    clearInterval(poll);
  }
}
