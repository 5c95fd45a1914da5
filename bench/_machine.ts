/** The tools the bench runs (runtimes, load generator, taskset, prlimit) and the machine it runs on. */
import { spawnSync } from "bun";
import { readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { ROOT } from "../harness/process.ts";
import { IDLE_CONNECTIONS, WANTED_NOFILE } from "./_config.ts";

/** The project's own runtimes and PATH, as the suites use them (harness/servers.ts). */
import { BUN, DENO, NODE, PROJECT_PATH } from "../harness/servers.ts";

export { BUN, DENO, NODE, PROJECT_PATH };

export const WRK = spawnSync(["sh", "-c", "command -v wrk"]).stdout.toString().trim();
export const AUTOCANNON = `${ROOT}node_modules/autocannon/autocannon.js`;
export const GENERATOR: "wrk" | "autocannon" = process.env.BENCH_LOAD === "autocannon" || !WRK ? "autocannon" : "wrk";
/**
 * Server and load generator each get a core of their own when taskset exists: left to the
 * scheduler they share both, and the ratios swing by tens of percent between identical runs.
 */
export const PINNED = spawnSync(["sh", "-c", "command -v taskset"]).stdout.toString().trim() !== "" && cpus().length >= 2;
export const SERVER_CPU = PINNED ? ["taskset", "-c", "0"] : [];
export const LOAD_CPU = PINNED ? ["taskset", "-c", "1"] : [];

function versionOf(cmd: string[]): string {
  try {
    return spawnSync(cmd).stdout.toString().trim().split("\n")[0] ?? "";
  } catch {
    return "unknown";
  }
}

/** The machine, the runtimes' versions and the load generator, as the report names them. */
export function machine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown";
  return {
    date: new Date().toISOString(),
    nproc: Number(spawnSync(["nproc"]).stdout.toString().trim()) || cpus().length,
    cpuModel: model,
    memTotalMiB: Math.round(totalmem() / 1024 / 1024),
    loadAverageAtStart: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
    node: versionOf([NODE, "--version"]),
    bun: versionOf([BUN, "--version"]),
    deno: versionOf([DENO, "--version"]),
    generator: GENERATOR === "wrk"
      ? `wrk (${versionOf(["sh", "-c", "wrk -v 2>&1"]).replace(/ Copyright.*/, "")})`
      : `autocannon ${JSON.parse(readFileSync(`${ROOT}node_modules/autocannon/package.json`, "utf8")).version}`,
  };
}

export type Machine = ReturnType<typeof machine>;

/** The highest fd limit prlimit can give a child: 65536 if allowed, else the hard limit. */
export function nofileLimit(): { limit: number; note: string } {
  const wanted = spawnSync(["prlimit", `--nofile=${WANTED_NOFILE}:${WANTED_NOFILE}`, "--", "true"]);
  if (wanted.exitCode === 0) return { limit: WANTED_NOFILE, note: `${WANTED_NOFILE}` };
  const hard = Number(spawnSync(["sh", "-c", "ulimit -Hn"]).stdout.toString().trim());
  if (!Number.isFinite(hard) || hard < IDLE_CONNECTIONS + 100) {
    throw new Error(
      `cannot raise the fd limit to ${WANTED_NOFILE} (${wanted.stderr.toString().trim()}) and the hard limit ${hard} is too low for ${IDLE_CONNECTIONS} connections`,
    );
  }
  return {
    limit: hard,
    note: `${hard} (the hard limit; ${WANTED_NOFILE} refused: ${wanted.stderr.toString().trim().replace(/^prlimit: /, "")})`,
  };
}

/** The raised limit for servers that hold many connections, or none when it cannot be raised. */
export function raisedNofile(): number | undefined {
  try {
    return nofileLimit().limit;
  } catch {
    return undefined;
  }
}
