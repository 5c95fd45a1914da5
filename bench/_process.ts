/**
 * The bench's child processes: every one runs in its own process group (see spawnFollowed) and is
 * killed, group and all, when the bench exits or is interrupted. Servers are harness
 * `ServerProcess`es; the load generators and the bench's own clients are `ClientProcess`es, which
 * also keep their raw stdout and can take a stdin pipe.
 */
import type { Subprocess } from "bun";
import { type Followed, spawnFollowed } from "../harness/process.ts";

const children = new Set<Subprocess>();

/** Kills `proc` with its group when the bench exits; `untrack` once it has been stopped. */
export function track(proc: Subprocess): void {
  children.add(proc);
}

export function untrack(proc: Subprocess): void {
  children.delete(proc);
}

function killGroup(proc: Subprocess): void {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  try {
    process.kill(-proc.pid, "SIGKILL");
  } catch {
    try {
      proc.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/** Kills every child still running. */
export function killAll(): void {
  for (const proc of children) killGroup(proc);
}

/** Kills every child when the bench exits, or is interrupted (then exits 130). */
export function killChildrenOnExit(): void {
  process.on("exit", killAll);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      killAll();
      process.exit(130);
    });
  }
}

/** A client or load generator whose stdout is kept and read as JSON lines for its whole life (see spawnFollowed). */
export class ClientProcess {
  readonly proc: Subprocess<"pipe" | "ignore", number, number>;
  readonly #output: Followed<"pipe" | "ignore">;
  readonly events: Array<Record<string, unknown>> = [];
  stderr = "";
  stdout = "";
  #waiters = new Set<() => void>();
  /** Resolves once the process has exited and its output has been read. */
  readonly done: Promise<number>;

  readonly name: string;

  constructor(cmd: string[], env: Record<string, string | undefined>, stdin: "pipe" | "ignore" = "ignore") {
    this.name = cmd.filter((arg) => !arg.startsWith("-") && arg !== "prlimit").slice(0, 3).join(" ");
    this.#output = spawnFollowed(cmd, { env, stdin }, (line) => {
      if (this.stdout.length < 1_000_000) this.stdout += `${line}\n`;
      try {
        this.events.push(JSON.parse(line));
      } catch {
        return;
      }
      for (const wake of this.#waiters) wake();
    }, (line) => {
      if (this.stderr.length < 20_000) this.stderr += `${line}\n`;
    });
    this.proc = this.#output.proc;
    this.done = this.#output.done;
    track(this.proc);
  }

  /** The first event named `name`; rejects on timeout or when the process ends without it. */
  waitFor(name: string, timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      let ended = false;
      const check = () => {
        const found = this.events.find((e) => e.event === name);
        if (found) {
          finish();
          resolve(found);
        } else if (ended) {
          finish();
          reject(new Error(`${this.name} ended before "${name}" (exit ${this.proc.exitCode}); stderr: ${this.stderr.slice(0, 2_000)}`));
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no "${name}" from ${this.name} within ${timeoutMs} ms; stderr: ${this.stderr.slice(0, 2_000)}`));
      }, timeoutMs);
      this.#waiters.add(check);
      // Everything it wrote has been read by then.
      void this.done.then(() => {
        ended = true;
        check();
      });
      this.#output.read();
      check();
    });
  }

  /** Kills its process group and waits (at most 5 s) for it to exit. */
  async stop(): Promise<void> {
    killGroup(this.proc);
    await Promise.race([this.proc.exited, Bun.sleep(5_000)]);
    untrack(this.proc);
  }
}

/** Runs `cmd` to its end (killed after `timeoutMs`) and returns its stdout; fails on a non-zero exit. */
export async function run(cmd: string[], timeoutMs: number): Promise<string> {
  const child = new ClientProcess(cmd, process.env);
  const timer = setTimeout(() => killGroup(child.proc), timeoutMs);
  try {
    const [code] = await Promise.all([child.proc.exited, child.done]);
    if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}: ${child.stderr.slice(0, 2_000)}`);
    return child.stdout;
  } finally {
    clearTimeout(timer);
    await child.stop();
  }
}
