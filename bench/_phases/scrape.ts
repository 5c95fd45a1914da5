/**
 * What a `/metrics` scrape costs, on each runtime's default engine with prom-client's default
 * metrics: the first scrape after start, sequential scrapes of a server that has served, and
 * the same with WORKERS=2, where a scrape also gathers the other worker's families.
 *
 * 1. First scrape: SCRAPE_STARTS fresh starts of each of two kinds, alternating (after one start
 *    that is not recorded, as in the cold-start phase), the server on the server core; the first
 *    request each one gets is `GET /metrics`, timed from connecting to the last byte of the body
 *    (bench/_scrape_client.ts). "Settled": sent SETTLED_MS after the `listening` line is read,
 *    as a scraper's first visit lands somewhere in its interval; "at once": sent as soon as it
 *    is read, when the process is still finishing its start.
 * 2. Sequential: the last of those servers, after a second of load on `GET /`, SCRAPES scrapes
 *    10 ms apart on one keep-alive connection.
 * 3. WORKERS=2: the same as 2 on a fresh supervisor and two workers, unpinned (two workers on one
 *    core would measure the core), with the load unpinned too; its settled first scrape is
 *    reported beside it.
 */
import type { Runtime } from "../../src/policy/types.ts";
import { SCRAPE_STARTS, SCRAPES, TARGETS } from "../_config.ts";
import { fmt, log, verdict } from "../_format.ts";
import { load } from "../_load.ts";
import { loadAverage } from "../_proc.ts";
import { openScraper } from "../_scrape_client.ts";
import { COMMANDS, launchCommand, type Server } from "../_servers.ts";
import { median, percentile, rotated } from "../_stats.ts";

/** Pause between sequential scrapes: each finds the server idle, as Prometheus' would. */
const SCRAPE_GAP_MS = 10;
/**
 * How long after `listening` a settled first scrape is sent: past the start's own last work (up to
 * ~150 ms of a runtime's collections and compilations after `listening`, measured from /proc).
 */
export const SETTLED_MS = 300;

export interface ScrapeRow {
  runtime: Runtime;
  engine: string;
  /** One process: the first scrape of each fresh start, sent SETTLED_MS after `listening`, in ms. */
  firstMs: number[];
  firstMedianMs: number;
  firstMaxMs: number;
  /** The same, sent as soon as `listening` is read. */
  atOnceMs: number[];
  atOnceMedianMs: number;
  atOnceMaxMs: number;
  /** One process: sequential scrapes after a second of load. */
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  /** WORKERS=2: the first scrape of one fresh start, then sequential scrapes after a second of load. */
  workers: { firstMs: number; medianMs: number; p99Ms: number; maxMs: number };
  /** 1-minute load average when the phase started on this runtime. */
  loadAverage: number;
}

/** The first scrape of `server`, which has answered nothing yet, `afterMs` after its `listening` was read; in ms. */
async function firstScrape(server: Server, afterMs: number): Promise<number> {
  if (afterMs > 0) await Bun.sleep(afterMs);
  const scraper = await openScraper(server.url);
  scraper.close();
  return scraper.connectedScrapeMs;
}

/** SCRAPES sequential scrapes of `server` on one connection, after a second of load (pinned or not as `cpu` says). */
async function sequential(server: Server, cpu?: string[]): Promise<number[]> {
  await load(server.url, 1, cpu);
  const scraper = await openScraper(server.url);
  try {
    const times: number[] = [];
    for (let i = 0; i < SCRAPES; i++) {
      await Bun.sleep(SCRAPE_GAP_MS);
      times.push(await scraper.scrape());
    }
    return times;
  } finally {
    scraper.close();
  }
}

/** The phase on `runtime`, for the template this tree starts, or the one `command` starts (an A/B's other side). */
export async function scrapePhase(runtime: Runtime, command = COMMANDS[runtime].template): Promise<ScrapeRow> {
  const launch = (env: Record<string, string> = {}, cpu?: string[]) => launchCommand(runtime, "template", command, env, undefined, cpu);
  const average = loadAverage();
  // Not recorded: it fills the disk and transpiler caches every recorded start then finds.
  const warmUp = await launch();
  try {
    log(`  ${runtime} warm-up, not recorded: first scrape ${fmt(await firstScrape(warmUp, SETTLED_MS), 1)} ms`);
  } finally {
    await warmUp.stop();
  }
  const firsts = { settled: [] as number[], atOnce: [] as number[] };
  let engine = "";
  let times: number[] = [];
  for (let start = 1; start <= SCRAPE_STARTS; start++) {
    // Each start of one kind, then one of the other, alternating which goes first.
    for (const kind of rotated(["settled", "atOnce"] as const, start)) {
      const server = await launch();
      try {
        engine = server.engine;
        firsts[kind].push(await firstScrape(server, kind === "settled" ? SETTLED_MS : 0));
        log(`  ${runtime} start ${start} ${kind.padEnd(7)}: first scrape ${fmt(firsts[kind].at(-1)!, 1)} ms`);
        if (start === SCRAPE_STARTS && kind === "settled") times = await sequential(server);
      } finally {
        await server.stop();
      }
    }
  }
  const two = await launch({ WORKERS: "2" }, []);
  let workers: ScrapeRow["workers"];
  try {
    if (two.pids.length !== 3) throw new Error(`WORKERS=2: the listening event names ${two.pids.length} processes, expected 3`);
    const first = await firstScrape(two, SETTLED_MS);
    const timesTwo = await sequential(two, []);
    workers = { firstMs: first, medianMs: median(timesTwo), p99Ms: percentile(timesTwo, 99), maxMs: Math.max(...timesTwo) };
  } finally {
    await two.stop();
  }
  return {
    runtime,
    engine,
    firstMs: firsts.settled,
    firstMedianMs: median(firsts.settled),
    firstMaxMs: Math.max(...firsts.settled),
    atOnceMs: firsts.atOnce,
    atOnceMedianMs: median(firsts.atOnce),
    atOnceMaxMs: Math.max(...firsts.atOnce),
    medianMs: median(times),
    p99Ms: percentile(times, 99),
    maxMs: Math.max(...times),
    workers,
    loadAverage: average,
  };
}

/** One line of progress for a runtime's row. */
export function describeScrape(row: ScrapeRow): string {
  return `first ${fmt(row.firstMedianMs, 1)} ms (max ${fmt(row.firstMaxMs, 1)}), at once ${fmt(row.atOnceMedianMs, 1)} ms (max ${
    fmt(row.atOnceMaxMs, 1)
  }); sequential median ${fmt(row.medianMs, 2)} p99 ${fmt(row.p99Ms, 2)} ms; WORKERS=2 first ${fmt(row.workers.firstMs, 1)}, median ${
    fmt(row.workers.medianMs, 2)
  }, p99 ${fmt(row.workers.p99Ms, 2)} ms`;
}

/** The report's section: every runtime's figures against the targets (issue #21, clause 4). */
export function scrapeSection(rows: ScrapeRow[]): string[] {
  const t = TARGETS.scrape;
  const out: string[] = [];
  out.push(`## A \`/metrics\` scrape`, "");
  out.push(
    `The template on each runtime's default engine with prom-client's default metrics. **First**: ${SCRAPE_STARTS} fresh starts per runtime of each kind, alternating, on CPU 0 (after one not recorded); the first request each got was \`GET /metrics\`, timed from connecting to the last byte of the body: **settled**, sent ${SETTLED_MS} ms after its \`listening\` line was read (a scraper's first visit lands somewhere in its interval), or **at once**, as soon as it was read, while the process still finishes its start. ` +
      `**Sequential**: the last settled server after a second of load on \`GET /\`, ${SCRAPES} scrapes ${SCRAPE_GAP_MS} ms apart on one keep-alive connection. ` +
      `**WORKERS=2**: the same on a fresh supervisor and two workers, neither they nor the load pinned; a scrape there also fetches the other worker's families and aggregates them. ` +
      `Targets: first (settled, the median over the starts) under ${t.firstMs} ms, sequential median under ${t.medianMs} ms, WORKERS=2 p99 under ${t.workersP99Ms} ms.`,
    "",
  );
  out.push(
    `| runtime | engine | first, settled: median (max) | each start | first, at once: median (max) | each start | sequential median | p99 | max | WORKERS=2: first | median | p99 | load average | first / median / WORKERS=2 p99 |`,
    `|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|`,
  );
  const each = (values: number[]) => values.map((ms) => fmt(ms, 1)).join(", ");
  for (const row of rows) {
    const met = [row.firstMedianMs < t.firstMs, row.medianMs < t.medianMs, row.workers.p99Ms < t.workersP99Ms].map(verdict).join(" / ");
    out.push(
      `| ${row.runtime} | ${row.engine} | ${fmt(row.firstMedianMs, 1)} (${fmt(row.firstMaxMs, 1)}) ms | ${each(row.firstMs)} | ${
        fmt(row.atOnceMedianMs, 1)
      } (${fmt(row.atOnceMaxMs, 1)}) ms | ${each(row.atOnceMs)} | ${fmt(row.medianMs, 2)} ms | ${fmt(row.p99Ms, 2)} ms | ${
        fmt(row.maxMs, 2)
      } ms | ${fmt(row.workers.firstMs, 1)} ms | ${fmt(row.workers.medianMs, 2)} ms | ${fmt(row.workers.p99Ms, 2)} ms | ${
        row.loadAverage.toFixed(2)
      } | ${met} |`,
    );
  }
  out.push("");
  return out;
}
