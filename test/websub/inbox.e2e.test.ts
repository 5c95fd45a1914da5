import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { fetchOnce, get, metric } from "../../harness/http.ts";
import { connect } from "../../harness/raw_client.ts";
import { ROOT } from "../../harness/process.ts";
import { redisMissing, type RedisServer, startRedis } from "../../harness/redis.ts";
import { startServer } from "../../harness/servers.ts";
import { using, within } from "../../harness/wait.ts";
import type { Engine } from "../../src/policy/types.ts";
import { signBody } from "../../src/websub/websub.ts";
import { websubCli } from "./_cli.ts";
import { startDownstream } from "./_downstream.ts";
import { HUB_TOPIC, startHub } from "./_hub.ts";

const SECRET = "inbox-secret";
/**
 * Per test: these run at once, and their servers start two at a time (harness/servers.ts), so a
 * test's budget includes its turn to start; under a busy machine the last ones wait tens of seconds.
 */
const TEST_MS = 60_000;
const REDIS_MISSING = redisMissing();

type Defer = (cleanup: () => unknown) => void;
type Kind = "sqlite" | "redis";

/** A store of `kind` of the test's own: a SQLite file in a scratch folder, or a redis-server on 127.0.0.1. */
async function storeOf(kind: Kind, defer: Defer): Promise<{ spec: string; redis?: RedisServer; path?: string }> {
  if (kind === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "websub-inbox-e2e-"));
    defer(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "websub.sqlite");
    return { spec: path, path };
  }
  const redis = await startRedis();
  if (!redis) throw new Error(REDIS_MISSING);
  defer(() => redis.close());
  return { spec: redis.url, redis };
}

/**
 * The hub simulator, the API the fixture's handleContent writes to, and a server on `engine`
 * subscribed through the hub with a store of `kind`; short leases and backoffs, as a test can wait for.
 */
async function subscribed(engine: Engine, kind: Kind, defer: Defer, extra: Record<string, string> = {}) {
  const store = await storeOf(kind, defer);
  const hub = await startHub();
  defer(() => hub.close());
  const downstream = await startDownstream();
  defer(() => downstream.close());
  const env = {
    WEBSUB_HUB: hub.url,
    WEBSUB_TOPIC: HUB_TOPIC,
    WEBSUB_SECRET: SECRET,
    WEBSUB_STORE: store.spec,
    WEBSUB_HANDLER: `${ROOT}test/websub/_content.ts`,
    DOWNSTREAM_URL: downstream.url,
    WEBSUB_PROCESSING_LEASE: "1s",
    WEBSUB_RETRY_FIRST: "100ms",
    WEBSUB_RETRY_MAX: "1s",
    ...extra,
  };
  const server = await startServer(engine, env);
  defer(() => server.kill());
  const callback = await within(hub.verified, 8_000, "verification of intent");
  return { store, hub, downstream, env, server, callback };
}

/** `publish` each body once, in order; the hub's answers. */
async function publishAll(hub: { publish(body: string): Promise<Array<{ status: number }>> }, bodies: string[]): Promise<number[]> {
  const statuses: number[] = [];
  for (const body of bodies) statuses.push(...(await hub.publish(body)).map((p) => p.status));
  return statuses;
}

const unique = (list: string[]) => [...new Set(list)];

/** `npm run websub -- ...args` on `store`. */
const cli = (args: string[], store: string) => websubCli(args, { WEBSUB_STORE: store });

const STORES: Array<{ engine: Engine; kind: Kind }> = [
  { engine: "node-http", kind: "sqlite" },
  { engine: "deno-per-connection", kind: "sqlite" },
  { engine: "bun-serve", kind: "redis" },
];

describe("the inbox: delivered means stored", () => {
  for (const { engine, kind } of STORES) {
    const missing = kind === "redis" ? REDIS_MISSING : undefined;
    const skip = missing ? ` (skipped: ${missing})` : "";

    test.skipIf(missing !== undefined).concurrent(
      `${engine} on ${kind}${skip}: deliveries acknowledged, the server SIGKILLed while processing the first, restarted on the same store: every delivery processed, in order`,
      () =>
        using(async (defer) => {
          const { hub, downstream, env, server } = await subscribed(engine, kind, defer);
          // The API hangs: the first delivery is in progress when the server dies, the others wait.
          const held: Array<() => void> = [];
          downstream.answer = () => new Promise<number>((resolve) => held.push(() => resolve(200)));
          const bodies = Array.from({ length: 8 }, (_, i) => `item ${i}`);
          expect(await publishAll(hub, bodies)).toEqual(bodies.map(() => 202));
          await downstream.until(() => downstream.received.length === 1, 5_000, "the first delivery in progress");
          await server.kill();
          downstream.answer = () => 200;
          for (const release of held) release();

          const second = await startServer(engine, env);
          defer(() => second.kill());
          await downstream.until(() => unique(downstream.taken()).length === bodies.length, 10_000, "every delivery processed");
          expect(unique(downstream.taken())).toEqual(bodies);
          // The one in progress when the server died ran again (at least once); no other ran twice.
          expect(downstream.received.map((r) => r.body)).toEqual([bodies[0], ...bodies]);
          expect(downstream.received[0]!.key).toBe(downstream.received[1]!.key);
          await second.waitForEvent("websub_processed", 2_000, () => second.named("websub_processed").length === bodies.length);
          expect(second.named("websub_processed")[0]).toMatchObject({ attempt: 2 });
          expect(second.nonJsonLines).toEqual([]);
        }),
      TEST_MS,
    );

    test.skipIf(missing !== undefined).concurrent(
      `${engine} on ${kind}${skip}: a handleContent that throws is retried and processed; past WEBSUB_INBOX_LIMIT the hub gets 503 with Retry-After`,
      () =>
        using(async (defer) => {
          const { hub, downstream, server } = await subscribed(engine, kind, defer, { WEBSUB_INBOX_LIMIT: "3" });
          // The API is down for its first request.
          let down = true;
          downstream.answer = () => (down ? (down = false, 503) : 200);
          expect(await publishAll(hub, ["flaky"])).toEqual([202]);
          await server.waitForEvent("websub_processed", 5_000);
          expect(downstream.received.map((r) => [r.body, r.status])).toEqual([["flaky", 503], ["flaky", 200]]);
          expect(downstream.received[0]!.key).toBe(downstream.received[1]!.key);
          expect(server.named("websub_processing_failed")).toMatchObject([
            { level: "warn", attempt: 1, error: { message: "The API answered 503" } },
          ]);

          // The API hangs: three wait (one in progress), the fourth is refused until there is room.
          const held: Array<() => void> = [];
          downstream.answer = () => new Promise<number>((resolve) => held.push(() => resolve(200)));
          expect(await publishAll(hub, ["a", "b", "c"])).toEqual([202, 202, 202]);
          const refused = await fetch(hub.verifications[0]!.callback, {
            method: "POST",
            body: "d",
            headers: { "x-hub-signature": await signBody(new TextEncoder().encode("d"), SECRET) },
          });
          expect([refused.status, refused.headers.get("retry-after")]).toEqual([503, "30"]);
          expect(await refused.json()).toMatchObject({ error: "inbox_full" });
          downstream.answer = () => 200;
          for (const release of held) release();
          await downstream.until(() => downstream.taken().length === 4, 5_000, "a, b and c processed");
          expect(await publishAll(hub, ["d"])).toEqual([202]);
          await server.waitForEvent("websub_processed", 5_000, () => server.named("websub_processed").length === 5);
          expect(downstream.taken()).toEqual(["flaky", "a", "b", "c", "d"]);
          const metrics = await (await fetchOnce(`${server.url}/metrics`)).text();
          expect(metric(metrics, 'websub_deliveries_total{result="inbox_full"}')).toBe(1);
          expect(metric(metrics, 'websub_processing_total{result="processed"}')).toBe(5);
          expect(metric(metrics, 'websub_processing_total{result="retried"}')).toBe(1);
          expect(metric(metrics, 'websub_processing_total{result="failed"}')).toBe(0);
        }),
      TEST_MS,
    );
  }

  for (const engine of ["node-http", "deno-per-connection"] as const) {
    test.concurrent(
      `${engine} on sqlite: an inbox that cannot be written answers the hub 503 (it sends again) and logs an error; once it can, the delivery is taken`,
      () =>
        using(async (defer) => {
          const { store, hub, downstream, server } = await subscribed(engine, "sqlite", defer);
          // Another process makes every insert into the inbox fail, as a full disk would.
          const db = new DatabaseSync(store.path!);
          defer(() => db.close());
          db.exec("CREATE TRIGGER refuse BEFORE INSERT ON inbox BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END");
          expect(await publishAll(hub, ["lost?"])).toEqual([503]);
          const failed = await server.waitForEvent("websub_inbox_write_failed", 2_000);
          expect(failed).toMatchObject({ level: "error", error: { message: expect.stringContaining("database or disk is full") } });
          db.exec("DROP TRIGGER refuse");
          // The hub's retry.
          expect(await publishAll(hub, ["lost?"])).toEqual([202]);
          await downstream.until(() => downstream.taken().length === 1, 5_000, "the retried delivery processed");
          const metrics = await (await fetchOnce(`${server.url}/metrics`)).text();
          expect(metric(metrics, 'websub_deliveries_total{result="store_failed"}')).toBe(1);
        }),
      TEST_MS,
    );
  }

  test.skipIf(REDIS_MISSING !== undefined).concurrent(
    `bun-serve on redis${REDIS_MISSING ? ` (skipped: ${REDIS_MISSING})` : ""}: with redis-server gone a delivery gets a 5xx, never a 2xx`,
    () =>
      using(async (defer) => {
        const { store, hub } = await subscribed("bun-serve", "redis", defer);
        await store.redis!.kill();
        const [status] = await publishAll(hub, ["lost?"]);
        expect(status).toBeGreaterThanOrEqual(500);
        expect(status).toBeLessThan(600);
      }),
    TEST_MS,
  );

  test.concurrent(
    "node-http on sqlite: after WEBSUB_RETRY_ATTEMPTS a delivery is a dead letter; npm run websub -- inbox lists it with its error, and inbox retry has it processed",
    () =>
      using(async (defer) => {
        const { store, hub, downstream, server } = await subscribed("node-http", "sqlite", defer, { WEBSUB_RETRY_ATTEMPTS: "2" });
        downstream.answer = () => 500;
        expect(await publishAll(hub, ["doomed"])).toEqual([202]);
        const dead = await server.waitForEvent("websub_dead_letter", 5_000);
        expect(dead).toMatchObject({ level: "error", attempts: 2, error: { message: "The API answered 500" } });
        expect(downstream.received.map((r) => r.status)).toEqual([500, 500]);

        const listed = await cli(["inbox"], store.spec);
        expect(listed.code).toBe(0);
        expect(listed.lines).toEqual([
          expect.objectContaining({ id: dead.delivery, state: "failed", attempts: 2, lastError: "Error: The API answered 500" }),
          expect.objectContaining({ event: "websub_inbox", pending: 0, failed: 1 }),
        ]);
        downstream.answer = () => 200;
        const retried = await cli(["inbox", "retry", String(dead.delivery)], store.spec);
        expect(retried.lines).toEqual([expect.objectContaining({ event: "websub_delivery_requeued", id: dead.delivery })]);
        const processed = await server.waitForEvent("websub_processed", 5_000);
        expect(processed).toMatchObject({ id: dead.id, delivery: dead.delivery, attempt: 1 });
        expect(downstream.taken()).toEqual(["doomed"]);
        expect((await cli(["inbox"], store.spec)).lines).toEqual([expect.objectContaining({ pending: 0, failed: 0 })]);
      }),
    TEST_MS,
  );

  test.concurrent(
    "bun-serve on sqlite: at SIGTERM processing in progress finishes within SHUTDOWN_TIMEOUT; what does not stays in the inbox and is processed after the restart",
    () =>
      using(async (defer) => {
        const { hub, downstream, env, server } = await subscribed("bun-serve", "sqlite", defer, { SHUTDOWN_TIMEOUT: "2s" });
        let release = () => {};
        downstream.answer = () => new Promise<number>((resolve) => (release = () => resolve(200)));
        expect(await publishAll(hub, ["finishes"])).toEqual([202]);
        await downstream.until(() => downstream.received.length === 1, 5_000, "processing in progress");
        const signalled = performance.now();
        server.signal("SIGTERM");
        setTimeout(() => release(), 300);
        expect(await server.exitCode(5_000)).toBe(0);
        const took = performance.now() - signalled;
        expect(took).toBeGreaterThanOrEqual(290);
        expect(took).toBeLessThan(2_000);
        expect(server.named("websub_processed")).toMatchObject([{ attempt: 1 }]);

        // Now it hangs past SHUTDOWN_TIMEOUT, and a slow request holds the drain for all of it: the
        // processing gets what is left of the same SHUTDOWN_TIMEOUT (nothing), not one of its own,
        // so the server exits on time, and the delivery stays.
        // The same port: the hub's callback.
        const second = await startServer("bun-serve", { ...env, PORT: String(server.port) });
        defer(() => second.kill());
        downstream.answer = () => new Promise<number>(() => {});
        expect(await publishAll(hub, ["outlasts"])).toEqual([202]);
        await downstream.until(() => downstream.received.length === 2, 5_000, "processing in progress");
        const slow = await connect(second.port);
        defer(() => slow.destroy());
        slow.write(get("/slow?ms=10000"));
        await slow.waitFor((d) => d.includes("Hello World"), 2_000, "the slow response's first part");
        const again = performance.now();
        second.signal("SIGTERM");
        expect(await second.exitCode(6_000)).toBe(0);
        const waited = performance.now() - again;
        expect(waited).toBeGreaterThanOrEqual(1_900);
        expect(waited).toBeLessThan(2_800);
        expect((await second.waitForEvent("shutdown_complete", 1_000)).cut).toBe(1);
        expect(second.named("websub_processing_interrupted")).toHaveLength(1);

        downstream.answer = () => 200;
        const third = await startServer("bun-serve", env);
        defer(() => third.kill());
        const processed = await third.waitForEvent("websub_processed", 5_000);
        expect(processed).toMatchObject({ attempt: 2 });
        expect(downstream.taken()).toEqual(["finishes", "outlasts"]);
      }),
    TEST_MS,
  );

  for (const engine of ["node-http", "bun-serve", "deno-per-connection"] as const) {
    test.concurrent(
      `${engine}, WORKERS=2 on one SQLite file: 40 deliveries over both workers, each processed exactly once`,
      () =>
        using(async (defer) => {
          const { hub, downstream } = await subscribed(engine, "sqlite", defer, { WORKERS: "2" });
          const bodies = Array.from({ length: 20 }, (_, i) => `item ${i}`);
          const delivered = await hub.deliver(20);
          expect(new Set(delivered.statuses)).toEqual(new Set([202]));
          expect(await publishAll(hub, bodies)).toEqual(bodies.map(() => 202));
          await downstream.until(() => downstream.taken().length === 40, 10_000, "40 deliveries processed");
          // Once each: nothing sent twice, no key twice.
          expect(downstream.received.length).toBe(40);
          expect(new Set(downstream.received.map((r) => r.key)).size).toBe(40);
          expect(downstream.taken().filter((b) => b.startsWith("item "))).toEqual(bodies);
        }),
      TEST_MS,
    );
  }

  test.skipIf(REDIS_MISSING !== undefined).concurrent(
    `three processes on one Redis (bun-serve, deno-per-connection, node-http)${
      REDIS_MISSING ? ` (skipped: ${REDIS_MISSING})` : ""
    }: deliveries to any of them are each processed exactly once, in arrival order`,
    () =>
      using(async (defer) => {
        const { hub, downstream, env, server, callback } = await subscribed("bun-serve", "redis", defer);
        // Another host behind the same address: the same callback base, the same store.
        const others = await Promise.all(
          (["deno-per-connection", "node-http"] as const).map((engine) => startServer(engine, { ...env, WEBSUB_CALLBACK_URL: server.url })),
        );
        for (const other of others) defer(() => other.kill());
        const urls = [server.url, ...others.map((other) => other.url)];
        const path = new URL(callback).pathname;
        const bodies = Array.from({ length: 21 }, (_, i) => `item ${i}`);
        for (const [i, body] of bodies.entries()) {
          // In turn to each process, as a load balancer would.
          const target = `${urls[i % urls.length]}${path}`;
          const res = await fetch(target, {
            method: "POST",
            body,
            headers: { "x-hub-signature": await signBody(new TextEncoder().encode(body), SECRET) },
          });
          expect(res.status).toBe(202);
        }
        await downstream.until(() => downstream.taken().length === 21, 10_000, "21 deliveries processed");
        expect(downstream.taken()).toEqual(bodies);
        expect(downstream.received.length).toBe(21);
        expect(new Set(downstream.received.map((r) => r.key)).size).toBe(21);
        expect(hub.requests.length).toBe(1);
      }),
    TEST_MS,
  );
});
