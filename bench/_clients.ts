/** How the bench runs its own clients, each a process of its own: bench/_idle_client.ts and bench/_hostile_client.ts. */
import { IDLE_BATCH } from "./_config.ts";
import { BUN, LOAD_CPU } from "./_machine.ts";
import { run } from "./_process.ts";

/** The command line of bench/_idle_client.ts, under fd limit `limit` when given. */
export function idleClientCommand(limit: number | undefined, port: number, count: number, mode: "hold" | "wait", waitMs: number): string[] {
  const cmd = [BUN, "bench/_idle_client.ts", String(port), String(count), String(IDLE_BATCH), mode, String(waitMs)];
  return limit ? ["prlimit", `--nofile=${limit}:${limit}`, "--", ...cmd] : cmd;
}

/** Runs bench/_hostile_client.ts on the load core and returns its `done` line. */
export async function hostileClient<T>(args: Array<string | number>, timeoutMs: number): Promise<T> {
  const out = await run([...LOAD_CPU, BUN, "bench/_hostile_client.ts", ...args.map(String)], timeoutMs);
  return JSON.parse(out.trim().split("\n").at(-1)!) as T;
}

/** The command line of bench/_ws_client.ts on the load core, under fd limit `limit` when given. */
export function wsClientCommand(limit: number | undefined, args: Array<string | number>): string[] {
  const cmd = [...LOAD_CPU, BUN, "bench/_ws_client.ts", ...args.map(String)];
  return limit ? ["prlimit", `--nofile=${limit}:${limit}`, "--", ...cmd] : cmd;
}
