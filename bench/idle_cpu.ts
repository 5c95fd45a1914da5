/**
 * `bun bench/idle_cpu.ts`: what an idle server costs. Starts each runtime's server as a user does,
 * through its npm script (`npm start`, `npm run start:bun`, `npm run start:deno`; the example app,
 * PORT=0 HOST=127.0.0.1), once alone and once with WORKERS=2, sends it one `GET /` to see that it
 * serves, waits, then reads utime + stime of every process that serves (the server; with WORKERS=2
 * the supervisor and each worker, whose pids the `listening` event names) from /proc/<pid>/stat at
 * the start and the end of the measurement, with no traffic in between, and prints each process's
 * CPU time as a percentage of one core. Target: at most 0.2% per process (#21). npm's own process,
 * the parent of the server, is not the server's and is left out. Not part of `npm test`.
 *
 * By default every server starts at once and all are measured over the same window: idle, they
 * leave each other the machine, and the run takes one window rather than six.
 *
 * Environment: BENCH_RUNTIMES (node,bun,deno), BENCH_IDLE_CPU_WORKERS (1,2), BENCH_IDLE_CPU_S (60,
 * the measurement), BENCH_IDLE_CPU_WAIT_S (5, from the `listening` line to the measurement),
 * BENCH_IDLE_CPU_ONE_AT_A_TIME=1 (measure each server alone, one after another).
 */
import { SCRIPTS } from "../harness/servers.ts";
import type { Runtime } from "../src/policy/types.ts";
import { PROJECT_PATH } from "./_machine.ts";
import { cpuMs, loadAverage } from "./_proc.ts";
import { killChildrenOnExit } from "./_process.ts";
import { type Server, startCommand } from "./_servers.ts";

const RUNTIMES = (process.env.BENCH_RUNTIMES ?? "node,bun,deno").split(",").map((s) => s.trim()) as Runtime[];
const WORKERS = (process.env.BENCH_IDLE_CPU_WORKERS ?? "1,2").split(",").map(Number);
const MEASURE_S = Number(process.env.BENCH_IDLE_CPU_S ?? 60);
const WAIT_S = Number(process.env.BENCH_IDLE_CPU_WAIT_S ?? 5);
const ONE_AT_A_TIME = process.env.BENCH_IDLE_CPU_ONE_AT_A_TIME === "1";
/** The most one idle process may use, in % of one core. */
const TARGET_PERCENT = 0.2;

interface Row {
  runtime: Runtime;
  workers: number;
  role: string;
  pid: number;
  cpuMs: number;
  percent: number;
}

/** The npm script's server (the example app), on any core, bound to 127.0.0.1 port 0. */
function start(runtime: Runtime, workers: number): Promise<Server> {
  return startCommand(runtime, "template", SCRIPTS[runtime], { PATH: PROJECT_PATH, WORKERS: String(workers) }, undefined, []);
}

function roles(server: Server): string[] {
  return server.pids.length === 1 ? ["server"] : ["supervisor", ...server.pids.slice(1).map((_, i) => `worker ${i}`)];
}

/** Measures `servers` over one window of MEASURE_S; every process, from its own /proc/<pid>/stat. */
async function measure(servers: Array<{ server: Server; workers: number }>): Promise<Row[]> {
  await Bun.sleep(WAIT_S * 1_000);
  const before = servers.map(({ server }) => server.pids.map(cpuMs));
  const started = performance.now();
  await Bun.sleep(MEASURE_S * 1_000);
  const after = servers.map(({ server }) => server.pids.map(cpuMs));
  const wallMs = performance.now() - started;
  return servers.flatMap(({ server, workers }, s) =>
    roles(server).map((role, p) => {
      const used = after[s]![p]! - before[s]![p]!;
      return { runtime: server.runtime, workers, role, pid: server.pids[p]!, cpuMs: used, percent: (100 * used) / wallMs };
    })
  );
}

async function main(): Promise<void> {
  killChildrenOnExit();
  const plan = RUNTIMES.flatMap((runtime) => WORKERS.map((workers) => ({ runtime, workers })));
  console.log(
    `idle CPU: ${
      plan.map((p) => `${p.runtime} WORKERS=${p.workers}`).join(", ")
    }; ${WAIT_S} s after listening, then ${MEASURE_S} s measured, ${
      ONE_AT_A_TIME ? "one server at a time" : "every server at once"
    }; load average ${loadAverage()}`,
  );
  const rows: Row[] = [];
  const batches = ONE_AT_A_TIME ? plan.map((p) => [p]) : [plan];
  for (const batch of batches) {
    const servers: Array<{ server: Server; workers: number }> = [];
    try {
      for (const { runtime, workers } of batch) servers.push({ server: await start(runtime, workers), workers });
      rows.push(...await measure(servers));
    } finally {
      await Promise.all(servers.map(({ server }) => server.stop()));
    }
  }
  console.log("");
  console.log("| runtime | WORKERS | process | CPU over the window | % of one core | target 0.2% |");
  console.log("|---|---:|---|---:|---:|---|");
  for (const row of rows) {
    const met = row.percent <= TARGET_PERCENT ? "met" : "**missed**";
    console.log(`| ${row.runtime} | ${row.workers} | ${row.role} | ${row.cpuMs.toFixed(0)} ms | ${row.percent.toFixed(3)}% | ${met} |`);
  }
  console.log(`\n${JSON.stringify({ measureS: MEASURE_S, waitS: WAIT_S, loadAverage: loadAverage(), rows })}`);
}

await main();
