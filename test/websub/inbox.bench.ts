/**
 * `bun test/websub/inbox.bench.ts`: what storing each WebSub delivery before its 2xx costs (#22). For
 * each runtime, store (a SQLite file on this machine's disk; a redis-server of its own, started
 * through harness/redis.ts) and body size (1 KB, 100 KB), one server through its npm script, the
 * hub simulator's subscription, and a handleContent that only logs when it ran
 * (test/websub/_bench_content.ts):
 * - load: BENCH_INBOX_CONNECTIONS keep-alive connections post signed deliveries back to back for
 *   BENCH_INBOX_MS; deliveries acknowledged (202) per second, the acknowledgement's p50 and p99,
 *   and how long the inbox took to empty after (processed per second over the whole run);
 * - at rest: BENCH_INBOX_REST deliveries one at a time, each after the last was processed; the time
 *   from the 2xx reaching the client to handleContent running, p50 and p99.
 * With BENCH_INBOX_BEFORE=<commit>, each configuration's load is also run, just before, against
 * that commit's tree (exported with `git archive`, node_modules linked), whose server acknowledged
 * without storing: what the inbox costs the acknowledgement.
 * Not part of `npm test` or `npm run bench`; prints one JSON line per configuration and a table.
 * It lives with the module's tests, not in bench/, so that removing the module (its folders, as
 * docs/websub.md says) leaves nothing that imports it; figures in bench/README.md.
 */
import { spawnSync } from "bun";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { percentile } from "../../bench/_stats.ts";
import { ROOT, ServerProcess } from "../../harness/process.ts";
import { startRedis } from "../../harness/redis.ts";
import { runtimeOf, SCRIPTS, startListening, startServer } from "../../harness/servers.ts";
import type { Engine } from "../../src/policy/types.ts";
import { signBody } from "../../src/websub/websub.ts";
import { HUB_TOPIC, startHub } from "./_hub.ts";

const MEASURE_MS = Number(process.env.BENCH_INBOX_MS ?? 3_000);
const CONNECTIONS = Number(process.env.BENCH_INBOX_CONNECTIONS ?? 16);
const REST = Number(process.env.BENCH_INBOX_REST ?? 100);
const ENGINES = (process.env.BENCH_INBOX_ENGINES ?? "node-http,bun-serve,deno-per-connection").split(",") as Engine[];
const STORES = (process.env.BENCH_INBOX_STORES ?? "sqlite,redis").split(",") as Array<"sqlite" | "redis">;
const SECRET = "bench-secret";
const BEFORE = process.env.BENCH_INBOX_BEFORE;
const SIZES = [1_024, 102_400];

interface Row {
  /** The tree measured: this one, or BENCH_INBOX_BEFORE's. */
  tree: string;
  engine: Engine;
  store: "sqlite" | "redis";
  bodyBytes: number;
  ackPerSecond: number;
  ackP50Ms: number;
  ackP99Ms: number;
  refused: number;
  processedPerSecond: number;
  restP50Ms: number;
  restP99Ms: number;
}

/** A body of `bytes` whose first line is `n`. */
function bodyOf(n: number, bytes: number): Uint8Array<ArrayBuffer> {
  const head = `${n}\n`;
  return new TextEncoder().encode(head + "x".repeat(Math.max(0, bytes - head.length)));
}

/**
 * Resolves once the server has logged `count` bench_processed events. Looked at every 50 ms, not
 * on each line: a check per line over thousands of events would slow this process down, not the server.
 */
async function processed(server: ServerProcess, count: number, timeoutMs: number): Promise<void> {
  for (const deadline = performance.now() + timeoutMs; server.named("bench_processed").length < count;) {
    if (performance.now() > deadline) throw new Error(`${server.named("bench_processed").length} of ${count} processed in ${timeoutMs}ms`);
    await Bun.sleep(50);
  }
}

/** `commit`'s files in a temporary folder, node_modules linked: a server as it was then. */
function exportTree(commit: string): string {
  const dir = mkdtempSync(join(tmpdir(), "websub-inbox-before-"));
  const archive = spawnSync(["sh", "-c", `git -C '${ROOT}' archive '${commit}' | tar -x -C '${dir}'`]);
  if (archive.exitCode !== 0) throw new Error(`cannot export ${commit}: ${archive.stderr.toString()}`);
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return dir;
}

/** `engine`'s server started in `tree` as harness/servers.ts starts one here: its npm script, the fixture app, 127.0.0.1 port 0. */
function startIn(tree: string, engine: Engine, env: Record<string, string>): Promise<ServerProcess> {
  const runtime = runtimeOf(engine);
  const engineEnv = runtime === "node" ? {} : { [`${runtime.toUpperCase()}_ENGINE`]: engine };
  const cmd = ["sh", "-c", `cd '${tree}' && exec "$@"`, "sh", ...SCRIPTS[runtime], "--", "test/_fixture.ts"];
  return startListening(() => new ServerProcess(cmd, { ...process.env, PORT: "0", HOST: "127.0.0.1", ...engineEnv, ...env }));
}

/** One configuration on this tree, or (`before`) its load alone on an exported one. */
async function measure(engine: Engine, store: "sqlite" | "redis", bodyBytes: number, before?: string): Promise<Row> {
  const cleanups: Array<() => unknown> = [];
  try {
    let spec: string;
    if (store === "sqlite") {
      const dir = mkdtempSync(join(tmpdir(), "websub-inbox-bench-"));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      spec = join(dir, "websub.sqlite");
    } else {
      const redis = await startRedis();
      if (redis === undefined) throw new Error("redis-server is not installed");
      cleanups.push(() => redis.close());
      spec = redis.url;
    }
    const hub = await startHub();
    cleanups.push(() => hub.close());
    const env = { WEBSUB_HUB: hub.url, WEBSUB_TOPIC: HUB_TOPIC, WEBSUB_SECRET: SECRET, WEBSUB_STORE: spec };
    const server = before !== undefined ? await startIn(before, engine, env) : await startServer(engine, {
      ...env,
      WEBSUB_HANDLER: `${ROOT}test/websub/_bench_content.ts`,
      WEBSUB_INBOX_LIMIT: "1000000",
      WEBSUB_INBOX_BYTES: "100mb",
    });
    cleanups.push(() => server.kill());
    const callback = await hub.verified;

    // Load: every connection posts the same signed body (its number 0), back to back.
    const body = bodyOf(0, bodyBytes);
    const signature = await signBody(body, SECRET);
    const ack: number[] = [];
    let refused = 0;
    const started = performance.now();
    const startedAtMs = performance.timeOrigin + started;
    const until = started + MEASURE_MS;
    await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < until) {
        const sent = performance.now();
        const res = await fetch(callback, { method: "POST", body, headers: { "x-hub-signature": signature } });
        await res.arrayBuffer();
        if (res.status === 202) ack.push(performance.now() - sent);
        else refused++;
      }
    }));
    const elapsedMs = performance.now() - started;
    const acknowledged = {
      tree: before === undefined ? "this" : BEFORE!,
      engine,
      store,
      bodyBytes,
      ackPerSecond: Math.round(ack.length / (elapsedMs / 1_000)),
      ackP50Ms: percentile(ack, 50),
      ackP99Ms: percentile(ack, 99),
      refused,
    };
    // Before the inbox, content was handed over in memory after the 2xx: nothing more to measure.
    if (before !== undefined) return { ...acknowledged, processedPerSecond: NaN, restP50Ms: NaN, restP99Ms: NaN };
    await processed(server, ack.length, 120_000);
    // When the server ran the last one, on its clock (the epoch, as this process's).
    const drainedMs = Math.max(...server.named("bench_processed").map((e) => Number(e.atMs))) - startedAtMs;

    // At rest: one at a time, each once the last was processed.
    const rest: number[] = [];
    for (let n = 1; n <= REST; n++) {
      const each = bodyOf(n, bodyBytes);
      const res = await fetch(callback, { method: "POST", body: each, headers: { "x-hub-signature": await signBody(each, SECRET) } });
      await res.arrayBuffer();
      const ackedAt = performance.timeOrigin + performance.now();
      if (res.status !== 202) throw new Error(`delivery ${n} answered ${res.status}`);
      const event = await server.waitForEvent("bench_processed", 10_000, (e) => e.n === n);
      rest.push(Number(event.atMs) - ackedAt);
    }
    return {
      ...acknowledged,
      processedPerSecond: Math.round(ack.length / (drainedMs / 1_000)),
      restP50Ms: percentile(rest, 50),
      restP99Ms: percentile(rest, 99),
    };
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup();
  }
}

const beforeTree = BEFORE === undefined ? undefined : exportTree(BEFORE);
const rows: Row[] = [];
try {
  for (const engine of ENGINES) {
    for (const store of STORES) {
      for (const bodyBytes of SIZES) {
        for (const tree of beforeTree === undefined ? [undefined] : [beforeTree, undefined]) {
          const row = await measure(engine, store, bodyBytes, tree);
          console.log(JSON.stringify(row));
          rows.push(row);
        }
      }
    }
  }
} finally {
  if (beforeTree !== undefined) rmSync(beforeTree, { recursive: true, force: true });
}
const ms = (value: number) => value.toFixed(value < 10 ? 2 : 1);
console.log(
  "\n| tree | engine | store | body | acknowledged/s | ack p50 ms | ack p99 ms | 503s | processed/s | 2xx to processing p50 ms | p99 ms |",
);
console.log("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rows) {
  console.log(
    `| ${r.tree} | ${r.engine} | ${r.store} | ${r.bodyBytes / 1_024} KB | ${r.ackPerSecond} | ${ms(r.ackP50Ms)} | ${
      ms(r.ackP99Ms)
    } | ${r.refused} | ${r.processedPerSecond} | ${ms(r.restP50Ms)} | ${ms(r.restP99Ms)} |`,
  );
}
