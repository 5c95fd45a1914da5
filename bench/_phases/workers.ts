/**
 * Several workers on one port: throughput of the template with WORKERS=1 and WORKERS=2, side by
 * side, and requests per CPU-second of every process that serves (the supervisor and its workers).
 *
 * Neither the servers nor the load generator are pinned here. Pinned to CPU 0 as in the
 * throughput phase, two workers would share one core and the phase would measure that core twice;
 * pinning the workers to a core each would put one of them on wrk's core. Unpinned, both servers
 * compete with wrk for the same two cores under the same scheduler, so the comparison is even,
 * and the report says how much of the machine each side used.
 */
import type { Runtime } from "../../src/policy/types.ts";
import { DURATION_S, WARMUP_S, WORKER_COUNTS, WORKERS_ROUNDS } from "../_config.ts";
import { fmt, log } from "../_format.ts";
import { type Load, load } from "../_load.ts";
import { cpuMs, loadAverage, machineBusyMs } from "../_proc.ts";
import { startUnpinnedServer } from "../_servers.ts";
import { median, rotated } from "../_stats.ts";

export interface WorkersRound extends Load {
  round: number;
  /** CPU time of every serving process over the measurement (supervisor + workers), in ms. */
  cpuMs: number;
  /** The same, per process: the supervisor first with WORKERS above 1, then each worker. */
  cpuMsPerProcess: number[];
  /** Requests served per second of that CPU time. */
  perCpuS: number;
  /** Cores the server used: its CPU time over the measurement's wall time. */
  serverCores: number;
  /** Cores the whole machine used (server, wrk, and whatever else runs on it), from /proc/stat. */
  machineCores: number;
  /** 1-minute load average just before the measurement. */
  loadAverage: number;
}

export interface WorkersRow {
  runtime: Runtime;
  workers: number;
  engine: string;
  rounds: WorkersRound[];
  medianRps: number;
  medianPerCpuS: number;
  medianP99Ms: number;
  medianServerCores: number;
  medianMachineCores: number;
}

export async function workersThroughput(runtime: Runtime): Promise<WorkersRow[]> {
  const rounds = new Map<number, WorkersRound[]>(WORKER_COUNTS.map((n) => [n, []]));
  const engines = new Map<number, string>();
  for (let round = 1; round <= WORKERS_ROUNDS; round++) {
    // Each round starts with the other one, so neither always follows the same one.
    for (const workers of rotated(WORKER_COUNTS, round)) {
      // A fresh server for every measurement, as in the throughput phase.
      const server = await startUnpinnedServer(runtime, "template", { WORKERS: String(workers) });
      try {
        const expected = workers > 1 ? workers + 1 : 1;
        if (server.pids.length !== expected) {
          throw new Error(`WORKERS=${workers}: the listening event names ${server.pids.length} processes, expected ${expected}`);
        }
        engines.set(workers, server.engine);
        await load(server.url, WARMUP_S, []);
        const average = loadAverage();
        const before = server.pids.map(cpuMs);
        const machineBefore = machineBusyMs();
        const started = performance.now();
        const result = await load(server.url, DURATION_S, []);
        const wallMs = performance.now() - started;
        // Fails (ENOENT) when a worker died during the measurement: its restart would not be counted.
        const perProcess = server.pids.map((pid, i) => cpuMs(pid) - before[i]!);
        const machine = machineBusyMs() - machineBefore;
        const cpu = perProcess.reduce((sum, ms) => sum + ms, 0);
        const row: WorkersRound = {
          ...result,
          round,
          cpuMs: cpu,
          cpuMsPerProcess: perProcess,
          perCpuS: result.requests / (cpu / 1_000),
          serverCores: cpu / wallMs,
          machineCores: machine / wallMs,
          loadAverage: average,
        };
        rounds.get(workers)!.push(row);
        log(
          `  ${runtime} round ${round} WORKERS=${workers} ${fmt(row.rps).padStart(7)} req/s  ${
            fmt(row.perCpuS).padStart(7)
          } req/CPU-s  server ${fmt(row.serverCores, 2)} cores (${perProcess.map((ms) => fmt(ms)).join(" + ")} ms)  machine ${
            fmt(row.machineCores, 2)
          } cores  p99 ${row.p99Ms.toFixed(2)} ms  load ${average.toFixed(2)}${result.errors ? `  errors ${result.errors}` : ""}`,
        );
      } finally {
        await server.stop();
      }
    }
  }
  return WORKER_COUNTS.map((workers) => {
    const results = rounds.get(workers)!;
    return {
      runtime,
      workers,
      engine: engines.get(workers) ?? "",
      rounds: results,
      medianRps: median(results.map((r) => r.rps)),
      medianPerCpuS: median(results.map((r) => r.perCpuS)),
      medianP99Ms: median(results.map((r) => r.p99Ms)),
      medianServerCores: median(results.map((r) => r.serverCores)),
      medianMachineCores: median(results.map((r) => r.machineCores)),
    };
  });
}
