import { spawn, spawnSync, type Subprocess } from "bun";
import { closeSync, mkdtempSync, openSync, readSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The project's root: every child runs there. */
export const ROOT = new URL("..", import.meta.url).pathname;

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
 * line by line, not to pipes: Bun now and then stops reading a child's stdout pipe for good
 * (docs/runtimes.md#bun-sometimes-stops-reading-a-childs-pipe), and a server whose log pipe fills
 * up blocks in write() and stops serving. A file never fills up.
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
