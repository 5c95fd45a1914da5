/** Throughput and latency of `GET /`: raw server, bare Hono and template, a fresh process for every measurement. */
import type { Runtime } from "../../src/policy/types.ts";
import { DURATION_S, type Kind, KINDS, ROUNDS, WARMUP_S } from "../_config.ts";
import { fmt, log } from "../_format.ts";
import { type Load, load } from "../_load.ts";
import { cpuMs } from "../_proc.ts";
import { startServer } from "../_servers.ts";
import { median, rotated } from "../_stats.ts";

export interface ThroughputRow {
  runtime: Runtime;
  kind: Kind;
  engine: string;
  rounds: Array<Load & { cpuMs: number; perCpuS: number }>;
  medianRps: number;
  /** Requests per second of the server's own CPU time (user + system, all its threads). */
  medianPerCpuS: number;
  medianP50Ms: number;
  medianP99Ms: number;
}

export async function throughput(runtime: Runtime): Promise<ThroughputRow[]> {
  const rounds = new Map<Kind, ThroughputRow["rounds"]>(KINDS.map((k) => [k, []]));
  const engines = new Map<Kind, string>();
  for (let round = 1; round <= ROUNDS; round++) {
    // Each round starts with a different server, so none always follows the same one.
    for (const kind of rotated(KINDS, round)) {
      // A fresh process for every measurement: with three Node servers kept alive on one core,
      // whichever was started third measured ~0.8x of an identical one started second (bare Hono
      // in both places, 5 rounds); fresh processes measure identical servers alike.
      const server = await startServer(runtime, kind);
      try {
        engines.set(kind, server.engine);
        await load(server.url, WARMUP_S);
        const cpuBefore = cpuMs(server.pid);
        const result = await load(server.url, DURATION_S);
        const cpu = cpuMs(server.pid) - cpuBefore;
        rounds.get(kind)!.push({ ...result, cpuMs: cpu, perCpuS: result.requests / (cpu / 1_000) });
        log(
          `  ${runtime} round ${round} ${kind.padEnd(8)} ${fmt(result.rps).padStart(7)} req/s  ${
            fmt(result.requests / (cpu / 1_000)).padStart(7)
          } req/CPU-s  p50 ${result.p50Ms.toFixed(2)} ms  p99 ${result.p99Ms.toFixed(2)} ms${
            result.errors ? `  errors ${result.errors}` : ""
          }`,
        );
      } finally {
        await server.stop();
      }
    }
  }
  return KINDS.map((kind) => {
    const results = rounds.get(kind)!;
    return {
      runtime,
      kind,
      engine: engines.get(kind) ?? "",
      rounds: results,
      medianRps: median(results.map((r) => r.rps)),
      medianPerCpuS: median(results.map((r) => r.perCpuS)),
      medianP50Ms: median(results.map((r) => r.p50Ms)),
      medianP99Ms: median(results.map((r) => r.p99Ms)),
    };
  });
}
