/**
 * `bun bench/run.ts`: the template against the runtime's own server and a bare Hono app, on
 * Node, Bun and Deno, on 127.0.0.1.
 *
 * 1. Throughput and latency of `GET /` (wrk, or autocannon when wrk is missing or
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
 *
 * Writes bench/results/bench.{md,json}, bench/results/throughput.svg, and copies the markdown
 * and the chart to bench/RESULTS.md and bench/throughput.svg. The machine is small and shared:
 * only ratios measured side by side in one run are compared, and every figure is a median.
 *
 * Environment: BENCH_LOAD=wrk|autocannon, BENCH_ROUNDS (default 6), BENCH_DURATION_S (2),
 * BENCH_WARMUP_S (2; the template's larger code needs more than 1 s to reach its steady state),
 * BENCH_RUNTIMES (node,bun,deno), BENCH_IDLE_ROUNDS (3: rounds of the idle-capacity and reap phases),
 * BENCH_IDLE_CONNECTIONS (10000), BENCH_REAP_CONNECTIONS (1000), BENCH_SLOWLORIS_CONNECTIONS (1000),
 * BENCH_CHURN_CYCLES (80000), BENCH_ONLY=throughput,idle,reap,slowloris,churn (a subset runs only
 * those phases and leaves the committed results alone).
 */
import { spawnSync, type Subprocess } from "bun";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { capabilities, headDeadlineWindow } from "../adapters/_capabilities.ts";
import { fetchOnce } from "../harness/http.ts";
import { openFds, rss } from "../harness/proc.ts";
import { type Followed, spawnFollowed } from "../harness/process.ts";
import { FIXTURE_APP } from "../harness/servers.ts";

type Runtime = "node" | "bun" | "deno";
/** The engine each runtime's template serves with, unless told otherwise. */
const DEFAULT_ENGINE = { node: "node-http", bun: "bun-serve", deno: "deno-per-connection" } as const;
type Kind = "raw" | "hono" | "template";
/** What the idle phase measures: the raw server and the template, and on Deno its bare per-connection server too. */
type IdleKind = "raw" | "engine" | "template";

const ROOT = new URL("..", import.meta.url).pathname;
const BENCH = `${ROOT}bench/`;
const RESULTS = `${BENCH}results/`;
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? "node,bun,deno").split(",").map((s) => s.trim()) as Runtime[];
const KINDS: Kind[] = ["raw", "hono", "template"];
const KIND_LABEL: Record<Kind | IdleKind, string> = {
  raw: "raw runtime server",
  hono: "bare Hono",
  template: "template",
  engine: "bare per-connection server",
};

const ROUNDS = intEnv("BENCH_ROUNDS", 6);
const DURATION_S = intEnv("BENCH_DURATION_S", 2);
const WARMUP_S = intEnv("BENCH_WARMUP_S", 2);
const CONNECTIONS = 64;
const IDLE_CONNECTIONS = intEnv("BENCH_IDLE_CONNECTIONS", 10_000);
const IDLE_BATCH = 500;
const IDLE_TIMEOUT_MS = 8_000;
/** How long after the last response the idle servers' memory is read. */
const SETTLE_MS = 3_000;
const REAP_CONNECTIONS = intEnv("BENCH_REAP_CONNECTIONS", 1_000);
const REAP_TIMEOUT_MS = 4_000;
/** Rounds of the idle-capacity and reap phases: every figure they report is a median over these. */
const IDLE_ROUNDS = intEnv("BENCH_IDLE_ROUNDS", 3);
const WANTED_NOFILE = 65_536;
const SLOWLORIS_CONNECTIONS = intEnv("BENCH_SLOWLORIS_CONNECTIONS", 1_000);
const SLOWLORIS_HEADERS_TIMEOUT_MS = 5_000;
const SLOWLORIS_MEASURE_S = 3;
const CHURN_CYCLES = intEnv("BENCH_CHURN_CYCLES", 80_000);
const CHURN_PARALLEL = 16;
/** Churn leaves memory flat when the RSS lows of the last 10,000 cycles are at most this above the 10,000 before. */
const CHURN_FLAT_MIB = 16;
const PHASES = ["throughput", "idle", "reap", "slowloris", "churn"];
const ONLY = new Set((process.env.BENCH_ONLY ?? PHASES.join(",")).split(",").map((s) => s.trim()));

/** Targets: template throughput vs bare Hono, idle memory vs raw, reap lateness bounds. */
const TARGETS = {
  throughputVsHono: { node: 0.95, bun: 0.95, deno: 0.85 } as Record<Runtime, number>,
  idleMemoryVsRaw: { node: 1.1, bun: 1.1, deno: 1.5 } as Record<Runtime, number>,
  reapLateMs: { node: 1_000, bun: 4_000, deno: 1_000 } as Record<Runtime, number>,
  reapEarlyMs: -100,
};

function intEnv(name: string, fallback: number): number {
  const value = process.env[name];
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

const BUN = existsSync(`${ROOT}node_modules/.bin/bun`) ? `${ROOT}node_modules/.bin/bun` : process.execPath;
const DENO = existsSync(`${ROOT}node_modules/.bin/deno`) ? `${ROOT}node_modules/.bin/deno` : "deno";

/** How each server starts: fixtures for raw and bare Hono, the adapters directly for the template. */
const COMMANDS: Record<Runtime, Record<Kind, string[]> & { engine?: string[] }> = {
  node: {
    raw: ["node", "bench/fixtures/raw.node.ts"],
    hono: ["node", "bench/fixtures/hono.node.ts"],
    template: ["node", "src/main/node.ts", FIXTURE_APP],
  },
  bun: {
    raw: [BUN, "bench/fixtures/raw.bun.ts"],
    hono: [BUN, "bench/fixtures/hono.bun.ts"],
    template: [BUN, "src/main/bun.ts", FIXTURE_APP],
  },
  deno: {
    raw: [DENO, "run", "--allow-all", "bench/fixtures/raw.deno.ts"],
    hono: [DENO, "run", "--allow-all", "bench/fixtures/hono.deno.ts"],
    template: [DENO, "run", "--allow-all", "src/main/deno.ts", FIXTURE_APP],
    engine: [DENO, "run", "--allow-all", "bench/fixtures/engine.deno.ts"],
  },
};

// ---------------------------------------------------------------------------------------------
// Processes: every child is spawned in its own process group and killed on exit or error.

const children = new Set<Subprocess>();

function killGroup(proc: Subprocess): void {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  try {
    process.kill(-proc.pid, "SIGKILL");
  } catch {
    try {
      proc.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

async function stop(proc: Subprocess): Promise<void> {
  killGroup(proc);
  await Promise.race([proc.exited, Bun.sleep(5_000)]);
  children.delete(proc);
}

function killAll(): void {
  for (const proc of children) killGroup(proc);
}

process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

/** A child whose stdout is read as JSON lines for its whole life (see spawnFollowed). */
class Child {
  readonly proc: Subprocess<"pipe" | "ignore", number, number>;
  readonly #output: Followed<"pipe" | "ignore">;
  readonly events: Array<Record<string, unknown>> = [];
  stderr = "";
  stdout = "";
  #waiters = new Set<() => void>();
  /** Resolves once the process has exited and its output has been read. */
  readonly done: Promise<unknown>;

  readonly name: string;

  constructor(cmd: string[], env: Record<string, string | undefined>, stdin: "pipe" | "ignore" = "ignore") {
    this.name = cmd.filter((arg) => !arg.startsWith("-") && arg !== "prlimit").slice(0, 3).join(" ");
    this.#output = spawnFollowed(cmd, { env, stdin }, (line) => {
      if (this.stdout.length < 1_000_000) this.stdout += `${line}\n`;
      try {
        this.events.push(JSON.parse(line));
      } catch {
        return;
      }
      for (const wake of this.#waiters) wake();
    }, (line) => {
      if (this.stderr.length < 20_000) this.stderr += `${line}\n`;
    });
    this.proc = this.#output.proc;
    this.done = this.#output.done;
    children.add(this.proc);
  }

  count(name: string): number {
    this.#output.read();
    return this.events.filter((e) => e.event === name).length;
  }

  /** The first event named `name`; rejects on timeout or when the process ends without it. */
  waitFor(name: string, timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      let ended = false;
      const check = () => {
        const found = this.events.find((e) => e.event === name);
        if (found) {
          finish();
          resolve(found);
        } else if (ended) {
          finish();
          reject(new Error(`${this.name} ended before "${name}" (exit ${this.proc.exitCode}); stderr: ${this.stderr.slice(0, 2_000)}`));
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no "${name}" from ${this.name} within ${timeoutMs} ms; stderr: ${this.stderr.slice(0, 2_000)}`));
      }, timeoutMs);
      this.#waiters.add(check);
      // Everything it wrote has been read by then.
      void this.done.then(() => {
        ended = true;
        check();
      });
      this.#output.read();
      check();
    });
  }

  stop(): Promise<void> {
    return stop(this.proc);
  }
}

interface Server {
  runtime: Runtime;
  kind: Kind | IdleKind;
  child: Child;
  url: string;
  pid: number;
  engine: string;
}

/** Starts one server (optionally under a raised fd limit) and waits for its `listening` line. */
async function startServer(runtime: Runtime, kind: Kind | IdleKind, env: Record<string, string> = {}, nofile?: number): Promise<Server> {
  const command = COMMANDS[runtime][kind];
  if (!command) throw new Error(`no ${kind} server for ${runtime}`);
  const base = [...SERVER_CPU, ...command];
  const cmd = nofile ? ["prlimit", `--nofile=${nofile}:${nofile}`, "--", ...base] : base;
  const child = new Child(cmd, { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env });
  try {
    const listening = await child.waitFor("listening", 30_000);
    const url = String(listening.url).replace(/\/$/, "");
    const server = { runtime, kind, child, url, pid: Number(listening.pid), engine: String(listening.engine ?? listening.server ?? "") };
    const response = await fetchOnce(`${url}/`);
    const body = await response.text();
    if (response.status !== 200 || body !== "Hello World") {
      throw new Error(`${runtime} ${kind}: GET / answered ${response.status} ${JSON.stringify(body)}`);
    }
    return server;
  } catch (error) {
    await child.stop();
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Load generators.

interface Load {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
}

const WRK = spawnSync(["sh", "-c", "command -v wrk"]).stdout.toString().trim();
const AUTOCANNON = `${ROOT}node_modules/autocannon/autocannon.js`;
/**
 * Server and load generator each get a core of their own when taskset exists: left to the
 * scheduler they share both, and the ratios swing by tens of percent between identical runs.
 */
const PINNED = spawnSync(["sh", "-c", "command -v taskset"]).stdout.toString().trim() !== "" && cpus().length >= 2;
const SERVER_CPU = PINNED ? ["taskset", "-c", "0"] : [];
const LOAD_CPU = PINNED ? ["taskset", "-c", "1"] : [];
const GENERATOR: "wrk" | "autocannon" = process.env.BENCH_LOAD === "autocannon" || !WRK ? "autocannon" : "wrk";

function toMs(value: string, unit: string): number {
  const n = Number(value);
  return unit === "us" ? n / 1000 : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n;
}

async function run(cmd: string[], timeoutMs: number): Promise<string> {
  const child = new Child(cmd, process.env);
  const timer = setTimeout(() => killGroup(child.proc), timeoutMs);
  try {
    const [code] = await Promise.all([child.proc.exited, child.done]);
    if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}: ${child.stderr.slice(0, 2_000)}`);
    return child.stdout;
  } finally {
    clearTimeout(timer);
    await child.stop();
  }
}

/** Runs the load generator against `url` for `seconds`. */
async function load(url: string, seconds: number): Promise<Load> {
  const timeoutMs = seconds * 1000 + 15_000;
  if (GENERATOR === "wrk") {
    const out = await run([...LOAD_CPU, "wrk", "-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--latency", `${url}/`], timeoutMs);
    const rps = /Requests\/sec:\s*([\d.]+)/.exec(out);
    const p50 = /^\s*50%\s+([\d.]+)(us|ms|s|m)\b/m.exec(out);
    const p99 = /^\s*99%\s+([\d.]+)(us|ms|s|m)\b/m.exec(out);
    const total = /(\d+) requests in/.exec(out);
    if (!rps || !p50 || !p99 || !total) throw new Error(`cannot parse wrk output:\n${out}`);
    const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
    const errors = (socketErrors ? socketErrors.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
    return { rps: Number(rps[1]), p50Ms: toMs(p50[1]!, p50[2]!), p99Ms: toMs(p99[1]!, p99[2]!), requests: Number(total[1]), errors };
  }
  if (!existsSync(AUTOCANNON)) throw new Error(`autocannon is not installed (${AUTOCANNON}): npm install autocannon`);
  const out = await run(
    [...LOAD_CPU, "node", AUTOCANNON, "-c", String(CONNECTIONS), "-d", String(seconds), "--json", `${url}/`],
    timeoutMs,
  );
  const result = JSON.parse(out.slice(out.indexOf("{"))) as {
    requests: { total: number };
    latency: { p50: number; p99: number };
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
  };
  return {
    rps: result.requests.total / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    requests: result.requests.total,
    errors: result.errors + result.timeouts + result.non2xx,
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const CLOCK_TICKS_PER_S = Number(spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** CPU time process `pid` has used so far (user + system, every thread), in ms. */
function cpuMs(pid: number): number {
  // Fields after the command name (which may hold spaces, inside parentheses): utime is the 12th, stime the 13th.
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1_000) / CLOCK_TICKS_PER_S;
}

/** Per-round ratios of RSS per connection, a / b, rounds paired by their number (a round missing on one side pairs nothing). */
function pairedByRound(
  a: Array<{ round: number; rssPerConnectionKb: number }>,
  b: Array<{ round: number; rssPerConnectionKb: number }>,
): number[] {
  return a.flatMap((x) => {
    const match = b.find((y) => y.round === x.round);
    return match ? [x.rssPerConnectionKb / match.rssPerConnectionKb] : [];
  });
}

/** `items` in order, starting with round `round`'s own (round 1 starts with the first). */
function rotated<T>(items: readonly T[], round: number): T[] {
  return items.map((_, i) => items[(i + round - 1) % items.length]!);
}

/** The median of the per-round ratios a / b, rounds paired by index (both measured in the same round). */
function pairedRatio(a: number[], b: number[]): number {
  return median(a.map((x, i) => x / b[i]!).filter(Number.isFinite));
}

function rssKb(pid: number): number {
  return rss(pid) / 1_024;
}

function fdCount(pid: number): number {
  try {
    return openFds(pid);
  } catch {
    return Number.NaN;
  }
}

const fmt = (
  n: number,
  digits = 0,
) => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "n/a");
const ratio = (n: number) => (Number.isFinite(n) ? `${n.toFixed(2)}x` : "n/a");
const verdict = (ok: boolean | null) => (ok === null ? "n/a" : ok ? "met" : "**missed**");

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function versionOf(cmd: string[]): string {
  try {
    return spawnSync(cmd).stdout.toString().trim().split("\n")[0] ?? "";
  } catch {
    return "unknown";
  }
}

function machine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown";
  return {
    date: new Date().toISOString(),
    nproc: Number(spawnSync(["nproc"]).stdout.toString().trim()) || cpus().length,
    cpuModel: model,
    memTotalMiB: Math.round(totalmem() / 1024 / 1024),
    loadAverageAtStart: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
    node: versionOf(["node", "--version"]),
    bun: versionOf([BUN, "--version"]),
    deno: versionOf([DENO, "--version"]),
    generator: GENERATOR === "wrk"
      ? `wrk (${versionOf(["sh", "-c", "wrk -v 2>&1"]).replace(/ Copyright.*/, "")})`
      : `autocannon ${JSON.parse(readFileSync(`${ROOT}node_modules/autocannon/package.json`, "utf8")).version}`,
  };
}

/** The highest fd limit prlimit can give a child: 65536 if allowed, else the hard limit. */
function nofileLimit(): { limit: number; note: string } {
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
function raisedNofile(): number | undefined {
  try {
    return nofileLimit().limit;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Throughput and latency.

interface ThroughputRow {
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

async function throughput(runtime: Runtime): Promise<ThroughputRow[]> {
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
        await server.child.stop();
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

// ---------------------------------------------------------------------------------------------
// 2. Idle capacity, and 3. reap precision: both drive bench/_idle_client.ts.

interface IdleRow {
  runtime: Runtime;
  kind: IdleKind;
  round: number;
  engine: string;
  connections: number;
  failed: number;
  openMs: number;
  /** Connections the server held open when it was measured (its fds above baseline). */
  heldAtMeasurement: number;
  measuredAfterLastResponseMs: number;
  rssBeforeKb: number;
  rssAfterKb: number;
  rssPerConnectionKb: number;
  fdsBefore: number;
  fdsAfter: number;
  /** Template: ms after (last response + IDLE_TIMEOUT) when the client saw the last close. */
  allClosedAfterTimeoutMs: number | null;
  stillOpen: number | null;
  /** Fds after every connection was closed (by the server's policy, or by the client for raw). */
  fdsAfterClose: number;
  fdsBackToBaseline: boolean;
  idleTimeoutEvents: number | null;
}

/** The servers the idle phase measures on `runtime`. */
function idleKinds(runtime: Runtime): IdleKind[] {
  return COMMANDS[runtime].engine ? ["raw", "engine", "template"] : ["raw", "template"];
}

function clientCommand(limit: number | undefined, port: number, count: number, mode: "hold" | "wait", waitMs: number): string[] {
  const cmd = [BUN, "bench/_idle_client.ts", String(port), String(count), String(IDLE_BATCH), mode, String(waitMs)];
  return limit ? ["prlimit", `--nofile=${limit}:${limit}`, "--", ...cmd] : cmd;
}

/** Polls until the server's fds are within 5 of `baseline` or `timeoutMs` passes; returns the last count. */
async function fdsSettle(pid: number, baseline: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let fds = fdCount(pid);
  while (!(fds <= baseline + 5) && Date.now() < deadline) {
    await Bun.sleep(100);
    fds = fdCount(pid);
  }
  return fds;
}

async function idleCapacity(runtime: Runtime, kind: IdleKind, limit: number, round: number): Promise<IdleRow> {
  const env: Record<string, string> = kind === "template" ? { IDLE_TIMEOUT: `${IDLE_TIMEOUT_MS}ms` } : { BENCH_HOLD_IDLE: "1" };
  const server = await startServer(runtime, kind, env, limit);
  let client: Child | undefined;
  try {
    await Bun.sleep(500);
    const rssBeforeKb = rssKb(server.pid);
    const fdsBefore = fdCount(server.pid);
    const port = Number(new URL(server.url).port);
    const waitMs = IDLE_TIMEOUT_MS + 4_000 + 10_000;
    client = new Child(clientCommand(limit, port, IDLE_CONNECTIONS, kind === "template" ? "wait" : "hold", waitMs), process.env, "pipe");
    const ready = await client.waitFor("ready", 120_000);
    // Measure once the server has settled (a GC may have run) but before the template's first
    // connection can reach IDLE_TIMEOUT: 3 s after the last response, or at once if that is too late.
    const settleUntil = Math.min(Number(ready.lastResponseAt) + SETTLE_MS, Number(ready.firstResponseAt) + IDLE_TIMEOUT_MS - 1_000);
    await Bun.sleep(Math.max(200, settleUntil - Date.now()));
    const measuredAfterLastResponseMs = Math.round(Date.now() - Number(ready.lastResponseAt));
    const rssAfterKb = rssKb(server.pid);
    const fdsAfter = fdCount(server.pid);
    const connections = Number(ready.answered);
    let allClosedAfterTimeoutMs: number | null = null;
    let stillOpen: number | null = null;
    let fdsAfterClose: number;
    if (kind !== "template") {
      const stdin = client.proc.stdin as import("bun").FileSink;
      stdin.write("close\n");
      await stdin.flush();
      await client.waitFor("closed", 30_000);
      fdsAfterClose = await fdsSettle(server.pid, fdsBefore, 5_000);
    } else {
      const done = await client.waitFor("done", waitMs + 30_000);
      stillOpen = Number(done.stillOpen);
      allClosedAfterTimeoutMs = done.lastCloseAt === null ? null : Number(done.lastCloseAt) - Number(done.lastResponseAt) - IDLE_TIMEOUT_MS;
      fdsAfterClose = await fdsSettle(server.pid, fdsBefore, 5_000);
    }
    return {
      runtime,
      kind,
      round,
      engine: server.engine,
      connections,
      failed: Number(ready.failed),
      openMs: Number(ready.openMs),
      heldAtMeasurement: fdsAfter - fdsBefore,
      measuredAfterLastResponseMs,
      rssBeforeKb,
      rssAfterKb,
      rssPerConnectionKb: (rssAfterKb - rssBeforeKb) / Math.max(1, connections),
      fdsBefore,
      fdsAfter,
      allClosedAfterTimeoutMs,
      stillOpen,
      fdsAfterClose,
      fdsBackToBaseline: fdsAfterClose <= fdsBefore + 5,
      idleTimeoutEvents: kind === "template" ? server.child.count("idle_timeout") : null,
    };
  } finally {
    if (client) await client.stop();
    await server.child.stop();
  }
}

interface ReapRow {
  runtime: Runtime;
  round: number;
  engine: string;
  connections: number;
  closed: number;
  stillOpen: number;
  minMs: number;
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  lateMs: number[];
}

async function reapPrecision(runtime: Runtime, round: number): Promise<ReapRow> {
  const server = await startServer(runtime, "template", { IDLE_TIMEOUT: `${REAP_TIMEOUT_MS}ms` });
  let client: Child | undefined;
  try {
    const port = Number(new URL(server.url).port);
    const waitMs = REAP_TIMEOUT_MS + TARGETS.reapLateMs[runtime] + 6_000;
    client = new Child(clientCommand(undefined, port, REAP_CONNECTIONS, "wait", waitMs), process.env);
    const ready = await client.waitFor("ready", 60_000);
    const done = await client.waitFor("done", waitMs + 30_000);
    const late = (done.closedAfterResponseMs as number[]).map((ms) => Math.round((ms - REAP_TIMEOUT_MS) * 10) / 10);
    return {
      runtime,
      round,
      engine: server.engine,
      connections: Number(ready.answered),
      closed: late.length,
      stillOpen: Number(done.stillOpen),
      minMs: Math.min(...late),
      medianMs: median(late),
      p99Ms: percentile(late, 99),
      maxMs: Math.max(...late),
      lateMs: late,
    };
  } finally {
    if (client) await client.stop();
    await server.child.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Slowloris flood and 5. connection churn: both drive bench/_hostile_client.ts.

interface LatencyStats {
  requests: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

interface SlowlorisRow {
  runtime: Runtime;
  engine: string;
  baseline: LatencyStats;
  flood: LatencyStats;
  tricklers: { opened: number; failedToOpen: number; closed: number; answered408: number; minLifetimeMs: number; maxLifetimeMs: number };
  /** Where the head deadline may close a trickler on this engine (Bun's is fixed by Bun). */
  windowMs: { min: number; max: number };
}

interface ChurnRow {
  runtime: Runtime;
  engine: string;
  cycles: number;
  errors: number;
  cyclesPerSecond: number;
  samples: Array<{ cycles: number; fds: number; rssKb: number }>;
  fdsAfterSettle: number;
}

/** Runs bench/_hostile_client.ts on the load core and returns its `done` line. */
async function hostileClient<T>(args: Array<string | number>, timeoutMs: number): Promise<T> {
  const out = await run([...LOAD_CPU, BUN, "bench/_hostile_client.ts", ...args.map(String)], timeoutMs);
  return JSON.parse(out.trim().split("\n").at(-1)!) as T;
}

async function slowlorisFlood(runtime: Runtime): Promise<SlowlorisRow> {
  const windowMs = headDeadlineWindow(capabilities[DEFAULT_ENGINE[runtime]], SLOWLORIS_HEADERS_TIMEOUT_MS);
  const server = await startServer(runtime, "template", {
    HEADERS_TIMEOUT: `${SLOWLORIS_HEADERS_TIMEOUT_MS}ms`,
    REQUEST_TIMEOUT: "10s",
    IDLE_TIMEOUT: "8s",
  }, raisedNofile());
  try {
    const port = new URL(server.url).port;
    const waitMs = windowMs.max + 2_000;
    const done = await hostileClient<Omit<SlowlorisRow, "runtime" | "engine" | "windowMs">>(
      ["slowloris", port, SLOWLORIS_CONNECTIONS, SLOWLORIS_MEASURE_S, waitMs],
      2 * SLOWLORIS_MEASURE_S * 1_000 + waitMs + 30_000,
    );
    return { runtime, engine: server.engine, ...done, windowMs };
  } finally {
    await server.child.stop();
  }
}

async function connectionChurn(runtime: Runtime): Promise<ChurnRow> {
  const server = await startServer(runtime, "template", { IDLE_TIMEOUT: "8s" }, raisedNofile());
  try {
    const port = new URL(server.url).port;
    const done = await hostileClient<Omit<ChurnRow, "runtime" | "engine" | "fdsAfterSettle">>(
      ["churn", port, server.pid, CHURN_CYCLES, CHURN_PARALLEL],
      300_000,
    );
    const fdsAfterSettle = await fdsSettle(server.pid, done.samples[0]!.fds, 3_000);
    return { runtime, engine: server.engine, ...done, fdsAfterSettle };
  } finally {
    await server.child.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Output.

const COLORS: Record<Kind, string> = { raw: "#9ca3af", hono: "#f59e0b", template: "#2563eb" };

/** Grouped bars of median req/s per runtime: raw, bare Hono, template. */
function chart(rows: ThroughputRow[], meta: ReturnType<typeof machine>): string {
  const [w, h, left, right, top, bottom] = [720, 380, 70, 20, 70, 50];
  const max = Math.max(...rows.map((r) => r.medianRps).filter(Number.isFinite), 1);
  const step = 10 ** Math.floor(Math.log10(max));
  const unit = max / step > 5 ? step : max / step > 2 ? step / 2 : step / 5;
  const yMax = Math.ceil(max / unit) * unit;
  const y = (v: number) => top + (1 - v / yMax) * (h - top - bottom);
  const groupW = (w - left - right) / RUNTIMES.length;
  const barW = groupW / (KINDS.length + 1.5);
  const ticks: string[] = [];
  for (let v = 0; v <= yMax + unit / 2; v += unit) {
    ticks.push(
      `<line x1="${left}" x2="${w - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#eee"/>` +
        `<text x="${left - 8}" y="${(y(v) + 4).toFixed(1)}" font-size="11" text-anchor="end">${fmt(v)}</text>`,
    );
  }
  const bars = RUNTIMES.flatMap((runtime, g) => {
    const x0 = left + g * groupW + barW * 0.75;
    const group = KINDS.map((kind, i) => {
      const row = rows.find((r) => r.runtime === runtime && r.kind === kind);
      if (!row || !Number.isFinite(row.medianRps)) return "";
      const x = x0 + i * barW;
      return `<rect x="${x.toFixed(1)}" y="${y(row.medianRps).toFixed(1)}" width="${(barW - 4).toFixed(1)}" height="${
        (y(0) - y(row.medianRps)).toFixed(1)
      }" fill="${COLORS[kind]}"/>` +
        `<text x="${(x + (barW - 4) / 2).toFixed(1)}" y="${(y(row.medianRps) - 4).toFixed(1)}" font-size="10" text-anchor="middle">${
          fmt(row.medianRps / 1000, 1)
        }k</text>`;
    });
    return [
      ...group,
      `<text x="${(left + g * groupW + groupW / 2).toFixed(1)}" y="${
        h - bottom + 18
      }" font-size="12" text-anchor="middle">${runtime}</text>`,
    ];
  });
  const legend = KINDS.map((kind, i) =>
    `<rect x="${left + i * 170}" y="${top - 22}" width="12" height="12" fill="${COLORS[kind]}"/>` +
    `<text x="${left + i * 170 + 18}" y="${top - 12}" font-size="11">${escape(KIND_LABEL[kind])}</text>`
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif">` +
    `<rect width="${w}" height="${h}" fill="white"/>` +
    `<text x="${left}" y="22" font-size="14">GET / (Hello World): median requests per second over ${ROUNDS} rounds</text>` +
    `<text x="${left}" y="38" font-size="11" fill="#555">${
      escape(
        `${meta.generator}, ${CONNECTIONS} connections, ${DURATION_S} s per round; ${meta.nproc} cores (${meta.cpuModel}), shared; ${
          meta.date.slice(0, 10)
        }`,
      )
    }</text>` +
    [...ticks, ...bars, ...legend].join("") +
    `<line x1="${left}" x2="${w - right}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>` +
    `<text x="14" y="${(top + h - bottom) / 2}" font-size="11" transform="rotate(-90 14 ${
      (top + h - bottom) / 2
    })" text-anchor="middle">requests/s</text>` +
    `</svg>\n`;
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

interface Results {
  meta: ReturnType<typeof machine> & {
    rounds: number;
    idleRounds: number;
    durationS: number;
    warmupS: number;
    connections: number;
    nofile?: string;
    totalSeconds?: number;
  };
  throughput: ThroughputRow[];
  idle: IdleRow[];
  reap: ReapRow[];
  slowloris: SlowlorisRow[];
  churn: ChurnRow[];
  errors: string[];
}

function markdown(r: Results): string {
  const m = r.meta;
  const out: string[] = [];
  out.push(`# Benchmark: raw runtime server, bare Hono and the template`, "");
  out.push(
    `${m.date}. Load generator: **${m.generator}**${
      PINNED ? " on CPU 1, servers on CPU 0 (taskset)" : ", not pinned (no taskset)"
    }. Machine: ${m.nproc} cores, ${m.cpuModel}, ${fmt(m.memTotalMiB)} MiB, shared (load average at start ${m.loadAverageAtStart}). ` +
      `Node ${m.node}, Bun ${m.bun}, ${m.deno}. All on 127.0.0.1; medians; compare ratios within this run only.`,
    "",
  );
  if (r.throughput.length > 0) {
    out.push(`## Throughput and latency of \`GET /\``, "");
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
      `Ratios are the median of the per-round ratios (each round measures the servers back to back). "Per CPU-second" divides the requests served by the CPU time the server process used (user + system, all threads, from /proc): on this shared 2-core machine wall-clock req/s swings by ±15% between identical rounds, CPU per request by a few percent, and a server pinned to one core and saturated serves what its CPU time per request allows.`,
      "",
    );
    out.push(
      `| runtime | template / raw | template / bare Hono | template / raw, per CPU-second | template / bare Hono, per CPU-second | target (vs bare Hono) | req/s | per CPU-second |`,
      `|---|---:|---:|---:|---:|---:|---|---|`,
    );
    for (const runtime of RUNTIMES) {
      const rounds = (kind: Kind) => r.throughput.find((x) => x.runtime === runtime && x.kind === kind)?.rounds ?? [];
      if (rounds("template").length === 0) continue;
      const rps = (kind: Kind) => rounds(kind).map((x) => x.rps);
      const cpu = (kind: Kind) => rounds(kind).map((x) => x.perCpuS);
      const target = TARGETS.throughputVsHono[runtime];
      const vsHono = pairedRatio(rps("template"), rps("hono"));
      const vsHonoCpu = pairedRatio(cpu("template"), cpu("hono"));
      const judge = (x: number) => verdict(Number.isFinite(x) ? x >= target : null);
      out.push(
        `| ${runtime} | ${ratio(pairedRatio(rps("template"), rps("raw")))} | ${ratio(vsHono)} | ${
          ratio(pairedRatio(cpu("template"), cpu("raw")))
        } | ${ratio(vsHonoCpu)} | >= ${target.toFixed(2)}x | ${judge(vsHono)} | ${judge(vsHonoCpu)} |`,
      );
    }
    out.push("");
  }
  if (r.idle.length > 0) {
    out.push(`## Idle capacity`, "");
    out.push(
      `${
        fmt(IDLE_CONNECTIONS)
      } keep-alive connections opened ${IDLE_BATCH} at a time, one \`GET /\` each, then left idle; RSS and fds read ${
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
  }
  if (r.reap.length > 0) {
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
        } | ${fmt(Math.max(...rows.map((x) => x.maxMs)), 1)} | ${TARGETS.reapEarlyMs} to +${TARGETS.reapLateMs[runtime]} | ${
          verdict(ok)
        } |`,
      );
    }
    out.push("");
  }
  if (r.slowloris.length > 0) {
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
  }
  if (r.churn.length > 0) {
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
  }
  if (r.errors.length > 0) out.push(`## Errors`, "", ...r.errors.map((e) => `- ${e.split("\n")[0]}`), "");
  if (m.totalSeconds !== undefined) {
    out.push(
      `Benchmark took ${m.totalSeconds} s. Reproduce with \`bun bench/run.ts\` (BENCH_LOAD=autocannon forces the fallback generator).`,
      "",
    );
  }
  return out.join("\n");
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = Date.now();
  const meta = machine();
  const results: Results = {
    meta: { ...meta, rounds: ROUNDS, idleRounds: IDLE_ROUNDS, durationS: DURATION_S, warmupS: WARMUP_S, connections: CONNECTIONS },
    throughput: [],
    idle: [],
    reap: [],
    slowloris: [],
    churn: [],
    errors: [],
  };
  log(`generator: ${meta.generator}; ${meta.nproc} cores, ${meta.cpuModel}; node ${meta.node}, bun ${meta.bun}, ${meta.deno}`);
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
  try {
    if (ONLY.has("throughput")) {
      for (const runtime of RUNTIMES) {
        log(`throughput: ${runtime}`);
        results.throughput.push(...((await attempt(`throughput ${runtime}`, () => throughput(runtime))) ?? []));
      }
    }
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
