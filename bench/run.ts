/**
 * `bun bench/run.ts`: the template against the runtime's own server and a bare Hono app, on
 * Node, Bun and Deno, on 127.0.0.1.
 *
 * 1. Throughput of `GET /`, co-scheduled for the headline ratios: the template and bare Hono, then
 *    the template and the raw server, each pair pinned to one core together and loaded at once by
 *    two wrk (BENCH_CO_ROUNDS rounds of BENCH_CO_DURATION_S; bench/_coscheduled.ts). Then, as
 *    context, each server's own throughput and latency (wrk, or autocannon when wrk is missing or
 *    BENCH_LOAD=autocannon), ROUNDS rounds alternating raw, bare Hono and template per runtime.
 * 2. Idle capacity: 10,000 keep-alive connections left idle after one request each: the server's
 *    RSS and fds before and after; for the template (IDLE_TIMEOUT=8s), when they are all closed
 *    and whether its fds return to baseline. On Deno also its bare per-connection server, which
 *    splits the template's cost into Deno's and ours. BENCH_IDLE_ROUNDS rounds.
 * 3. Reap precision: 1,000 idle connections, IDLE_TIMEOUT=4s, close time minus response time
 *    minus IDLE_TIMEOUT. BENCH_IDLE_ROUNDS rounds.
 * 4. Slowloris flood: latency of well-behaved clients alone and while 1,000 connections trickle
 *    header bytes; every trickler closed within the head deadline's window.
 * 5. Connection churn: 80,000 cycles of connect, request, close; fds back to baseline, RSS flat.
 * 6. Cold start: from spawn to the `listening` line, for the template run directly, the template
 *    through its npm script, and bare Hono. BENCH_COLDSTART_ROUNDS rounds.
 * 7. Workers: the template's throughput with WORKERS=1 and WORKERS=2 side by side, and requests
 *    per CPU-second of the supervisor and all its workers; neither servers nor wrk pinned (two
 *    workers on one core would measure the core). BENCH_WORKERS_ROUNDS rounds.
 * 8. WebSockets: the template's `GET /ws` beside the runtime's bare WebSocket server: RSS per idle
 *    WebSocket (BENCH_WS_CONNECTIONS held), the CPU a server holding them spends with and without
 *    pings over BENCH_WS_PING_CPU_S, and echo messages per second with 64 clients, co-scheduled
 *    (BENCH_WS_ROUNDS rounds of BENCH_WS_DURATION_S).
 * 9. Scrapes: the template's first `GET /metrics` after start over BENCH_SCRAPE_STARTS fresh
 *    starts, then BENCH_SCRAPES sequential scrapes of a server that has served, with one process
 *    and with WORKERS=2.
 *
 * Writes bench/results/bench.{md,json}, bench/results/throughput.svg, and copies the markdown
 * and the chart to bench/RESULTS.md and bench/throughput.svg. The machine is small and shared:
 * only ratios measured side by side in one run are compared, and every figure is a median.
 *
 * Environment: BENCH_LOAD=wrk|autocannon, BENCH_ROUNDS (default 6), BENCH_DURATION_S (2),
 * BENCH_WARMUP_S (2; the template's larger code needs more than 1 s to reach its steady state),
 * BENCH_RUNTIMES (node,bun,deno), BENCH_IDLE_ROUNDS (3: rounds of the idle-capacity and reap phases),
 * BENCH_IDLE_CONNECTIONS (10000), BENCH_REAP_CONNECTIONS (1000), BENCH_SLOWLORIS_CONNECTIONS (1000),
 * BENCH_CHURN_CYCLES (80000), BENCH_COLDSTART_ROUNDS (7), BENCH_WORKERS_ROUNDS (4),
 * BENCH_WS_CONNECTIONS (10000), BENCH_WS_ROUNDS (5), BENCH_WS_DURATION_S (4), BENCH_WS_PING_CPU_S (60),
 * BENCH_SCRAPE_STARTS (7), BENCH_SCRAPES (200), BENCH_CO_ROUNDS (7), BENCH_CO_DURATION_S (4),
 * BENCH_ONLY=throughput,idle,reap,slowloris,churn,coldstart,workers,websocket,scrape (a subset runs only those
 * phases and leaves the committed results alone).
 */
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import type { Runtime } from "../src/policy/types.ts";
import { chart } from "./_chart.ts";
import {
  BENCH,
  CO_DURATION_S,
  CO_ROUNDS,
  COLDSTART_ROUNDS,
  CONNECTIONS,
  DURATION_S,
  IDLE_ROUNDS,
  ONLY,
  PHASES,
  RESULTS,
  ROUNDS,
  RUNTIMES,
  WARMUP_S,
  WORKERS_ROUNDS,
} from "./_config.ts";
import { fmt, log } from "./_format.ts";
import { machine, nofileLimit } from "./_machine.ts";
import { coscheduledUnavailable } from "./_coscheduled.ts";
import { connectionChurn } from "./_phases/churn.ts";
import { coscheduled } from "./_phases/coscheduled.ts";
import { coldStart, type ColdStartRow } from "./_phases/coldstart.ts";
import { idleCapacity, idleKinds } from "./_phases/idle.ts";
import { reapPrecision } from "./_phases/reap.ts";
import { describeScrape, scrapePhase } from "./_phases/scrape.ts";
import { slowlorisFlood } from "./_phases/slowloris.ts";
import { throughput } from "./_phases/throughput.ts";
import { describeWebSocket, websocketPhase } from "./_phases/websocket.ts";
import { workersThroughput } from "./_phases/workers.ts";
import { killAll, killChildrenOnExit } from "./_process.ts";
import { markdown, type Results } from "./_report.ts";
import { rotated } from "./_stats.ts";

async function main(): Promise<void> {
  killChildrenOnExit();
  const started = Date.now();
  const meta = machine();
  const results: Results = {
    meta: {
      ...meta,
      rounds: ROUNDS,
      idleRounds: IDLE_ROUNDS,
      coldStartRounds: COLDSTART_ROUNDS,
      workersRounds: WORKERS_ROUNDS,
      coscheduledRounds: CO_ROUNDS,
      coscheduledDurationS: CO_DURATION_S,
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      connections: CONNECTIONS,
    },
    throughput: [],
    coscheduled: [],
    idle: [],
    reap: [],
    slowloris: [],
    churn: [],
    coldStart: [],
    workers: [],
    websocket: [],
    scrape: [],
    errors: [],
  };
  log(`generator: ${meta.generator}; ${meta.nproc} cores, ${meta.cpuModel}; node ${meta.node}, bun ${meta.bun}, ${meta.deno}`);
  /** Runs one measurement; a failure is logged and recorded, and the bench goes on. */
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (error) {
      const message = `${what}: ${(error as Error).message}`;
      log(`ERROR ${message}`);
      results.errors.push(message);
      return undefined;
    }
  };
  /** One row per runtime and round for a phase, logged as it comes; a failure is recorded and the next goes on. */
  const perRuntime = async <T>(
    phase: string,
    title: string,
    rounds: number,
    measure: (runtime: Runtime, round: number) => Promise<T>,
    rows: T[],
    describe: (row: T) => string,
  ) => {
    if (!ONLY.has(phase)) return;
    for (const runtime of RUNTIMES) {
      for (let round = 1; round <= rounds; round++) {
        const which = rounds > 1 ? `${runtime} round ${round}` : runtime;
        log(`${title}: ${which}`);
        const row = await attempt(`${phase} ${which}`, () => measure(runtime, round));
        if (row === undefined) continue;
        rows.push(row);
        log(`  ${describe(row)}`);
      }
    }
  };
  try {
    if (ONLY.has("throughput")) {
      const unavailable = coscheduledUnavailable();
      if (unavailable) {
        results.coscheduledSkipped = unavailable;
        log(`throughput, co-scheduled: not measured: ${unavailable}`);
      }
      for (const runtime of unavailable ? [] : RUNTIMES) {
        log(`throughput, co-scheduled: ${runtime}`);
        const rows = (await attempt(`throughput co-scheduled ${runtime}`, () => coscheduled(runtime))) ?? [];
        results.coscheduled.push(...rows);
        for (const row of rows) {
          log(
            `  ${runtime} template / ${row.other}: median ${row.medianRatio.toFixed(3)} (${row.minRatio.toFixed(3)}-${
              row.maxRatio.toFixed(3)
            })`,
          );
        }
      }
      for (const runtime of RUNTIMES) {
        log(`throughput, sequential: ${runtime}`);
        results.throughput.push(...((await attempt(`throughput ${runtime}`, () => throughput(runtime))) ?? []));
      }
    }
    await perRuntime(
      "reap",
      "reap precision",
      IDLE_ROUNDS,
      reapPrecision,
      results.reap,
      (row) => `${row.closed}/${row.connections} closed; late min ${row.minMs} median ${row.medianMs} p99 ${row.p99Ms} max ${row.maxMs} ms`,
    );
    if (ONLY.has("idle")) {
      const { limit, note } = nofileLimit();
      results.meta.nofile = note;
      for (const runtime of RUNTIMES) {
        for (let round = 1; round <= IDLE_ROUNDS; round++) {
          // Each round starts with a different server, so none always measures a machine another just warmed.
          for (const kind of rotated(idleKinds(runtime), round)) {
            log(`idle capacity: ${runtime} round ${round} ${kind}`);
            const row = await attempt(`idle ${runtime} round ${round} ${kind}`, () => idleCapacity(runtime, kind, limit, round));
            if (row) {
              results.idle.push(row);
              log(
                `  held ${row.heldAtMeasurement} (opened in ${row.openMs} ms); RSS +${
                  fmt(row.rssPerConnectionKb, 2)
                } KB/conn; fds ${row.fdsBefore} -> ${row.fdsAfter} -> ${row.fdsAfterClose}` +
                  (row.allClosedAfterTimeoutMs === null
                    ? ""
                    : `; all closed ${fmt(row.allClosedAfterTimeoutMs)} ms after IDLE_TIMEOUT, ${row.stillOpen} still open`),
              );
            }
          }
        }
      }
    }
    await perRuntime(
      "slowloris",
      "slowloris flood",
      1,
      slowlorisFlood,
      results.slowloris,
      (row) =>
        `p99 ${fmt(row.baseline.p99Ms, 2)} ms -> ${fmt(row.flood.p99Ms, 2)} ms; ${row.tricklers.closed}/${row.tricklers.opened} closed in ${
          fmt(row.tricklers.minLifetimeMs)
        }-${fmt(row.tricklers.maxLifetimeMs)} ms`,
    );
    await perRuntime(
      "churn",
      "connection churn",
      1,
      connectionChurn,
      results.churn,
      (row) =>
        `${fmt(row.cyclesPerSecond)} cycles/s, ${row.errors} errors; fds ${row.samples[0]!.fds} -> ${row.fdsAfterSettle}; RSS ${
          fmt(row.samples[0]!.rssKb / 1024, 1)
        } -> ${fmt(row.samples.at(-1)!.rssKb / 1024, 1)} MiB`,
    );
    const coldStarts: ColdStartRow[][] = [];
    await perRuntime(
      "coldstart",
      "cold start",
      1,
      coldStart,
      coldStarts,
      (rows) => rows.map((row) => `${row.kind} ${fmt(row.medianMs, 1)} ms`).join(", ") + " (medians)",
    );
    results.coldStart = coldStarts.flat();
    if (ONLY.has("workers")) {
      for (const runtime of RUNTIMES) {
        log(`workers: ${runtime} (servers and wrk not pinned)`);
        results.workers.push(...((await attempt(`workers ${runtime}`, () => workersThroughput(runtime))) ?? []));
      }
    }
    if (ONLY.has("websocket")) {
      const { limit, note } = nofileLimit();
      results.meta.nofile = note;
      await perRuntime("websocket", "websocket", 1, (runtime) => websocketPhase(runtime, limit), results.websocket, describeWebSocket);
    }
    await perRuntime("scrape", "scrape", 1, (runtime) => scrapePhase(runtime), results.scrape, describeScrape);
  } finally {
    killAll();
  }
  results.meta.totalSeconds = Math.round((Date.now() - started) / 1000);
  const md = markdown(results);
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(`${RESULTS}bench.json`, JSON.stringify(results, null, 1));
  writeFileSync(`${RESULTS}bench.md`, md);
  if (results.throughput.length > 0) writeFileSync(`${RESULTS}throughput.svg`, chart(results.throughput, meta));
  console.log(md);
  log(`wrote ${RESULTS}bench.md, bench.json and throughput.svg`);
  // Only a complete run replaces the committed copies.
  const complete = PHASES.every((phase) => ONLY.has(phase)) && results.throughput.length > 0;
  if (complete) {
    copyFileSync(`${RESULTS}bench.md`, `${BENCH}RESULTS.md`);
    copyFileSync(`${RESULTS}throughput.svg`, `${BENCH}throughput.svg`);
    log(`copied them to ${BENCH}RESULTS.md and ${BENCH}throughput.svg`);
  }
  if (results.errors.length > 0) process.exitCode = 1;
}

await main();
