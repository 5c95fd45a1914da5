import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { redisMissing, startRedis } from "../../harness/redis.ts";
import { using } from "../../harness/wait.ts";
import { createLogger } from "../../src/policy/log.ts";
import { run } from "../../src/websub/cli.ts";
import { PROCESSING_DEFAULTS, startProcessor } from "../../src/websub/processing.ts";
import type { InboxEntry, InboxLimits } from "../../src/websub/store/inbox.ts";
import { redisStore } from "../../src/websub/store/redis.ts";
import { sqliteStore } from "../../src/websub/store/sqlite.ts";
import { memoryStore, type SubscriptionStore } from "../../src/websub/store/types.ts";
import type { Delivery } from "../../src/websub/websub.ts";

const TIMEOUT_MS = 15_000;
const REDIS_MISSING = redisMissing();
const ROOMY: InboxLimits = { maxCount: 1_000, maxBytes: 10_000_000 };

type Defer = (cleanup: () => unknown) => void;

function scratch(defer: Defer): string {
  const dir = mkdtempSync(join(tmpdir(), "websub-inbox-"));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

let n = 0;
/** A delivery for subscription `sub`, its body `text` (or bytes). */
function entry(sub: string, body: string | Uint8Array = `body ${++n}`): InboxEntry {
  return {
    id: crypto.randomUUID(),
    subscription: {
      id: sub,
      source: `https://example.com/${sub}`,
      topic: `https://example.com/${sub}`,
      hub: "https://hub.example/",
      callbackUrl: `https://me.example/websub/${sub}`,
    },
    headers: { "content-type": "application/atom+xml", link: '<https://example.com/feed>; rel="self"' },
    body: typeof body === "string" ? new TextEncoder().encode(body) : body,
    receivedAtMs: 1_800_000_000_000 + n,
  };
}

const text = (body: Uint8Array | undefined) => (body === undefined ? undefined : new TextDecoder().decode(body));

interface Backend {
  name: string;
  skip?: string;
  /** Two stores on the same data (one for memory, which is one process's). */
  open(defer: Defer): Promise<[SubscriptionStore, SubscriptionStore]>;
}

const BACKENDS: Backend[] = [
  {
    name: "memory",
    open() {
      const store = memoryStore();
      return Promise.resolve([store, store]);
    },
  },
  {
    name: "sqlite",
    async open(defer) {
      const path = join(scratch(defer), "websub.sqlite");
      const one = await sqliteStore(path);
      defer(() => one.close());
      const two = await sqliteStore(path);
      defer(() => two.close());
      return [one, two];
    },
  },
  {
    name: "redis",
    skip: REDIS_MISSING,
    async open(defer) {
      const server = await startRedis();
      if (server === undefined) throw new Error(REDIS_MISSING);
      defer(() => server.close());
      const one = await redisStore(server.url);
      defer(() => one.close());
      const two = await redisStore(server.url);
      defer(() => two.close());
      return [one, two];
    },
  },
];

for (const backend of BACKENDS) {
  describe.skipIf(backend.skip !== undefined)(`${backend.name} inbox${backend.skip ? ` (skipped: ${backend.skip})` : ""}`, () => {
    test.concurrent(
      "a stored delivery is claimed once, byte for byte, with its attempt counted, and leaves once done",
      () =>
        using(async (defer) => {
          const [store, other] = await backend.open(defer);
          const bytes = new Uint8Array([0, 255, 10, 13, 0xc3, 0x28, 7]);
          const stored = entry("s1", bytes);
          expect(await store.inbox.add(stored, ROOMY)).toBe(true);
          expect(await store.inbox.stats()).toEqual({ pending: 1, failed: 0, bytes: 7 });
          const claimed = await other.inbox.claim("w1", 10_000, true);
          expect(claimed).toEqual({ ...stored, body: expect.any(Uint8Array), attempt: 1 });
          expect(Array.from(claimed!.body)).toEqual(Array.from(bytes));
          expect(await store.inbox.claim("w2", 10_000, true)).toBeUndefined();
          expect((await store.inbox.list()).map((s) => [s.id, s.state, s.attempts])).toEqual([[stored.id, "processing", 1]]);
          expect(await store.inbox.done(stored.id, "w2")).toBe(false);
          expect(await store.inbox.done(stored.id, "w1")).toBe(true);
          expect(await other.inbox.stats()).toEqual({ pending: 0, failed: 0, bytes: 0 });
          expect(await store.inbox.nextDueInMs(true)).toBeUndefined();
        }),
      TIMEOUT_MS,
    );

    test.concurrent(
      "ordered: a subscription's next delivery waits while the one before it is claimed or waits for a retry; others go on",
      () =>
        using(async (defer) => {
          const [store, other] = await backend.open(defer);
          const [a1, a2, b1] = [entry("a"), entry("a"), entry("b")];
          for (const e of [a1, a2, b1]) expect(await store.inbox.add(e, ROOMY)).toBe(true);
          expect((await store.inbox.claim("w1", 10_000, true))?.id).toBe(a1.id);
          expect((await other.inbox.claim("w2", 10_000, true))?.id).toBe(b1.id);
          expect(await other.inbox.claim("w2", 10_000, true)).toBeUndefined();
          // Unordered, a2 may go at once.
          expect((await other.inbox.claim("w2", 10_000, false))?.id).toBe(a2.id);
          expect(await other.inbox.retry(a2.id, "w2", 0, "not yet")).toBe(true);
          // a1 fails and waits a minute: a2 still waits behind it.
          expect(await store.inbox.retry(a1.id, "w1", 60_000, "Error: database down")).toBe(true);
          expect(await other.inbox.claim("w2", 10_000, true)).toBeUndefined();
          expect(await other.inbox.done(b1.id, "w2")).toBe(true);
          const due = await store.inbox.nextDueInMs(true);
          expect(due).toBeGreaterThan(58_000);
          expect(due).toBeLessThanOrEqual(60_000);
          const listed = await store.inbox.list();
          expect(listed.map((s) => [s.id, s.state, s.attempts, s.lastError ?? null])).toEqual([
            [a1.id, "pending", 1, "Error: database down"],
            [a2.id, "pending", 1, "not yet"],
          ]);
        }),
      TIMEOUT_MS,
    );

    test.concurrent(
      "a dead letter is kept, lets its subscription's next delivery go, and can be retried or dropped",
      () =>
        using(async (defer) => {
          const [store, other] = await backend.open(defer);
          const [a1, a2] = [entry("a"), entry("a")];
          for (const e of [a1, a2]) expect(await store.inbox.add(e, ROOMY)).toBe(true);
          expect((await store.inbox.claim("w1", 10_000, true))?.id).toBe(a1.id);
          expect(await other.inbox.fail(a1.id, "w2", "not mine")).toBe(false);
          expect(await store.inbox.fail(a1.id, "w1", "Error: bad feed")).toBe(true);
          expect(await store.inbox.stats()).toMatchObject({ pending: 1, failed: 1 });
          expect((await other.inbox.claim("w2", 10_000, true))?.id).toBe(a2.id);
          expect(await other.inbox.done(a2.id, "w2")).toBe(true);
          expect((await store.inbox.list()).map((s) => [s.id, s.state, s.lastError])).toEqual([[a1.id, "failed", "Error: bad feed"]]);
          expect(await store.inbox.drop(a2.id)).toBe(false);
          expect(await store.inbox.requeue(a1.id)).toBe(true);
          expect(await store.inbox.requeue(a1.id)).toBe(false);
          const again = await other.inbox.claim("w2", 10_000, true);
          expect([again?.id, again?.attempt]).toEqual([a1.id, 1]);
          expect(await other.inbox.fail(a1.id, "w2", "Error: still bad")).toBe(true);
          expect(await store.inbox.drop(a1.id)).toBe(true);
          expect(await store.inbox.stats()).toEqual({ pending: 0, failed: 0, bytes: 0 });
        }),
      TIMEOUT_MS,
    );

    test.concurrent("past maxCount or maxBytes (dead letters included) nothing is stored", () =>
      using(async (defer) => {
        const [store] = await backend.open(defer);
        const limits = { maxCount: 2, maxBytes: 10 };
        const first = entry("a", "12345");
        expect(await store.inbox.add(first, limits)).toBe(true);
        expect(await store.inbox.add(entry("a", "123456"), limits)).toBe(false);
        expect(await store.inbox.add(entry("a", "12345"), limits)).toBe(true);
        expect(await store.inbox.add(entry("a", "1"), limits)).toBe(false);
        expect(await store.inbox.stats()).toEqual({ pending: 2, failed: 0, bytes: 10 });
        await store.inbox.claim("w", 10_000, true);
        await store.inbox.fail(first.id, "w", "x");
        expect(await store.inbox.add(entry("a", "1"), limits)).toBe(false);
        await store.inbox.drop(first.id);
        expect(await store.inbox.add(entry("a", "1"), limits)).toBe(true);
        // Added at once (SQLite commits them together), to a fresh store: the limit holds one by one, in order.
        const [fresh] = await backend.open(defer);
        const more = Array.from({ length: 5 }, (_, i) => entry("b", `${i}`));
        const together = await Promise.all(more.map((e) => fresh.inbox.add(e, { maxCount: 3, maxBytes: 100 })));
        expect(together).toEqual([true, true, true, false, false]);
      }), TIMEOUT_MS);

    test.concurrent(
      "a lease that is not renewed ends: another owner takes the delivery (its second attempt), not before; the first owner's calls then do nothing",
      () =>
        using(async (defer) => {
          const [store, other] = await backend.open(defer);
          const e = entry("a");
          await store.inbox.add(e, ROOMY);
          const claimedAt = performance.now();
          expect((await store.inbox.claim("w1", 300, true))?.attempt).toBe(1);
          expect(await store.inbox.extend(e.id, "w1", 300)).toBe(true);
          expect(await other.inbox.claim("w2", 10_000, true)).toBeUndefined();
          const due = await other.inbox.nextDueInMs(true);
          expect(due).toBeGreaterThan(200);
          expect(due).toBeLessThanOrEqual(300);
          await Bun.sleep(due! + 20);
          const taken = await other.inbox.claim("w2", 10_000, true);
          expect(performance.now() - claimedAt).toBeGreaterThanOrEqual(250);
          expect([taken?.id, taken?.attempt]).toEqual([e.id, 2]);
          expect(await store.inbox.extend(e.id, "w1", 300)).toBe(false);
          expect(await store.inbox.done(e.id, "w1")).toBe(false);
          expect(await other.inbox.done(e.id, "w2")).toBe(true);
        }),
      TIMEOUT_MS,
    );

    test.concurrent(
      "two stores claiming at once take each of 200 deliveries once, each subscription's in arrival order",
      () =>
        using(async (defer) => {
          const [store, other] = await backend.open(defer);
          const added = Array.from({ length: 200 }, (_, i) => entry(`s${i % 4}`, `${i}`));
          for (const e of added) expect(await store.inbox.add(e, ROOMY)).toBe(true);
          const taken: Array<[string, string]> = [];
          const worker = async (s: SubscriptionStore, owner: string) => {
            for (let idle = 0; idle < 3;) {
              const claimed = await s.inbox.claim(owner, 10_000, true);
              if (claimed === undefined) {
                idle++;
                await Bun.sleep(1);
                continue;
              }
              idle = 0;
              taken.push([claimed.subscription.id, text(claimed.body)!]);
              expect(await s.inbox.done(claimed.id, owner)).toBe(true);
            }
          };
          await Promise.all([worker(store, "w1"), worker(other, "w2"), worker(store, "w3"), worker(other, "w4")]);
          expect(taken.length).toBe(200);
          for (const sub of ["s0", "s1", "s2", "s3"]) {
            const bodies = taken.filter(([s]) => s === sub).map(([, body]) => Number(body));
            expect(bodies).toEqual([...bodies].sort((x, y) => x - y));
            expect(bodies.length).toBe(50);
          }
        }),
      TIMEOUT_MS,
    );
  });
}

test(
  "SQLite: deliveries added in one turn share one commit; one whose insert fails is refused alone, the others are stored",
  () =>
    using(async (defer) => {
      const path = join(scratch(defer), "websub.sqlite");
      const store = await sqliteStore(path);
      defer(() => store.close());
      const db = new DatabaseSync(path);
      defer(() => db.close());
      db.exec("CREATE TRIGGER refuse BEFORE INSERT ON inbox WHEN NEW.bytes = 6 BEGIN SELECT RAISE(ABORT, 'refused'); END");
      const [a, bad, b] = [entry("a", "12345"), entry("a", "123456"), entry("a", "54321")];
      const settled = await Promise.allSettled([a, bad, b].map((e) => store.inbox.add(e, ROOMY)));
      expect(settled.map((r) => (r.status === "fulfilled" ? r.value : (r.reason as Error).message))).toEqual([true, "refused", true]);
      // Committed: another connection sees both.
      expect(db.prepare("SELECT id FROM inbox ORDER BY seq").all().map((row) => row.id)).toEqual([a.id, b.id]);
    }),
  TIMEOUT_MS,
);

test("a SQLite file of schema version 1 (subscriptions only) gets the inbox, its subscriptions kept", () =>
  using(async (defer) => {
    const path = join(scratch(defer), "v1.sqlite");
    const db = new DatabaseSync(path);
    db.exec(`CREATE TABLE subscriptions (id TEXT PRIMARY KEY NOT NULL, topic TEXT NOT NULL, state TEXT NOT NULL,
      next_attempt_at_ms INTEGER, data TEXT NOT NULL) STRICT;
      CREATE TABLE locks (name TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL, until_ms INTEGER NOT NULL) STRICT;
      PRAGMA user_version = 1;`);
    const sub = { id: "a", source: "s", origin: "config", topic: "t", hub: "h", callbackUrl: "c", state: "active", updatedAtMs: 1 };
    db.prepare("INSERT INTO subscriptions VALUES (?, ?, ?, NULL, ?)").run("a", "t", "active", JSON.stringify(sub));
    db.close();
    const store = await sqliteStore(path);
    defer(() => store.close());
    expect(await store.list()).toEqual([sub as never]);
    expect(await store.inbox.add(entry("a"), ROOMY)).toBe(true);
    expect(await store.inbox.stats()).toMatchObject({ pending: 1 });
  }), TIMEOUT_MS);

test(
  "npm run websub -- inbox lists what waits and what failed (why, never a body); retry and drop take a dead letter's id",
  () =>
    using(async (defer) => {
      const store = await sqliteStore(join(scratch(defer), "websub.sqlite"));
      defer(() => store.close());
      const [bad, waiting] = [entry("a", "secret body"), entry("b", "another body")];
      await store.inbox.add(bad, ROOMY);
      await store.inbox.add(waiting, ROOMY);
      await store.inbox.claim("w", 10_000, false);
      await store.inbox.fail(bad.id, "w", "Error: The API answered 500");
      const lines: Array<Record<string, unknown>> = [];
      const cli = (...args: string[]) => run(args, store, {}, (line) => lines.push(line as Record<string, unknown>));
      expect(await cli("inbox")).toBe(0);
      expect(lines).toEqual([
        expect.objectContaining({ id: bad.id, state: "failed", subscription: "a", attempts: 1, lastError: "Error: The API answered 500" }),
        expect.objectContaining({ id: waiting.id, state: "pending", subscription: "b", attempts: 0, lastError: null }),
        { event: "websub_inbox", pending: 1, processing: 0, failed: 1, bytes: 23 },
      ]);
      expect(JSON.stringify(lines)).not.toContain("body");
      lines.length = 0;
      expect(await cli("inbox", "retry", waiting.id)).toBe(1);
      expect(await cli("inbox", "retry", bad.id)).toBe(0);
      expect(lines.map((l) => l.event ?? l.error)).toEqual(["not_failed", "websub_delivery_requeued"]);
      // Both are due now: the one waiting longer (b) is taken first, then the retried one.
      const taken = [await store.inbox.claim("w", 10_000, true), await store.inbox.claim("w", 10_000, true)];
      expect(taken.map((e) => e?.id)).toEqual([waiting.id, bad.id]);
      await store.inbox.fail(bad.id, "w", "Error: again");
      expect(await cli("inbox", "drop", bad.id)).toBe(0);
      expect(await store.inbox.stats()).toEqual({ pending: 1, failed: 0, bytes: 12 });
      expect((await store.inbox.list()).map((e) => [e.id, e.state])).toEqual([[waiting.id, "processing"]]);
      expect(await cli("inbox", "frobnicate")).toBe(2);
    }),
  TIMEOUT_MS,
);

describe("processing (memory inbox)", () => {
  function setup(handle: (delivery: Delivery) => unknown, options: { attempts?: number } = {}) {
    const lines: Array<Record<string, unknown>> = [];
    const waiters = new Set<() => void>();
    const logger = createLogger((line) => {
      lines.push(JSON.parse(line));
      for (const wake of waiters) wake();
    });
    const store = memoryStore();
    const processor = startProcessor({ inbox: store.inbox, logger, handle, random: () => 1 }, {
      ordered: true,
      concurrency: 2,
      leaseMs: 5_000,
      attempts: options.attempts ?? 3,
      retryFirstMs: 50,
      retryMaxMs: 100,
    });
    const named = (event: string) => lines.filter((l) => l.event === event);
    /** Resolves once `count` events named `event` were logged. */
    const logged = (event: string, count: number) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${named(event).length} of ${count} "${event}"`)), 5_000);
        const check = () => {
          if (named(event).length < count) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    const add = async (e: InboxEntry) => {
      expect(await store.inbox.add(e, ROOMY)).toBe(true);
      processor.wake();
    };
    return { store, processor, named, logged, add };
  }

  test(
    "a handleContent that throws on its first attempt is retried after the first backoff step and processed; the attempt is counted",
    async () => {
      const attempts: number[] = [];
      const { store, processor, named, logged, add } = setup((delivery) => {
        attempts.push(delivery.attempt);
        if (delivery.attempt === 1) throw new Error("database down");
      });
      try {
        const started = performance.now();
        await add(entry("a"));
        await logged("websub_processed", 1);
        // random() = 1: the first wait is the whole first step, 50 ms.
        expect(performance.now() - started).toBeGreaterThanOrEqual(45);
        expect(performance.now() - started).toBeLessThan(1_000);
        expect(attempts).toEqual([1, 2]);
        expect(named("websub_processing_failed")).toMatchObject([{
          level: "warn",
          attempt: 1,
          retryInMs: 50,
          error: { message: "database down" },
        }]);
        expect(await store.inbox.stats()).toEqual({ pending: 0, failed: 0, bytes: 0 });
      } finally {
        await processor.stop(0);
      }
    },
    TIMEOUT_MS,
  );

  test("after the last attempt a delivery is a dead letter (an error event), and the next one of its subscription goes on", async () => {
    const seen: string[] = [];
    const { store, processor, named, logged, add } = setup((delivery) => {
      seen.push(text(delivery.body)!);
      if (text(delivery.body) === "poison") return Promise.reject(new Error("cannot parse"));
    });
    try {
      await add(entry("a", "poison"));
      await add(entry("a", "fine"));
      await logged("websub_processed", 1);
      expect(seen).toEqual(["poison", "poison", "poison", "fine"]);
      expect(named("websub_dead_letter")).toMatchObject([{ level: "error", attempts: 3, error: { message: "cannot parse" } }]);
      expect((await store.inbox.list()).map((s) => [s.state, s.attempts, s.lastError])).toEqual([["failed", 3, "Error: cannot parse"]]);
    } finally {
      await processor.stop(0);
    }
  }, TIMEOUT_MS);

  test(
    "a delivery claimed more often than allowed (its process ended during the last attempt) is kept as a dead letter without running again",
    async () => {
      const { store, processor, named, logged } = setup(() => {
        throw new Error("never called");
      }, { attempts: 1 });
      try {
        const e = entry("a");
        await store.inbox.add(e, ROOMY);
        // A process that claimed it and died: its lease has ended.
        await store.inbox.claim("dead", 1, true);
        await Bun.sleep(5);
        processor.wake();
        await logged("websub_dead_letter", 1);
        expect(named("websub_dead_letter")[0]).toMatchObject({ attempts: 1, error: "The process ended during the last attempt" });
      } finally {
        await processor.stop(0);
      }
    },
    TIMEOUT_MS,
  );

  test("stop() lets processing in progress finish within its grace, then hands what did not finish back at once", async () => {
    let release = () => {};
    let began = () => {};
    const slowBegan = new Promise<void>((resolve) => (began = resolve));
    const { store, processor, logged, add } = setup((delivery) => {
      if (text(delivery.body) !== "slow") return;
      began();
      return new Promise<void>((resolve) => (release = resolve));
    });
    await add(entry("a", "quick"));
    await add(entry("b", "slow"));
    await logged("websub_processed", 1);
    await slowBegan;
    const started = performance.now();
    await processor.stop(200);
    const took = performance.now() - started;
    expect(took).toBeGreaterThanOrEqual(190);
    expect(took).toBeLessThan(1_000);
    expect((await store.inbox.list()).map((s) => [s.subscriptionId, s.state])).toEqual([["b", "pending"]]);
    expect(await store.inbox.nextDueInMs(true)).toBe(0);
    release();
  }, TIMEOUT_MS);

  test("a store that fails is polled less and less often, each failure counted in its line, and the recovery logged", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger((line) => lines.push(JSON.parse(line)));
    const store = memoryStore();
    let down = true;
    const claim = store.inbox.claim.bind(store.inbox);
    store.inbox.claim = (...args) => down ? Promise.reject(new Error("store down")) : claim(...args);
    // A poll of 10 ms: without backing off, 30 failures in 300 ms; with it, 10 + 20 + 40 + 80 + 160.
    const processor = startProcessor({ inbox: store.inbox, logger, handle: () => {}, pollMs: 10 }, PROCESSING_DEFAULTS);
    try {
      await Bun.sleep(300);
      const failed = lines.filter((l) => l.event === "websub_inbox_failed");
      expect(failed.length).toBeGreaterThanOrEqual(4);
      expect(failed.length).toBeLessThanOrEqual(6);
      expect(failed.map((l) => l.failures)).toEqual(failed.map((_, i) => i + 1));
      down = false;
      await Bun.sleep(400);
      expect(lines.filter((l) => l.event === "websub_inbox_recovered")).toMatchObject([{ failures: failed.length }]);
    } finally {
      await processor.stop(0);
    }
  }, TIMEOUT_MS);
});
