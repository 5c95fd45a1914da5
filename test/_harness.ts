import { expect } from "bun:test";
import { spawn, spawnSync, type Subprocess } from "bun";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, unlinkSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { capabilities, headDeadlineWindow } from "../adapters/_capabilities.ts";
import type { Capabilities, Runtime, Target } from "../adapters/_types.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** The npm script a user runs for each runtime. */
export const SCRIPTS: Record<Runtime, string[]> = {
  node: ["npm", "start", "--silent"],
  bun: ["npm", "run", "start:bun", "--silent"],
  deno: ["npm", "run", "start:deno", "--silent"],
};

export interface Event {
  time: string;
  level: string;
  event: string;
  [field: string]: unknown;
}

/** Cuts text into non-empty, trimmed lines. */
class LineSplitter {
  #buffer = "";
  #onLine: (line: string) => void;

  constructor(onLine: (line: string) => void) {
    this.#onLine = onLine;
  }

  push(text: string): void {
    this.#buffer += text;
    let newline: number;
    while ((newline = this.#buffer.indexOf("\n")) >= 0) {
      const line = this.#buffer.slice(0, newline).trim();
      this.#buffer = this.#buffer.slice(newline + 1);
      if (line) this.#onLine(line);
    }
  }

  /** The last line, if it had no newline. */
  end(): void {
    const line = this.#buffer.trim();
    this.#buffer = "";
    if (line) this.#onLine(line);
  }
}

/** How often followed output files are read for new lines. */
const FOLLOW_MS = 10;
const followers = new Set<() => void>();
let followTimer: ReturnType<typeof setInterval> | undefined;
let outputDir: string | undefined;
let outputs = 0;

/** A file a child writes to, read line by line as it grows; removed once read to its end. */
class FollowedFile {
  readonly path: string;
  #fd: number;
  #decoder = new TextDecoder();
  #lines: LineSplitter;
  #chunk = new Uint8Array(64 * 1024);
  #reading = false;
  #ended = false;

  constructor(path: string, onLine: (line: string) => void) {
    this.path = path;
    this.#fd = openSync(path, "r");
    this.#lines = new LineSplitter(onLine);
  }

  /** Reads whatever was written since the last read; nothing once ended, or from inside a line handler. */
  read(): void {
    if (this.#reading || this.#ended) return;
    this.#reading = true;
    try {
      let n: number;
      while ((n = readSync(this.#fd, this.#chunk, 0, this.#chunk.length, null)) > 0) {
        this.#lines.push(this.#decoder.decode(this.#chunk.subarray(0, n), { stream: true }));
      }
    } finally {
      this.#reading = false;
    }
  }

  /** Reads the rest, then closes and removes the file. */
  end(): void {
    this.read();
    this.#lines.push(this.#decoder.decode());
    this.#lines.end();
    this.#ended = true;
    closeSync(this.#fd);
    unlinkSync(this.path);
  }
}

/** A child process whose stdout and stderr are followed line by line. */
export interface Followed<In extends "ignore" | "pipe"> {
  readonly proc: Subprocess<In, number, number>;
  /** The exit code, once the process has exited and all it wrote has been read. */
  readonly done: Promise<number>;
  /**
   * Reads what the child has written so far now, rather than at the next poll: what a server
   * logged before the test saw its effect (a close, a response) is then already counted.
   */
  read(): void;
}

/**
 * Spawns `cmd` in its own process group with stdout and stderr going to files that are followed
 * line by line, not to pipes: Bun 1.4.5 now and then stops reading a child's stdout pipe for good
 * (its epoll entry for the fd stays disarmed with unread data queued; about one run in twenty of
 * the incident replay under load), and a server whose log pipe fills up blocks in write() and
 * stops serving. A file never fills up.
 */
export function spawnFollowed<In extends "ignore" | "pipe">(
  cmd: string[],
  options: { env: Record<string, string | undefined>; stdin: In },
  onStdout: (line: string) => void,
  onStderr: (line: string) => void,
): Followed<In> {
  outputDir ??= mkdtempSync(join(tmpdir(), "hono-policy-output-"));
  const base = join(outputDir, String(++outputs));
  const stdoutFd = openSync(`${base}.out`, "a");
  const stderrFd = openSync(`${base}.err`, "a");
  let proc: Subprocess<In, number, number>;
  try {
    proc = spawn(cmd, {
      cwd: ROOT,
      env: options.env as Record<string, string>,
      stdin: options.stdin,
      stdout: stdoutFd,
      stderr: stderrFd,
      detached: true,
    }) as Subprocess<In, number, number>;
  } finally {
    closeSync(stdoutFd);
    closeSync(stderrFd);
  }
  const files = [new FollowedFile(`${base}.out`, onStdout), new FollowedFile(`${base}.err`, onStderr)];
  const poll = () => {
    for (const file of files) file.read();
  };
  followers.add(poll);
  followTimer ??= setInterval(() => {
    for (const follow of followers) follow();
  }, FOLLOW_MS);
  const done = proc.exited.then((code) => {
    followers.delete(poll);
    for (const file of files) file.end();
    if (followers.size === 0) {
      clearInterval(followTimer);
      followTimer = undefined;
      rmSync(outputDir!, { recursive: true, force: true });
      outputDir = undefined;
    }
    return code;
  });
  return { proc, done, read: poll };
}

/**
 * A server process started through its npm script, with its JSON-lines events. What it wrote is
 * read up to now whenever events, lines or stderr are looked at, so whatever the server logged
 * before the test saw its effect (a close, a response) is there.
 */
export class ServerProcess {
  readonly #events: Event[] = [];
  readonly #nonJsonLines: string[] = [];
  #stderr = "";
  url = "";
  port = 0;
  readonly exited: Promise<number>;
  #waiters = new Set<() => void>();
  #output: Followed<"ignore">;

  readonly proc: Subprocess<"ignore", number, number>;

  constructor(cmd: string[], env: Record<string, string>) {
    this.#output = spawnFollowed(cmd, { env, stdin: "ignore" }, (line) => {
      let parsed: Event;
      try {
        parsed = JSON.parse(line);
      } catch {
        this.#nonJsonLines.push(line);
        return;
      }
      this.#events.push(parsed);
      for (const wake of this.#waiters) wake();
    }, (line) => {
      this.#stderr += `${line}\n`;
    });
    this.proc = this.#output.proc;
    this.exited = this.#output.done;
  }

  /** Every event logged so far. */
  get events(): readonly Event[] {
    this.#output.read();
    return this.#events;
  }

  /** Lines on stdout that are not JSON (there should be none). */
  get nonJsonLines(): readonly string[] {
    this.#output.read();
    return this.#nonJsonLines;
  }

  get stderr(): string {
    this.#output.read();
    return this.#stderr;
  }

  /**
   * The exit code of a server expected to exit on its own (a refused configuration), waiting at
   * most `timeoutMs`. Past that it fails saying what still runs, with the process group as `ps`
   * sees it, and what the server wrote so far.
   */
  exitCode(timeoutMs = 15_000): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const group = spawnSync(["ps", "-o", "pid,stat,wchan:20,etime,args", "-g", String(this.proc.pid)]).stdout.toString().trim();
        reject(
          new Error(
            `no exit within ${timeoutMs}ms; its process group:\n${group}\nevents: ${
              this.events.map((e) => e.event).join(", ")
            }; stderr: ${this.stderr}`,
          ),
        );
      }, timeoutMs);
    });
    return Promise.race([this.exited, expired]).finally(() => clearTimeout(timer));
  }

  /** Waits for the first event named `name` (already seen or future) that matches `match`. */
  waitForEvent(name: string, timeoutMs: number, match: (event: Event) => boolean = () => true): Promise<Event> {
    return new Promise((resolve, reject) => {
      const find = () => this.events.find((e) => e.event === name && match(e));
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const check = () => {
        const found = find();
        if (found) {
          cleanup();
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `no "${name}" event within ${timeoutMs}ms; events: ${this.events.map((e) => e.event).join(", ")}; stderr: ${this.stderr}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.add(check);
      void this.exited.then((code) => {
        if (!find()) {
          cleanup();
          reject(new Error(`server exited with ${code} before a "${name}" event; stderr: ${this.stderr}`));
        }
      });
      check();
    });
  }

  /** Events named `name` logged so far. */
  named(name: string): Event[] {
    return this.events.filter((e) => e.event === name);
  }

  /** Sends `signal` to the npm process, as a container runtime would. */
  signal(signal: NodeJS.Signals): void {
    this.proc.kill(signal);
  }

  /** Kills the whole process group (npm, and the server it execs). */
  async kill(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    try {
      process.kill(-this.proc.pid, "SIGKILL");
    } catch {
      this.proc.kill("SIGKILL");
    }
    // Bounded: a cleanup that hangs would keep the test's other cleanups from running.
    await Promise.race([this.exited, Bun.sleep(5_000)]);
  }
}

export interface SpawnOptions {
  /** A lower limit on open file descriptors for the server (`ulimit -n`). */
  nofile?: number;
}

/** Spawns a runtime's npm start script; does not wait for it to listen. */
export function spawnServer(runtime: Runtime, env: Record<string, string>, options: SpawnOptions = {}): ServerProcess {
  const cmd = options.nofile === undefined
    ? SCRIPTS[runtime]
    : ["sh", "-c", `ulimit -n ${options.nofile} && exec "$@"`, "sh", ...SCRIPTS[runtime]];
  return new ServerProcess(cmd, { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env });
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
export async function startServer(
  runtime: Runtime,
  env: Record<string, string>,
  timeoutMs = 15_000,
  options: SpawnOptions = {},
): Promise<ServerProcess> {
  const release = await startSlot();
  const server = spawnServer(runtime, env, options);
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

/** A raw TCP client that records everything it reads and when the server closed. */
export class RawClient {
  data = "";
  readonly openedAt = Date.now();
  closedAt: number | null = null;
  error: Error | null = null;
  readonly closed: Promise<number>;
  #waiters = new Set<() => void>();

  readonly socket: Socket;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.data += chunk;
      for (const wake of this.#waiters) wake();
    });
    socket.on("error", (error) => {
      this.error = error;
    });
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.closedAt = Date.now();
        for (const wake of this.#waiters) wake();
        resolve(this.closedAt);
      });
    });
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** Resolves when the data read so far satisfies `test`; rejects on timeout or close. */
  waitFor(test: (data: string) => boolean, timeoutMs: number, what = "data"): Promise<number> {
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const check = () => {
        if (test(this.data)) {
          cleanup();
          resolve(Date.now());
        } else if (this.closedAt !== null) {
          cleanup();
          reject(new Error(`connection closed before ${what}; read: ${JSON.stringify(this.data)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${what} within ${timeoutMs}ms; read: ${JSON.stringify(this.data)}`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  /** Resolves with the close time, or rejects if the server keeps it open past `timeoutMs`. */
  waitForClose(timeoutMs: number): Promise<number> {
    return Promise.race([
      this.closed,
      new Promise<number>((_, reject) => {
        const timer = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs}ms`)), timeoutMs);
        void this.closed.then(() => clearTimeout(timer));
      }),
    ]);
  }

  /** Number of complete HTTP responses read so far (by status lines). */
  responses(): number {
    return this.data.split("HTTP/1.1 ").length - 1;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Closes with a TCP reset, as a crashed client or a load balancer would. */
  reset(): void {
    this.socket.resetAndDestroy();
  }
}

/**
 * One request on a connection of its own, which `Connection: close` leaves nothing of on the
 * server; rejects when no answer comes within `timeoutMs`.
 */
export function fetchOnce(url: string | URL, timeoutMs = 5_000): Promise<Response> {
  return fetch(url, { headers: { connection: "close" }, signal: AbortSignal.timeout(timeoutMs) });
}

/** Opens a raw TCP connection to 127.0.0.1:port; rejects after `timeoutMs` without a handshake. */
export function connect(port: number, timeoutMs = 5_000): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection to port ${port} within ${timeoutMs}ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", fail);
      resolve(new RawClient(socket));
    });
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error);
    };
    socket.once("error", fail);
  });
}

/**
 * What a new client gets when it tries a request: "refused" (nothing listens), "dropped" (the
 * kernel completed the handshake from the backlog of a listener being closed, and the connection
 * was then closed or reset without a byte), or "answered ..." when a server served it.
 */
export async function tryRequest(port: number, timeoutMs = 1_000): Promise<string> {
  let client: RawClient;
  try {
    client = await connect(port);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ECONNREFUSED" ? "refused" : String(error);
  }
  try {
    client.write(get("/healthz"));
    await client.waitForClose(timeoutMs);
    return client.data === "" ? "dropped" : `answered ${JSON.stringify(client.data.slice(0, 40))}`;
  } catch {
    return `still open after ${timeoutMs}ms, read ${JSON.stringify(client.data.slice(0, 40))}`;
  } finally {
    client.destroy();
  }
}

/** A keep-alive GET as raw bytes. */
export function get(path: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
}

/** True once `data` holds a complete response whose body is fixed-length or chunked. */
export function completeResponses(data: string): number {
  let count = 0;
  let rest = data;
  for (;;) {
    const headEnd = rest.indexOf("\r\n\r\n");
    if (headEnd < 0) return count;
    const head = rest.slice(0, headEnd).toLowerCase();
    const body = rest.slice(headEnd + 4);
    const length = /content-length:\s*(\d+)/.exec(head);
    if (length) {
      const n = Number(length[1]);
      if (body.length < n) return count;
      rest = body.slice(n);
    } else if (/transfer-encoding:\s*chunked/.test(head)) {
      const end = body.indexOf("\r\n0\r\n\r\n");
      const atStart = body.startsWith("0\r\n\r\n");
      if (end < 0 && !atStart) return count;
      rest = atStart ? body.slice(5) : body.slice(end + 7);
    } else {
      return count;
    }
    count += 1;
  }
}

/** Runs `fn` with resources that are cleaned up even when it throws. */
export async function using<T>(fn: (defer: (cleanup: () => unknown) => void) => Promise<T>): Promise<T> {
  const cleanups: Array<() => unknown> = [];
  try {
    return await fn((cleanup) => cleanups.push(cleanup));
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch {
        // Cleanup must not hide the test's own failure.
      }
    }
  }
}

/** Sends `text` one byte every `intervalMs` until the socket closes or `maxBytes` are sent. */
export function trickle(client: RawClient, text: string, intervalMs: number): () => void {
  let i = 0;
  const timer = setInterval(() => {
    if (client.closedAt !== null || i >= text.length) {
      clearInterval(timer);
      return;
    }
    client.socket.write(text[i]!);
    i += 1;
  }, intervalMs);
  return () => clearInterval(timer);
}

/** Resident memory of process `pid` in bytes (Linux). */
export function rss(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(/(\d+)/.exec(line ?? "")?.[1]) * 1_024;
}

/** Open file descriptors of process `pid` (Linux). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The value of one sample line of a Prometheus exposition; fails the test when it is missing. */
export function metric(exposition: string, series: string): number {
  const line = exposition.split("\n").find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no ${series} in /metrics:\n${exposition}`);
  return Number(line.slice(series.length + 1));
}

/** Resolves like `promise`, or rejects naming `what` after `timeoutMs`. */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs}ms`)), timeoutMs);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/** Bounds a measurement on both sides: not earlier than `min`, not later than `max`. */
export function expectBetween(value: number, min: number, max: number): void {
  expect(value).toBeGreaterThanOrEqual(min);
  expect(value).toBeLessThanOrEqual(max);
}

/** Slack for the lower bounds: the contract allows a close up to 100 ms early. */
export const EARLY_MS = 100;

/**
 * What the conformance and hardening suites share for one engine: its runtime, its declared
 * capabilities, short policy timeouts (Bun's a multiple of its 4 s tick, as the README advises),
 * the environment that sets them, and the window a head deadline may close a connection in.
 */
export function suiteSetup(target: Target, shutdownMs: number) {
  const [runtime, engine] = target.split(/-(.*)/) as [Runtime, string | undefined];
  const caps: Capabilities = capabilities[target];
  const IDLE_MS = runtime === "bun" ? 4_000 : 2_000;
  const HEADERS_MS = 1_500;
  const REQUEST_MS = 2_500;
  const engineEnv: Record<string, string> = engine ? { [`${runtime.toUpperCase()}_ENGINE`]: engine } : {};
  const env: Record<string, string> = {
    ...engineEnv,
    IDLE_TIMEOUT: `${IDLE_MS}ms`,
    HEADERS_TIMEOUT: `${HEADERS_MS}ms`,
    REQUEST_TIMEOUT: `${REQUEST_MS}ms`,
    SHUTDOWN_TIMEOUT: `${shutdownMs}ms`,
  };
  const window = headDeadlineWindow(caps, HEADERS_MS);
  const headersWindow = { min: window.min - EARLY_MS, max: window.max };
  return {
    runtime,
    engine,
    engineEnv,
    caps,
    env,
    IDLE_MS,
    HEADERS_MS,
    REQUEST_MS,
    SHUTDOWN_MS: shutdownMs,
    IDLE_LATE_MS: caps.idleCloseLateMs(IDLE_MS),
    headersWindow,
  };
}

export { ROOT };
