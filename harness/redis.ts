/**
 * A real redis-server for tests, on 127.0.0.1, with nothing saved to disk; its output is followed
 * through spawnFollowed like any other child.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.ts";
import { spawnFollowed } from "./process.ts";
import { within } from "./wait.ts";

/** A running redis-server. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>/0`, without the password. */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** Kills it at once (SIGKILL), as a crash would; resolves once it has exited. */
  kill(): Promise<void>;
  /** Stops it (SIGKILL if need be) and removes its scratch folder. */
  close(): Promise<void>;
}

/** How long redis-server may take to say it is ready. */
const READY_TIMEOUT_MS = 10_000;

/** Why redis-server cannot run here, or undefined when it can: for `describe.skipIf` and skip messages. */
export function redisMissing(): string | undefined {
  return Bun.which("redis-server") === null ? "redis-server is not installed (apt-get install redis-server)" : undefined;
}

// redis-server cannot bind port 0 (harness/ports.ts); startRedis() retries when another process
// takes the port first.

/** Options for {@link startRedis}. */
export interface StartRedisOptions {
  /** Sets `requirepass`: clients must AUTH with it (user `default`). */
  password?: string;
  /** A port to listen on, e.g. the one of a server that was killed; a free one when absent. */
  port?: number;
}

/**
 * Starts redis-server and resolves once it logs "Ready to accept connections"; undefined when
 * redis-server is not installed (see {@link redisMissing} for the reason).
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer | undefined> {
  if (redisMissing() !== undefined) return undefined;
  // A port found free may be taken before redis binds it: then try another, a few times.
  for (let attempt = 1;; attempt++) {
    try {
      return await start(options.port ?? await freePort(), options.password);
    } catch (error) {
      if (options.port !== undefined || attempt === 3 || !/Address already in use/.test((error as Error).message)) throw error;
    }
  }
}

async function start(port: number, password: string | undefined): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "websub-redis-"));
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", ""];
  if (password !== undefined) args.push("--requirepass", password);
  const output: string[] = [];
  let ready!: () => void;
  const sawReady = new Promise<void>((resolve) => (ready = resolve));
  const child = spawnFollowed(["redis-server", ...args], { env: process.env, stdin: "ignore" }, (line) => {
    output.push(line);
    if (line.includes("Ready to accept connections")) ready();
  }, (line) => output.push(line));
  const stop = async (signal: NodeJS.Signals) => {
    if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill(signal);
    await within(child.done, 5_000, "redis-server exit");
  };
  try {
    await within(
      Promise.race([
        sawReady,
        child.done.then((code) => Promise.reject(new Error(`redis-server exited with ${code} before it was ready:\n${output.join("\n")}`))),
      ]),
      READY_TIMEOUT_MS,
      `"Ready to accept connections" from redis-server`,
    );
  } catch (error) {
    await stop("SIGKILL").catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  let closing: Promise<void> | undefined;
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    pid: child.proc.pid,
    kill: () => stop("SIGKILL"),
    close: () =>
      closing ??= (async () => {
        try {
          // A stopped (SIGSTOP) server would not act on SIGTERM; this is a scratch server, so no grace.
          await stop("SIGKILL");
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      })(),
  };
}
