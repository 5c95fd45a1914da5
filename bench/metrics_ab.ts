/**
 * `bun bench/metrics_ab.ts [commit]`: what the metrics cost, side by side with the template at
 * `commit` (default HEAD; exported with `git archive` into a temporary directory, node_modules
 * shared), on each runtime's default engine. Not part of `npm test` or `npm run bench`.
 *
 * 1. throughput: `GET /` at saturation (wrk, 64 connections) for bare Hono, the template at
 *    `commit` ("before") and the template in this tree ("after"): a fresh process for every
 *    measurement, the server on CPU 0 and wrk on CPU 1 as in the throughput phase, the order
 *    rotating each round. Medians of the per-round ratios, requests per second and per CPU-second.
 * 2. rate: the same three at a fixed BENCH_RATE requests per second (autocannon -R, 16
 *    connections, on CPU 1): the server's CPU time per request. A server below saturation sleeps
 *    between requests, so what runs in the background shows here, and contention on the machine
 *    moves CPU time per request far less than it moves a saturated server's throughput.
 * 3. scrape: the scrape phase of `npm run bench` (bench/_phases/scrape.ts) on each side, twice,
 *    alternating which goes first: first scrapes (settled and at once) over BENCH_SCRAPE_STARTS
 *    fresh starts, the median of BENCH_SCRAPES sequential scrapes, the p99 with WORKERS=2; the
 *    median of each figure over both rounds, with its range.
 * 4. idle: each template's CPU time over IDLE_S seconds with no request, two rounds alternating.
 *
 * Environment: BENCH_AB_ONLY (throughput,rate,scrape,idle), BENCH_ROUNDS (6), BENCH_DURATION_S (2),
 * BENCH_WARMUP_S (2), BENCH_RUNTIMES (node,bun,deno), BENCH_RATE (4000), BENCH_SCRAPE_STARTS (7), BENCH_SCRAPES (200).
 */
import { rmSync } from "node:fs";
import type { Runtime } from "../src/policy/types.ts";
import { DURATION_S, ROUNDS, RUNTIMES, WARMUP_S } from "./_config.ts";
import { exportCommit, templateCommand } from "./_coscheduled.ts";
import { fmt, log } from "./_format.ts";
import { load } from "./_load.ts";
import { AUTOCANNON, LOAD_CPU, NODE } from "./_machine.ts";
import { cpuMs } from "./_proc.ts";
import { killAll, killChildrenOnExit, run } from "./_process.ts";
import { describeScrape, scrapePhase, type ScrapeRow } from "./_phases/scrape.ts";
import { COMMANDS, type Server, startCommand } from "./_servers.ts";
import { median, percentile, rotated } from "./_stats.ts";

const COMMIT = process.argv[2] ?? "HEAD";
const ONLY = new Set((process.env.BENCH_AB_ONLY ?? "throughput,rate,scrape,idle").split(",").map((s) => s.trim()));
const RATE = Number(process.env.BENCH_RATE ?? 4_000);
/** How long the rate phase measures, after a 2 s warm-up at the same rate. */
const RATE_S = 6;
/** How long the idle phase measures each template. */
const IDLE_S = 10;
const SIDES = ["hono", "before", "after"] as const;
type Side = (typeof SIDES)[number];

/** Requests autocannon made at `rate` per second for `seconds`, on the load core. */
async function atRate(url: string, rate: number, seconds: number): Promise<number> {
  const out = await run(
    [...LOAD_CPU, NODE, AUTOCANNON, "-c", "16", "-d", String(seconds), "-R", String(rate), "--json", `${url}/`],
    seconds * 1_000 + 15_000,
  );
  return (JSON.parse(out.slice(out.indexOf("{"))) as { requests: { total: number } }).requests.total;
}

/** The median of the per-round ratios a / b, and the middle half of them. */
function ratio(a: number[], b: number[]): string {
  const ratios = a.map((x, i) => x / b[i]!);
  return `${median(ratios).toFixed(3)} (${percentile(ratios, 25).toFixed(2)}-${percentile(ratios, 75).toFixed(2)})`;
}

async function main(): Promise<void> {
  killChildrenOnExit();
  const tree = exportCommit(COMMIT, "metrics-ab-");
  const commands = (runtime: Runtime): Record<Side, string[]> => ({
    hono: COMMANDS[runtime].hono,
    before: templateCommand(runtime, tree),
    after: COMMANDS[runtime].template,
  });
  const start = (runtime: Runtime, side: Side, env: Record<string, string> = {}, cpu?: string[]) =>
    startCommand(runtime, side === "hono" ? "hono" : "template", commands(runtime)[side], env, undefined, cpu);
  /** Runs `measure` on a fresh server of each side, rounds rotating; the results by side. */
  const rounds = async <T>(runtime: Runtime, sides: readonly Side[], count: number, measure: (server: Server) => Promise<T>) => {
    const results = new Map<Side, T[]>(sides.map((side) => [side, []]));
    for (let round = 1; round <= count; round++) {
      for (const side of rotated(sides, round)) {
        const server = await start(runtime, side);
        try {
          const result = await measure(server);
          results.get(side)!.push(result);
          log(`  ${runtime} round ${round} ${side.padEnd(6)} ${JSON.stringify(result)}`);
        } finally {
          await server.stop();
        }
      }
    }
    return results;
  };
  const tables = { throughput: [] as string[], rate: [] as string[], scrape: [] as string[], idle: [] as string[] };
  log(`before: ${COMMIT} in ${tree}; after: this tree; phases ${[...ONLY].join(",")}`);
  try {
    for (const runtime of RUNTIMES) {
      if (ONLY.has("throughput")) {
        const r = await rounds(runtime, SIDES, ROUNDS, async (server) => {
          await load(server.url, WARMUP_S);
          const cpuBefore = cpuMs(server.pid);
          const result = await load(server.url, DURATION_S);
          return { rps: Math.round(result.rps), perCpuS: Math.round(result.requests / ((cpuMs(server.pid) - cpuBefore) / 1_000)) };
        });
        const of = (side: Side, key: "rps" | "perCpuS") => r.get(side)!.map((x) => x[key]);
        tables.throughput.push(
          `| ${runtime} | ${fmt(median(of("hono", "rps")))} | ${fmt(median(of("before", "rps")))} | ${fmt(median(of("after", "rps")))} | ` +
            `${ratio(of("before", "rps"), of("hono", "rps"))} | ${ratio(of("after", "rps"), of("hono", "rps"))} | ` +
            `${ratio(of("before", "perCpuS"), of("hono", "perCpuS"))} | ${ratio(of("after", "perCpuS"), of("hono", "perCpuS"))} | ` +
            `${ratio(of("after", "rps"), of("before", "rps"))} | ${ratio(of("after", "perCpuS"), of("before", "perCpuS"))} |`,
        );
        log(tables.throughput.at(-1)!);
      }
      if (ONLY.has("rate")) {
        const r = await rounds(runtime, SIDES, ROUNDS, async (server) => {
          await atRate(server.url, RATE, 2);
          const cpuBefore = cpuMs(server.pid);
          const requests = await atRate(server.url, RATE, RATE_S);
          return { cpuUsPerRequest: Number((((cpuMs(server.pid) - cpuBefore) * 1_000) / requests).toFixed(2)) };
        });
        const of = (side: Side) => r.get(side)!.map((x) => x.cpuUsPerRequest);
        tables.rate.push(
          `| ${runtime} | ${fmt(median(of("hono")), 1)} | ${fmt(median(of("before")), 1)} | ${fmt(median(of("after")), 1)} | ` +
            `${ratio(of("before"), of("hono"))} | ${ratio(of("after"), of("hono"))} | ${ratio(of("after"), of("before"))} |`,
        );
        log(tables.rate.at(-1)!);
      }
      if (ONLY.has("scrape")) {
        // The scrape phase of `npm run bench` on each side, twice, alternating which goes first.
        const r = new Map<"before" | "after", ScrapeRow[]>([["before", []], ["after", []]]);
        for (let round = 1; round <= 2; round++) {
          for (const side of rotated(["before", "after"] as const, round)) {
            const row = await scrapePhase(runtime, commands(runtime)[side]);
            r.get(side)!.push(row);
            log(`  ${runtime} round ${round} ${side.padEnd(6)} ${describeScrape(row)}`);
          }
        }
        const cell = (side: "before" | "after", figure: (row: ScrapeRow) => number[]) => {
          const all = r.get(side)!.flatMap(figure);
          return `${fmt(median(all), 1)} (${fmt(Math.min(...all), 1)}-${fmt(Math.max(...all), 1)})`;
        };
        const figures: Array<(row: ScrapeRow) => number[]> = [
          (row) => row.firstMs,
          (row) => row.atOnceMs,
          (row) => [row.medianMs],
          (row) => [row.workers.p99Ms],
        ];
        tables.scrape.push(`| ${runtime} | ${figures.map((f) => `${cell("before", f)} | ${cell("after", f)}`).join(" | ")} |`);
        log(tables.scrape.at(-1)!);
      }
      if (ONLY.has("idle")) {
        const r = await rounds(runtime, ["before", "after"], 2, async (server) => {
          await Bun.sleep(2_000);
          const cpuBefore = cpuMs(server.pid);
          await Bun.sleep(IDLE_S * 1_000);
          return { cpuMsPerS: (cpuMs(server.pid) - cpuBefore) / IDLE_S };
        });
        const of = (side: Side) => median(r.get(side)!.map((x) => x.cpuMsPerS));
        tables.idle.push(`| ${runtime} | ${fmt(of("before"), 1)} | ${fmt(of("after"), 1)} |`);
        log(tables.idle.at(-1)!);
      }
    }
  } finally {
    killAll();
    rmSync(tree, { recursive: true, force: true });
  }
  const table = (header: string, rows: string[]) => (rows.length ? ["", header, header.replace(/[^|]+/g, "---"), ...rows] : []);
  console.log(
    [
      `before: ${COMMIT}, after: this tree; ${ROUNDS} rounds; medians, per-round ratios with their 25th-75th percentiles`,
      ...table(
        `| runtime | bare Hono req/s | before req/s | after req/s | before / Hono | after / Hono | before / Hono per CPU-s | after / Hono per CPU-s | after / before | after / before per CPU-s |`,
        tables.throughput,
      ),
      ...table(
        `| runtime | CPU µs/request at ${RATE}/s: bare Hono | before | after | before / Hono | after / Hono | after / before |`,
        tables.rate,
      ),
      ...table(
        `| runtime | first scrape ms, settled: before | after | at once: before | after | sequential median: before | after | WORKERS=2 p99: before | after |`,
        tables.scrape,
      ),
      ...table(`| runtime | idle CPU-ms per second: before | after |`, tables.idle),
    ].join("\n"),
  );
}

await main();
