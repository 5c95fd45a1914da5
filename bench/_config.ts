/** The benchmark's knobs (BENCH_* environment variables), its constants and its targets. */
import { ROOT } from "../harness/process.ts";
import type { Engine, Runtime } from "../src/policy/types.ts";

export const BENCH = `${ROOT}bench/`;
export const RESULTS = `${BENCH}results/`;

/** The engine each runtime's template serves with, unless told otherwise. */
export const DEFAULT_ENGINE = { node: "node-http", bun: "bun-serve", deno: "deno-per-connection" } as const satisfies Record<
  Runtime,
  Engine
>;
/** What the throughput phase compares: the runtime's own server, bare Hono, the template. */
export type Kind = "raw" | "hono" | "template";
/** What the idle phase measures: the raw server and the template, and on Deno its bare per-connection server too. */
export type IdleKind = "raw" | "engine" | "template";
/** What the WebSocket phase compares: the runtime's bare WebSocket echo server and the template (the example app's /ws). */
export type WsKind = "ws-bare" | "ws-template";

export const RUNTIMES = (process.env.BENCH_RUNTIMES ?? "node,bun,deno").split(",").map((s) => s.trim()) as Runtime[];
export const KINDS: Kind[] = ["raw", "hono", "template"];
export const KIND_LABEL: Record<Kind | IdleKind, string> = {
  raw: "raw runtime server",
  hono: "bare Hono",
  template: "template",
  engine: "bare per-connection server",
};

export const ROUNDS = intEnv("BENCH_ROUNDS", 6);
export const DURATION_S = intEnv("BENCH_DURATION_S", 2);
export const WARMUP_S = intEnv("BENCH_WARMUP_S", 2);
export const CONNECTIONS = 64;
export const IDLE_CONNECTIONS = intEnv("BENCH_IDLE_CONNECTIONS", 10_000);
export const IDLE_BATCH = 500;
export const IDLE_TIMEOUT_MS = 8_000;
/** How long after the last response the idle servers' memory is read. */
export const SETTLE_MS = 3_000;
export const REAP_CONNECTIONS = intEnv("BENCH_REAP_CONNECTIONS", 1_000);
export const REAP_TIMEOUT_MS = 4_000;
/** Rounds of the idle-capacity and reap phases: every figure they report is a median over these. */
export const IDLE_ROUNDS = intEnv("BENCH_IDLE_ROUNDS", 3);
export const WANTED_NOFILE = 65_536;
export const SLOWLORIS_CONNECTIONS = intEnv("BENCH_SLOWLORIS_CONNECTIONS", 1_000);
export const SLOWLORIS_HEADERS_TIMEOUT_MS = 5_000;
export const SLOWLORIS_MEASURE_S = 3;
export const CHURN_CYCLES = intEnv("BENCH_CHURN_CYCLES", 80_000);
export const CHURN_PARALLEL = 16;
/** Churn leaves memory flat when the RSS lows of the last 10,000 cycles are at most this above the 10,000 before. */
export const CHURN_FLAT_MIB = 16;
/** Rounds of the cold-start phase: every start time it reports is a median over these. */
export const COLDSTART_ROUNDS = intEnv("BENCH_COLDSTART_ROUNDS", 7);
/** Rounds of the workers phase: WORKERS=1 and WORKERS=2 of the template, alternating, per runtime. */
export const WORKERS_ROUNDS = intEnv("BENCH_WORKERS_ROUNDS", 4);
/** The WORKERS values the workers phase compares. */
export const WORKER_COUNTS = [1, 2] as const;
/** WebSocket phase: idle WebSockets held per server (memory, ping CPU). */
export const WS_CONNECTIONS = intEnv("BENCH_WS_CONNECTIONS", 10_000);
/**
 * WebSocket phase: handshakes in flight at once while the held sockets open. 100, not the idle
 * phase's 500: with 500 at once, deno-per-connection closed 8-16% of the opened sockets (1006)
 * within seconds, which Deno.serve did not (2026-12-03).
 */
export const WS_BATCH = 100;
/** WebSocket phase: clients of the echo loop, each sending one message and awaiting its echo. */
export const WS_CLIENTS = 64;
/** WebSocket phase: bytes of each echoed text message. */
export const WS_MESSAGE_BYTES = 32;
/** WebSocket phase: co-scheduled echo rounds, and seconds measured in each (after one warm-up round). */
export const WS_ROUNDS = intEnv("BENCH_WS_ROUNDS", 5);
export const WS_DURATION_S = intEnv("BENCH_WS_DURATION_S", 4);
/** WebSocket phase: seconds over which the CPU time of servers holding idle WebSockets is read. */
export const WS_PING_CPU_S = intEnv("BENCH_WS_PING_CPU_S", 60);
/** Throughput phase, co-scheduled: rounds, and seconds measured in each, after one warm-up of WARMUP_S. */
export const CO_ROUNDS = intEnv("BENCH_CO_ROUNDS", 7);
export const CO_DURATION_S = intEnv("BENCH_CO_DURATION_S", 4);
/** Scrape phase: fresh starts whose first scrape is timed, and sequential scrapes per server. */
export const SCRAPE_STARTS = intEnv("BENCH_SCRAPE_STARTS", 7);
export const SCRAPES = intEnv("BENCH_SCRAPES", 200);
export const PHASES = ["throughput", "idle", "reap", "slowloris", "churn", "coldstart", "workers", "websocket", "scrape"];
export const ONLY = new Set((process.env.BENCH_ONLY ?? PHASES.join(",")).split(",").map((s) => s.trim()));

/** Targets: template throughput vs bare Hono, idle memory vs raw, reap lateness bounds, start time vs bare Hono. */
export const TARGETS = {
  /** Template / bare Hono for `GET /`, co-scheduled: at least (issue #21, clause 2). */
  throughputVsHono: { node: 0.97, bun: 0.97, deno: 0.92 } as Record<Runtime, number>,
  idleMemoryVsRaw: { node: 1.1, bun: 1.1, deno: 1.5 } as Record<Runtime, number>,
  reapLateMs: { node: 1_000, bun: 4_000, deno: 1_000 } as Record<Runtime, number>,
  reapEarlyMs: -100,
  /** The template run directly starts at most this much later than bare Hono on the same runtime (Node only: no loader). */
  coldStartVsHonoMs: { node: 50 } as Partial<Record<Runtime, number>>,
  /** Memory per idle WebSocket, template / the bare WebSocket server: at most. */
  wsMemoryVsBare: 1.2,
  /** Echo messages per second with WS_CLIENTS clients, template / the bare WebSocket server: at least. */
  wsEchoVsBare: 0.9,
  /** A `/metrics` scrape (issue #21): the first after start, the median, and the p99 with WORKERS=2, under these ms. */
  scrape: { firstMs: 15, medianMs: 5, workersP99Ms: 20 },
};

function intEnv(name: string, fallback: number): number {
  const value = process.env[name];
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
}
