/**
 * `bun bench/websub_store_ab.ts [commit]`: the WebSub Redis store's lock and list operations, the
 * store at `commit` ("before") beside the store in this tree ("after"), against one redis-server
 * started through harness/redis.ts. `commit` defaults to the last one whose store had its own RESP
 * client (src/websub/store/_resp.ts); its src/websub/store is exported with `git archive` into a
 * temporary directory. Not part of `npm test` or `npm run bench`.
 *
 * Each operation runs for BENCH_STORE_MS on each store, BENCH_STORE_ROUNDS times, the order
 * alternating each round; the figures are the medians of the rounds' ops/s and of the per-round
 * ratios after / before, and the CPU time per operation of this process (the client) and of
 * redis-server: on a shared machine throughput swings with what else runs, CPU time far less.
 * Each store has its own key prefix, so neither sees the other's keys.
 */
import { spawnSync } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../harness/process.ts";
import { startRedis } from "../harness/redis.ts";
import type { Subscription, SubscriptionStore } from "../src/websub/store/types.ts";
import { cpuMs } from "./_proc.ts";
import { median, pairedRatio } from "./_stats.ts";

const ROUNDS = Number(process.env.BENCH_STORE_ROUNDS ?? 5);
const MEASURE_MS = Number(process.env.BENCH_STORE_MS ?? 500);
const IN_FLIGHT = 32;
const RESP_CLIENT = "src/websub/store/_resp.ts";

function git(...args: string[]): { ok: boolean; out: string } {
  const run = spawnSync(["git", "-C", ROOT, ...args]);
  return { ok: run.exitCode === 0, out: run.stdout.toString().trim() };
}

/** HEAD while it has the RESP client, else the parent of the commit that removed it. */
function defaultCommit(): string {
  if (git("cat-file", "-e", `HEAD:${RESP_CLIENT}`).ok) return "HEAD";
  const removed = git("rev-list", "-1", "HEAD", "--", RESP_CLIENT).out;
  if (removed === "") throw new Error(`no commit has ${RESP_CLIENT}: name one`);
  return `${removed}^`;
}

const commit = process.argv[2] ?? defaultCommit();
const label = git("rev-parse", "--short", commit).out;

/** `commit`'s src/websub/store in a temporary directory; the store there imports nothing from npm. */
function exportStore(): string {
  const dir = mkdtempSync(join(tmpdir(), "websub-store-ab-"));
  const archive = spawnSync(["sh", "-c", `git -C '${ROOT}' archive '${commit}' src/websub/store | tar -x -C '${dir}'`]);
  if (archive.exitCode !== 0) throw new Error(`cannot export ${commit}: ${archive.stderr.toString()}`);
  return dir;
}

type OpenStore = (url: string, options: { keyPrefix: string }) => Promise<SubscriptionStore>;

function subscription(id: string): Subscription {
  return {
    id,
    source: `https://example.com/feed/${id}?as=configured`,
    origin: "config",
    topic: `https://example.com/feed/${id}`,
    hub: "https://hub.example.com/",
    callbackUrl: `https://app.example.com/websub/${id}`,
    secret: `secret-${id}-${"x".repeat(32)}`,
    state: "active",
    leaseSeconds: 864_000,
    expiresAtMs: 1_900_000_000_000,
    nextAttemptAtMs: 1_899_999_000_000,
    updatedAtMs: 1_800_000_000_000,
  };
}

interface Operation {
  name: string;
  /** Run before the rounds, on each store. */
  setup?(store: SubscriptionStore): Promise<void>;
  /** One operation; `worker` tells concurrent loops apart. */
  run(store: SubscriptionStore, worker: number): Promise<unknown>;
  /** How many loops run at once. @default 1 */
  concurrency?: number;
}

const seed = (count: number, from = 0) => async (store: SubscriptionStore) => {
  for (let i = from; i < count; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - i) }, (_, j) => store.put(subscription(`s${i + j}`))));
  }
};

const OPERATIONS: Operation[] = [
  {
    name: "claim: renew a held lock",
    setup: async (store) => void await store.claim("renewer", "me", 15_000),
    run: (store) => store.claim("renewer", "me", 15_000),
  },
  {
    name: "claim: refused, held by another",
    run: (store) => store.claim("renewer", "someone-else", 15_000),
  },
  {
    name: "claim then release (one cycle)",
    run: async (store) => {
      await store.claim("cycle", "me", 15_000);
      await store.release("cycle", "me");
    },
  },
  {
    name: `claim: renew, ${IN_FLIGHT} in flight`,
    run: (store, worker) => store.claim(`lock-${worker}`, "me", 15_000),
    concurrency: IN_FLIGHT,
  },
  { name: "list: 100 subscriptions", setup: seed(100), run: (store) => store.list() },
  // Seeded on top of the 100 above: 5,000 of ~450 bytes, ten HSCAN pages of ~220 KB.
  { name: "list: 5,000 subscriptions", setup: seed(5_000, 100), run: (store) => store.list() },
];

interface Run {
  opsPerS: number;
  /** CPU time of this process per operation, in µs. */
  clientUs: number;
  /** CPU time of redis-server per operation, in µs (its clock ticks are 10 ms: coarse on a short run). */
  redisUs: number;
}

/** `op` on `store` for MEASURE_MS. */
async function measure(op: Operation, store: SubscriptionStore, redisPid: number): Promise<Run> {
  const start = performance.now();
  const end = start + MEASURE_MS;
  const client = process.cpuUsage();
  const redis = cpuMs(redisPid);
  let count = 0;
  await Promise.all(Array.from({ length: op.concurrency ?? 1 }, async (_, worker) => {
    while (performance.now() < end) {
      await op.run(store, worker);
      count++;
    }
  }));
  const { user, system } = process.cpuUsage(client);
  return {
    opsPerS: count / ((performance.now() - start) / 1_000),
    clientUs: (user + system) / count,
    redisUs: ((cpuMs(redisPid) - redis) * 1_000) / count,
  };
}

const us = (values: number[]) => median(values).toFixed(1);

const server = await startRedis();
if (server === undefined) throw new Error("redis-server is not installed (apt-get install redis-server)");
const dir = exportStore();
const sides: Array<{ name: "before" | "after"; store: SubscriptionStore }> = [];
try {
  const before = (await import(join(dir, "src/websub/store/redis.ts"))).redisStore as OpenStore;
  const after = (await import(join(ROOT, "src/websub/store/redis.ts"))).redisStore as OpenStore;
  sides.push({ name: "before", store: await before(server.url, { keyPrefix: "before:" }) });
  sides.push({ name: "after", store: await after(server.url, { keyPrefix: "after:" }) });
  console.log(`# WebSub Redis store: ${label} (before) and this tree (after)`);
  console.log(`\n${ROUNDS} rounds of ${MEASURE_MS} ms per operation and store, Bun ${Bun.version}, redis-server on 127.0.0.1.\n`);
  console.log("| operation | before, ops/s | after, ops/s | after / before | client CPU, µs/op | redis CPU, µs/op |");
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const op of OPERATIONS) {
    const runs = { before: [] as Run[], after: [] as Run[] };
    for (const { store } of sides) {
      await op.setup?.(store);
      await measure(op, store, server.pid); // warm-up: JIT, connection, script cache
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const side of round % 2 === 0 ? sides : [...sides].reverse()) runs[side.name].push(await measure(op, side.store, server.pid));
    }
    const of = (side: "before" | "after", key: keyof Run) => runs[side].map((run) => run[key]);
    const [b, a] = [median(of("before", "opsPerS")), median(of("after", "opsPerS"))];
    console.log(
      `| ${op.name} | ${Math.round(b).toLocaleString("en")} | ${Math.round(a).toLocaleString("en")} | ${
        pairedRatio(of("after", "opsPerS"), of("before", "opsPerS")).toFixed(2)
      }x | ${us(of("before", "clientUs"))} → ${us(of("after", "clientUs"))} | ${us(of("before", "redisUs"))} → ${
        us(of("after", "redisUs"))
      } |`,
    );
  }
} finally {
  for (const { store } of sides) await store.close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
