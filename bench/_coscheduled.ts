/**
 * Co-scheduled measurement: two servers pinned to the server core at the same time, loaded at once
 * by two wrk (`-t1 -c32` each) on the load core. The kernel splits the one core between the two
 * servers, so the ratio of their req/s is the inverse ratio of their CPU per request, and whatever
 * else runs on the machine slows both alike (bench/README.md#co-scheduled-ratios). Used by the
 * throughput phase and by bench/coscheduled_ab.ts; needs wrk and taskset.
 */
import { spawnSync } from "bun";
import { mkdtempSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../harness/process.ts";
import type { Runtime } from "../src/policy/types.ts";
import { BUN, DENO, LOAD_CPU, NODE, PINNED, WRK } from "./_machine.ts";
import { run } from "./_process.ts";

/** Connections of each of the two wrk: 32 each, 64 in all as in the sequential rounds. */
export const COSCHEDULED_CONNECTIONS = 32;

/** Why co-scheduled rounds cannot run here, or null when they can. */
export function coscheduledUnavailable(): string | null {
  if (!WRK) return "wrk is not installed (apt-get install wrk)";
  if (!PINNED) return "taskset or a second core is missing: the two servers must share one core, the load the other";
  return null;
}

/** Requests per second of one wrk on the load core against `url` for `seconds`; `script` is a wrk Lua script (a POST). */
async function wrkRate(url: string, seconds: number, script?: string): Promise<number> {
  const out = await run(
    [...LOAD_CPU, WRK, "-t1", `-c${COSCHEDULED_CONNECTIONS}`, `-d${seconds}s`, ...(script ? ["-s", script] : []), url],
    seconds * 1_000 + 15_000,
  );
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!rps) throw new Error(`wrk printed no rate: ${out}`);
  const errors = /Non-2xx or 3xx responses: \d+/.exec(out);
  if (errors) throw new Error(`wrk saw errors against ${url}: ${errors[0]}`);
  return Number(rps[1]);
}

/** Loads `a` and `b` at once for `seconds`: their req/s, in that order. */
export async function coscheduledRates(a: string, b: string, seconds: number, script?: string): Promise<[number, number]> {
  return await Promise.all([wrkRate(a, seconds, script), wrkRate(b, seconds, script)]);
}

/** The template's entry in `tree` (a path ending in `/`) on `runtime`, serving that tree's fixture app. */
export function templateCommand(runtime: Runtime, tree: string): string[] {
  const [entry, app] = [`${tree}src/main/${runtime}.ts`, `${tree}test/_fixture.ts`];
  if (runtime === "deno") return [DENO, "run", "--allow-all", `--config=${tree}deno.json`, entry, app];
  return [runtime === "node" ? NODE : BUN, entry, app];
}

/** `commit`'s tree in a temporary directory (ending in `/`), sharing this tree's node_modules. */
export function exportCommit(commit: string, prefix: string): string {
  const dir = `${mkdtempSync(join(tmpdir(), prefix))}/`;
  const archive = spawnSync(["sh", "-c", `git -C '${ROOT}' archive '${commit}' | tar -x -C '${dir}'`]);
  if (archive.exitCode !== 0) throw new Error(`cannot export ${commit}: ${archive.stderr.toString()}`);
  symlinkSync(`${ROOT}node_modules`, `${dir}node_modules`);
  return dir;
}
