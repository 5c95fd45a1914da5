/** The report: every phase's tables as markdown, from the results of one run. */
import type { Runtime } from "../src/policy/types.ts";
import {
  CHURN_CYCLES,
  CHURN_FLAT_MIB,
  CHURN_PARALLEL,
  CONNECTIONS,
  IDLE_BATCH,
  IDLE_CONNECTIONS,
  IDLE_TIMEOUT_MS,
  type IdleKind,
  type Kind,
  KIND_LABEL,
  REAP_CONNECTIONS,
  REAP_TIMEOUT_MS,
  RUNTIMES,
  SETTLE_MS,
  SLOWLORIS_CONNECTIONS,
  SLOWLORIS_HEADERS_TIMEOUT_MS,
  SLOWLORIS_MEASURE_S,
  TARGETS,
} from "./_config.ts";
import { fmt, ratio, verdict } from "./_format.ts";
import { COSCHEDULED_CONNECTIONS } from "./_coscheduled.ts";
import { GENERATOR, type Machine, PINNED } from "./_machine.ts";
import type { ChurnRow } from "./_phases/churn.ts";
import type { CoscheduledRow } from "./_phases/coscheduled.ts";
import { COLDSTART_KINDS, COLDSTART_LABEL, type ColdStartKind, type ColdStartRow } from "./_phases/coldstart.ts";
import type { IdleRow } from "./_phases/idle.ts";
import type { ReapRow } from "./_phases/reap.ts";
import { type ScrapeRow, scrapeSection } from "./_phases/scrape.ts";
import type { SlowlorisRow } from "./_phases/slowloris.ts";
import type { ThroughputRow } from "./_phases/throughput.ts";
import { type WebSocketRow, websocketSection } from "./_phases/websocket.ts";
import type { WorkersRow } from "./_phases/workers.ts";
import { median, pairedByRound, pairedDifference, pairedRatio } from "./_stats.ts";

/** Everything one run measured, as written to bench.json. */
export interface Results {
  meta: Machine & {
    rounds: number;
    idleRounds: number;
    coldStartRounds: number;
    workersRounds: number;
    coscheduledRounds: number;
    coscheduledDurationS: number;
    durationS: number;
    warmupS: number;
    connections: number;
    nofile?: string;
    totalSeconds?: number;
  };
  throughput: ThroughputRow[];
  /** The headline ratios, co-scheduled; `coscheduledSkipped` says why there are none. */
  coscheduled: CoscheduledRow[];
  coscheduledSkipped?: string;
  idle: IdleRow[];
  reap: ReapRow[];
  slowloris: SlowlorisRow[];
  churn: ChurnRow[];
  coldStart: ColdStartRow[];
  workers: WorkersRow[];
  websocket: WebSocketRow[];
  scrape: ScrapeRow[];
  errors: string[];
}

/** The whole report: the machine, then a section for each phase that ran. */
export function markdown(r: Results): string {
  const m = r.meta;
  const out: string[] = [];
  out.push(`# Benchmark: raw runtime server, bare Hono and the template`, "");
  out.push(
    `${m.date}. Load generator: **${m.generator}**${
      PINNED
        ? ` on CPU 1, servers on CPU 0 (taskset)${r.workers.length > 0 ? "; in the workers phase neither is pinned" : ""}`
        : ", not pinned (no taskset)"
    }. Machine: ${m.nproc} cores, ${m.cpuModel}, ${fmt(m.memTotalMiB)} MiB, shared (load average at start ${m.loadAverageAtStart}). ` +
      `Node ${m.node}, Bun ${m.bun}, ${m.deno}. All on 127.0.0.1; medians; compare ratios within this run only.`,
    "",
  );
  if (r.coscheduled.length > 0 || r.coscheduledSkipped) out.push(...coscheduledSection(r));
  if (r.throughput.length > 0) out.push(...throughputSection(r));
  if (r.idle.length > 0) out.push(...idleSection(r));
  if (r.reap.length > 0) out.push(...reapSection(r));
  if (r.slowloris.length > 0) out.push(...slowlorisSection(r));
  if (r.churn.length > 0) out.push(...churnSection(r));
  if (r.coldStart.length > 0) out.push(...coldStartSection(r));
  if (r.workers.length > 0) out.push(...workersSection(r));
  if (r.websocket.length > 0) out.push(...websocketSection(r.websocket));
  if (r.scrape.length > 0) out.push(...scrapeSection(r.scrape));
  if (r.errors.length > 0) out.push(`## Errors`, "", ...r.errors.map((e) => `- ${e.split("\n")[0]}`), "");
  if (m.totalSeconds !== undefined) {
    out.push(
      `Benchmark took ${m.totalSeconds} s. Reproduce with \`bun bench/run.ts\` (BENCH_LOAD=autocannon forces the fallback generator).`,
      "",
    );
  }
  return out.join("\n");
}

/** The headline ratios of `GET /`, co-scheduled, against the targets. */
function coscheduledSection(r: Results): string[] {
  const m = r.meta;
  const out: string[] = [];
  out.push(`## Throughput of \`GET /\`: the template beside bare Hono and the raw server, co-scheduled`, "");
  if (r.coscheduledSkipped) return [...out, `Not measured: ${r.coscheduledSkipped}. The sequential rounds below are all there is.`, ""];
  out.push(
    `The template and the other server started together, both pinned to CPU 0, and loaded at once by two wrk (\`-t1 -c${COSCHEDULED_CONNECTIONS}\` each) on CPU 1: one warm-up of ${m.warmupS} s, then ${m.coscheduledRounds} rounds of ${m.coscheduledDurationS} s. ` +
      `The kernel splits the core between the two, so template / other is the inverse ratio of their CPU per request, and whatever else runs on the machine slows both alike (bench/README.md#co-scheduled-ratios). These are the headline ratios; the sequential rounds below give each server's own req/s.`,
    "",
  );
  out.push(
    `| runtime | beside | template engine | median template / other | range | each round | load average | target | verdict |`,
    `|---|---|---|---:|---|---|---:|---:|---|`,
  );
  for (const row of r.coscheduled) {
    const target = row.other === "hono" ? TARGETS.throughputVsHono[row.runtime] : undefined;
    out.push(
      `| ${row.runtime} | ${KIND_LABEL[row.other]} | ${row.engine} | ${row.medianRatio.toFixed(3)} | ${row.minRatio.toFixed(3)}-${
        row.maxRatio.toFixed(3)
      } | ${row.rounds.map((x) => x.ratio.toFixed(3)).join(", ")} | ${row.loadAverage.toFixed(2)} | ${
        target === undefined ? "" : `>= ${target.toFixed(2)}x`
      } | ${target === undefined ? "" : verdict(row.medianRatio >= target)} |`,
    );
  }
  out.push("");
  return out;
}

/** Throughput and latency, sequential: every round, then the ratios, as context for the co-scheduled ones. */
function throughputSection(r: Results): string[] {
  const m = r.meta;
  const out: string[] = [];
  out.push(`## Throughput and latency of \`GET /\`, sequential`, "");
  out.push(
    `${CONNECTIONS} connections, one generator thread, ${m.warmupS} s warm-up then ${m.durationS} s measured, ${m.rounds} rounds alternating raw, bare Hono and template per runtime (each round starting with the next one), each measurement in a freshly started server process.` +
      (GENERATOR === "autocannon"
        ? " autocannon (one Node thread) saturates well below the fastest servers on this machine and reports latency in whole milliseconds, so its ratios are compressed toward 1: prefer wrk."
        : ""),
    "",
  );
  out.push(
    `| runtime | server | engine | median req/s | req per CPU-second | p50 ms | p99 ms | req/s per round |`,
    `|---|---|---|---:|---:|---:|---:|---|`,
  );
  for (const row of r.throughput) {
    out.push(
      `| ${row.runtime} | ${KIND_LABEL[row.kind]} | ${row.engine} | ${fmt(row.medianRps)} | ${fmt(row.medianPerCpuS)} | ${
        row.medianP50Ms.toFixed(2)
      } | ${row.medianP99Ms.toFixed(2)} | ${row.rounds.map((x) => fmt(x.rps)).join(", ")} |`,
    );
  }
  out.push(
    "",
    `Ratios are the median of the per-round ratios (each round measures the servers back to back), for context: the headline ratios and their verdicts are the co-scheduled ones above, since back-to-back rounds on a shared machine see different machines. "Per CPU-second" divides the requests served by the CPU time the server process used (user + system, all threads, from /proc): on this shared 2-core machine wall-clock req/s swings by ±15% between identical rounds, CPU per request by a few percent, and a server pinned to one core and saturated serves what its CPU time per request allows.`,
    "",
  );
  out.push(
    `| runtime | template / raw | template / bare Hono | template / raw, per CPU-second | template / bare Hono, per CPU-second |`,
    `|---|---:|---:|---:|---:|`,
  );
  for (const runtime of RUNTIMES) {
    const rounds = (kind: Kind) => r.throughput.find((x) => x.runtime === runtime && x.kind === kind)?.rounds ?? [];
    if (rounds("template").length === 0) continue;
    const rps = (kind: Kind) => rounds(kind).map((x) => x.rps);
    const cpu = (kind: Kind) => rounds(kind).map((x) => x.perCpuS);
    out.push(
      `| ${runtime} | ${ratio(pairedRatio(rps("template"), rps("raw")))} | ${ratio(pairedRatio(rps("template"), rps("hono")))} | ${
        ratio(pairedRatio(cpu("template"), cpu("raw")))
      } | ${ratio(pairedRatio(cpu("template"), cpu("hono")))} |`,
    );
  }
  out.push("");
  return out;
}

/** Idle capacity: every round, the medians against the target, and on Deno where the memory goes. */
function idleSection(r: Results): string[] {
  const m = r.meta;
  const out: string[] = [];
  out.push(`## Idle capacity`, "");
  out.push(
    `${fmt(IDLE_CONNECTIONS)} keep-alive connections opened ${IDLE_BATCH} at a time, one \`GET /\` each, then left idle; RSS and fds read ${
      SETTLE_MS / 1000
    } s after the last response (\"read at\"), before the template's first close; server and client fd limit ${m.nofile}. ` +
      `The template runs with IDLE_TIMEOUT=${
        IDLE_TIMEOUT_MS / 1000
      }s; the raw servers with their own idle timeout off (node:http \`keepAliveTimeout = 0\`, Bun.serve \`idleTimeout: 0\`; Deno.serve has none) and are closed by the client. ` +
      `On Deno the template's engine is Deno's internal per-connection server (Deno.serve cannot close a connection), so Deno also measures that server bare (bench/fixtures/engine.deno.ts: a minimal handler, each connection kept closable, no policy): Deno's share of the cost is bare / raw, ours template / bare. ` +
      `${m.idleRounds} rounds per runtime, each starting with the next server, each server freshly started.`,
    "",
  );
  out.push(
    `| runtime | server | round | held | opened in | read at | RSS before MiB | RSS after MiB | RSS per connection KB | fds before / after | fds after close |`,
    `|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|`,
  );
  for (const row of r.idle) {
    out.push(
      `| ${row.runtime} | ${KIND_LABEL[row.kind]} | ${row.round} | ${fmt(row.heldAtMeasurement)}${
        row.failed ? ` (${row.failed} failed)` : ""
      } | ${fmt(row.openMs / 1000, 1)} s | +${fmt(row.measuredAfterLastResponseMs / 1000, 1)} s | ${fmt(row.rssBeforeKb / 1024, 1)} | ${
        fmt(row.rssAfterKb / 1024, 1)
      } | ${fmt(row.rssPerConnectionKb, 2)} | ${row.fdsBefore} / ${row.fdsAfter} | ${row.fdsAfterClose} (${
        row.fdsBackToBaseline ? "baseline" : "**not baseline**"
      }) |`,
    );
  }
  out.push("", `Medians over the rounds; a memory ratio is the median of the per-round ratios.`, "");
  /** One runtime's rounds of one server, in round order. */
  const idleRows = (runtime: Runtime, kind: IdleKind) =>
    r.idle.filter((x) => x.runtime === runtime && x.kind === kind).sort((a, b) => a.round - b.round);
  const medianKb = (rows: IdleRow[]) => fmt(median(rows.map((x) => x.rssPerConnectionKb)), 2);
  out.push(
    `| runtime | KB per connection, raw | KB per connection, template | template / raw memory per connection | target | | all ${
      fmt(IDLE_CONNECTIONS)
    } closed, after IDLE_TIMEOUT past the last response (per round) | still open | idle_timeout events | fds back to baseline (within 5) |`,
    `|---|---:|---:|---:|---:|---|---:|---:|---:|---|`,
  );
  for (const runtime of RUNTIMES) {
    const raw = idleRows(runtime, "raw");
    const tpl = idleRows(runtime, "template");
    if (tpl.length === 0) continue;
    const paired = pairedByRound(tpl, raw);
    const memRatio = median(paired);
    const target = TARGETS.idleMemoryVsRaw[runtime];
    const closed = tpl.map((t) =>
      t.allClosedAfterTimeoutMs === null
        ? "n/a"
        : `${t.allClosedAfterTimeoutMs >= 0 ? "+" : ""}${fmt(Math.round(t.allClosedAfterTimeoutMs))} ms`
    ).join(", ");
    const fdsOk = tpl.every((t) => t.fdsBackToBaseline) && raw.every((x) => x.fdsBackToBaseline);
    out.push(
      `| ${runtime} | ${medianKb(raw)} | ${medianKb(tpl)} | ${ratio(memRatio)} (${paired.map(ratio).join(", ")}) | <= ${
        target.toFixed(1)
      }x | ${verdict(Number.isFinite(memRatio) ? memRatio <= target : null)} | ${closed} | ${
        tpl.map((t) => t.stillOpen ?? "n/a").join(", ")
      } | ${tpl.map((t) => t.idleTimeoutEvents ?? "n/a").join(", ")} | ${fdsOk ? "yes" : "**no**"} |`,
    );
  }
  out.push("");
  const split = RUNTIMES.filter((runtime) => r.idle.some((x) => x.runtime === runtime && x.kind === "engine"));
  if (split.length > 0) {
    out.push(
      `Where the memory goes: the runtime's per-connection server against the raw server, and the template against that server.`,
      "",
    );
    out.push(
      `| runtime | KB per connection: raw / bare per-connection server / template | bare per-connection server / raw (the runtime's) | template / bare per-connection server (ours) |`,
      `|---|---:|---:|---:|`,
    );
    for (const runtime of split) {
      const [raw, engine, tpl] = (["raw", "engine", "template"] as const).map((kind) => idleRows(runtime, kind));
      out.push(
        `| ${runtime} | ${medianKb(raw!)} / ${medianKb(engine!)} / ${medianKb(tpl!)} | ${ratio(median(pairedByRound(engine!, raw!)))} | ${
          ratio(median(pairedByRound(tpl!, engine!)))
        } |`,
      );
    }
    out.push("");
  }
  return out;
}

/** Reap precision: every round, then the medians against the target. */
function reapSection(r: Results): string[] {
  const m = r.meta;
  const out: string[] = [];
  out.push(`## Reap precision`, "");
  out.push(
    `Template, ${fmt(REAP_CONNECTIONS)} idle connections, IDLE_TIMEOUT=${
      REAP_TIMEOUT_MS / 1000
    }s: close time - response time - IDLE_TIMEOUT, per connection, as the client saw it (the client reads a response a few ms after the server finished it, so a few ms below 0 is measurement, not an early close). ${m.idleRounds} rounds per runtime, each in a freshly started server; the summary is the median of each figure over the rounds, judged against the target, and the worst round's max beside it.`,
    "",
  );
  out.push(`| runtime | engine | round | closed | min ms | median ms | p99 ms | max ms |`, `|---|---|---:|---:|---:|---:|---:|---:|`);
  for (const row of r.reap) {
    out.push(
      `| ${row.runtime} | ${row.engine} | ${row.round} | ${row.closed} / ${row.connections} | ${fmt(row.minMs, 1)} | ${
        fmt(row.medianMs, 1)
      } | ${fmt(row.p99Ms, 1)} | ${fmt(row.maxMs, 1)} |`,
    );
  }
  out.push(
    "",
    `| runtime | still open | min ms | median ms | p99 ms | max ms | worst max ms | target | |`,
    `|---|---:|---:|---:|---:|---:|---:|---|---|`,
  );
  for (const runtime of RUNTIMES) {
    const rows = r.reap.filter((x) => x.runtime === runtime);
    if (rows.length === 0) continue;
    const stat = (key: "minMs" | "medianMs" | "p99Ms" | "maxMs") => median(rows.map((x) => x[key]));
    const stillOpen = rows.reduce((n, x) => n + x.stillOpen, 0);
    const ok = stillOpen === 0 && stat("minMs") >= TARGETS.reapEarlyMs && stat("maxMs") <= TARGETS.reapLateMs[runtime];
    out.push(
      `| ${runtime} | ${stillOpen} | ${fmt(stat("minMs"), 1)} | ${fmt(stat("medianMs"), 1)} | ${fmt(stat("p99Ms"), 1)} | ${
        fmt(stat("maxMs"), 1)
      } | ${fmt(Math.max(...rows.map((x) => x.maxMs)), 1)} | ${TARGETS.reapEarlyMs} to +${TARGETS.reapLateMs[runtime]} | ${verdict(ok)} |`,
    );
  }
  out.push("");
  return out;
}

/** Slowloris flood: latency alone and in the flood, and when the tricklers were closed. */
function slowlorisSection(r: Results): string[] {
  const out: string[] = [];
  out.push(`## Slowloris flood`, "");
  out.push(
    `Template with HEADERS_TIMEOUT=${
      SLOWLORIS_HEADERS_TIMEOUT_MS / 1000
    }s. Four well-behaved keep-alive clients send \`GET /\` back to back for ${SLOWLORIS_MEASURE_S} s alone, then for ${SLOWLORIS_MEASURE_S} s while ${
      fmt(SLOWLORIS_CONNECTIONS)
    } connections each trickle one byte of a never-ending head every 500 ms. The trickling connections must all be closed within the head deadline's window (Bun's is its own fixed one).`,
    "",
  );
  out.push(
    `| runtime | engine | p50 ms alone | p50 ms in flood | p99 ms alone | p99 ms in flood | p99 ratio | errors | trickling closed | closed after (ms) | window (ms) | 408 sent | |`,
    `|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|`,
  );
  for (const row of r.slowloris) {
    const t = row.tricklers;
    const ok = t.closed === t.opened && t.failedToOpen === 0 && t.minLifetimeMs >= row.windowMs.min - 100 &&
      t.maxLifetimeMs <= row.windowMs.max && row.flood.errors === 0;
    out.push(
      `| ${row.runtime} | ${row.engine} | ${fmt(row.baseline.p50Ms, 2)} | ${fmt(row.flood.p50Ms, 2)} | ${fmt(row.baseline.p99Ms, 2)} | ${
        fmt(row.flood.p99Ms, 2)
      } | ${ratio(row.flood.p99Ms / row.baseline.p99Ms)} | ${row.baseline.errors + row.flood.errors} | ${fmt(t.closed)} / ${
        fmt(t.opened)
      } | ${fmt(t.minLifetimeMs)} to ${fmt(t.maxLifetimeMs)} | ${fmt(row.windowMs.min)} to ${fmt(row.windowMs.max)} | ${
        fmt(t.answered408)
      } | ${verdict(ok)} |`,
    );
  }
  out.push("");
  return out;
}

/** Connection churn: fds and RSS over the cycles. */
function churnSection(r: Results): string[] {
  const out: string[] = [];
  out.push(`## Connection churn`, "");
  out.push(
    `Template; ${
      fmt(CHURN_CYCLES)
    } cycles of connect, \`GET /healthz\`, close (client half-closes, server closes), ${CHURN_PARALLEL} at a time, after 1,000 warm-up cycles. Server fds and RSS sampled every 2,500 cycles; "fds after" is read once the last connection has closed (back to baseline means within 5). ` +
      `RSS grows while the heaps size themselves to the load, then stays flat, give or take a collection: "late growth" compares the lowest sample of the last 10,000 cycles with the lowest of the 10,000 before (lows are between collections), and must stay under ${CHURN_FLAT_MIB} MiB, i.e. under ~1.6 KB a cycle.`,
    "",
  );
  out.push(
    `| runtime | engine | cycles/s | errors | fds before | fds after | RSS MiB every 10,000 cycles, from 0 to ${
      fmt(CHURN_CYCLES)
    } | growth MiB | late growth MiB | |`,
    `|---|---|---:|---:|---:|---:|---|---:|---:|---|`,
  );
  for (const row of r.churn) {
    const first = row.samples[0]!;
    const mib = row.samples.map((x) => x.rssKb / 1024);
    const growth = Math.max(...mib) - mib[0]!;
    const window = Math.round(10_000 / 2_500);
    const late = Math.min(...mib.slice(-window)) - Math.min(...mib.slice(-2 * window, -window));
    const ok = row.errors === 0 && row.fdsAfterSettle <= first.fds + 5 && late <= CHURN_FLAT_MIB;
    const every10k = row.samples.filter((x) => x.cycles % 10_000 === 0).map((x) => fmt(x.rssKb / 1024, 1)).join(", ");
    out.push(
      `| ${row.runtime} | ${row.engine} | ${
        fmt(row.cyclesPerSecond)
      } | ${row.errors} | ${first.fds} | ${row.fdsAfterSettle} | ${every10k} | ${fmt(growth, 1)} | ${fmt(late, 1)} | ${verdict(ok)} |`,
    );
  }
  out.push("");
  return out;
}

/** Cold start: every round's start times, then the medians and the template's cost over bare Hono. */
function coldStartSection(r: Results): string[] {
  const m = r.meta;
  const out: string[] = [];
  out.push(`## Cold start`, "");
  out.push(
    `Time from spawning the process to reading its \`listening\` line: bare Hono (bench/fixtures/hono.*.ts) and the template serving the fixture app, both run directly, and the template through its npm script (PORT=0, HOST=127.0.0.1, the project's binaries first on PATH as \`npm run\` sets them). ` +
      `${m.coldStartRounds} rounds per runtime, each starting with the next one, after one start of each that is not recorded (so every recorded start finds the same disk and transpiler caches); ${
        PINNED ? "every process on CPU 0, like the servers above" : "not pinned (no taskset)"
      }; the server's output read every millisecond. ` +
      `A difference is the median of the per-round differences (both measured in the same round).`,
    "",
  );
  out.push(`| runtime | start | engine | command | median ms | ms per round |`, `|---|---|---|---|---:|---|`);
  for (const row of r.coldStart) {
    out.push(
      `| ${row.runtime} | ${COLDSTART_LABEL[row.kind]} | ${row.engine} | \`${row.command}\` | ${fmt(row.medianMs, 1)} | ${
        row.rounds.map((x) => fmt(x, 1)).join(", ")
      } |`,
    );
  }
  out.push(
    "",
    `| runtime | bare Hono ms | template, direct ms | template, through npm ms | template - bare Hono, direct | npm - direct | target (template - bare Hono) | |`,
    `|---|---:|---:|---:|---:|---:|---|---|`,
  );
  for (const runtime of RUNTIMES) {
    const rounds = (kind: ColdStartKind) => r.coldStart.find((x) => x.runtime === runtime && x.kind === kind)?.rounds ?? [];
    if (COLDSTART_KINDS.every((kind) => rounds(kind).length === 0)) continue;
    const overHono = pairedDifference(rounds("direct"), rounds("hono"));
    const npm = pairedDifference(rounds("npm"), rounds("direct"));
    const target = TARGETS.coldStartVsHonoMs[runtime];
    const ms = (kind: ColdStartKind) => fmt(median(rounds(kind)), 1);
    out.push(
      `| ${runtime} | ${ms("hono")} | ${ms("direct")} | ${ms("npm")} | ${signedMs(overHono)} | ${signedMs(npm)} | ${
        target === undefined ? "none" : `<= +${target} ms`
      } | ${verdict(target === undefined || !Number.isFinite(overHono) ? null : overHono <= target)} |`,
    );
  }
  out.push("");
  return out;
}

/** Workers: WORKERS=1 and WORKERS=2 side by side, what they used of the machine, and the ratios 2/1. */
function workersSection(r: Results): string[] {
  const m = r.meta;
  const out: string[] = [];
  const averages = r.workers.flatMap((row) => row.rounds.map((x) => x.loadAverage));
  out.push(`## Workers (\`WORKERS=1\` and \`WORKERS=2\`)`, "");
  out.push(
    `The template with WORKERS=1 (one process) and WORKERS=2 (a supervisor and two workers sharing the port with SO_REUSEPORT), ${CONNECTIONS} connections, one generator thread, ${m.warmupS} s warm-up then ${m.durationS} s measured, ${m.workersRounds} rounds per runtime alternating which goes first, each measurement in a freshly started server. ` +
      `**Neither the servers nor the load generator are pinned** in this phase (unlike the others): pinned to CPU 0, two workers would share one core; unpinned, both configurations compete with the generator for the same ${m.nproc} cores under the same scheduler. ` +
      `"Req per CPU-second" divides the requests by the CPU time of every serving process (the supervisor and each worker, pids from the \`listening\` event; user + system, from /proc). "Server cores" is that CPU time over the measured wall time; "machine cores" is what the whole machine ran in that time (/proc/stat: the server, wrk, and anything else on this shared machine).`,
    "",
  );
  out.push(
    `| runtime | WORKERS | engine | median req/s | req per CPU-second | server cores | machine cores | p99 ms | req/s per round | CPU ms per process, per round |`,
    `|---|---:|---|---:|---:|---:|---:|---:|---|---|`,
  );
  for (const row of r.workers) {
    out.push(
      `| ${row.runtime} | ${row.workers} | ${row.engine} | ${fmt(row.medianRps)} | ${fmt(row.medianPerCpuS)} | ${
        fmt(row.medianServerCores, 2)
      } | ${fmt(row.medianMachineCores, 2)} | ${row.medianP99Ms.toFixed(2)} | ${row.rounds.map((x) => fmt(x.rps)).join(", ")} | ${
        row.rounds.map((x) => x.cpuMsPerProcess.map((ms) => fmt(ms)).join("+")).join(", ")
      } |`,
    );
  }
  out.push(
    "",
    `| runtime | WORKERS=2 / WORKERS=1, req/s | WORKERS=2 / WORKERS=1, per CPU-second | per round, req/s |`,
    `|---|---:|---:|---|`,
  );
  for (const runtime of RUNTIMES) {
    const one = r.workers.find((x) => x.runtime === runtime && x.workers === 1)?.rounds ?? [];
    const two = r.workers.find((x) => x.runtime === runtime && x.workers === 2)?.rounds ?? [];
    if (one.length === 0 && two.length === 0) continue;
    // Paired by round number: both measured back to back in the same round.
    const paired = (key: "rps" | "perCpuS") =>
      two.flatMap((x) => {
        const match = one.find((y) => y.round === x.round);
        return match ? [x[key] / match[key]] : [];
      });
    out.push(
      `| ${runtime} | ${ratio(median(paired("rps")))} | ${ratio(median(paired("perCpuS")))} | ${paired("rps").map(ratio).join(", ")} |`,
    );
  }
  out.push(
    "",
    `What this machine can show: it has ${m.nproc} cores and the load generator runs on them too (one wrk thread uses most of a core), so WORKERS=2 cannot double anything here. ` +
      `A second worker can at most take the part of the second core that wrk leaves, and it costs a second process's scheduling and cache misses; the ratio 2/1 says whether that nets a gain on this machine, not how WORKERS scales on a server with cores to spare, which needs the load generated from another machine. ` +
      `Below 1.00x per CPU-second, a request costs more CPU with two workers; but neither ratio is stable here: unpinned, where the scheduler puts wrk and the server decides how requests batch, and single rounds swing by tens of percent. ` +
      `Load average (1 min) before each measurement: ${fmt(Math.min(...averages), 2)} to ${fmt(Math.max(...averages), 2)} (median ${
        fmt(median(averages), 2)
      }; it counts the bench's own wrk and servers of the minute before), and ${m.loadAverageAtStart} (1, 5, 15 min) at the start of the run, before the bench loaded the machine.`,
    "",
  );
  return out;
}

/** A difference in ms with its sign. */
function signedMs(ms: number): string {
  return Number.isFinite(ms) ? `${ms >= 0 ? "+" : ""}${fmt(ms, 1)} ms` : "n/a";
}
