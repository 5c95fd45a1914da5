import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fetchOnce, metric } from "../../harness/http.ts";
import { redisMissing, startRedis } from "../../harness/redis.ts";
import type { ServerProcess } from "../../harness/process.ts";
import { spawnServer, startServer } from "../../harness/servers.ts";
import { using, within } from "../../harness/wait.ts";
import type { Engine } from "../../src/policy/types.ts";
import { websubCli } from "./_cli.ts";
import { HUB_TOPIC, startHub } from "./_hub.ts";
import { startTopicServer } from "./_topic_server.ts";

const SECRET = "durable-secret";

type Defer = (cleanup: () => unknown) => void;

function scratch(defer: Defer): string {
  const dir = mkdtempSync(join(tmpdir(), "websub-durable-"));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** WEBSUB_STORE for a store of `kind`: a SQLite file in a scratch folder, or a redis-server of the test's own. */
async function storeOf(kind: "sqlite" | "redis", defer: Defer): Promise<string> {
  if (kind === "sqlite") return join(scratch(defer), "data", "websub.sqlite");
  const redis = await startRedis();
  if (!redis) throw new Error("redis-server did not start");
  defer(() => redis.close());
  return redis.url;
}

/**
 * A store of `kind`, the hub simulator, and a first server on `engine` subscribed through it (with
 * SECRET), the hub's verification of intent answered; `callback` is the callback it verified.
 */
async function subscribedOnce(engine: Engine, kind: "sqlite" | "redis", defer: Defer) {
  const store = await storeOf(kind, defer);
  const hub = await startHub();
  defer(() => hub.close());
  const env = { WEBSUB_HUB: hub.url, WEBSUB_TOPIC: HUB_TOPIC, WEBSUB_SECRET: SECRET, WEBSUB_STORE: store };
  const first = await startServer(engine, env);
  defer(() => first.kill());
  const callback = await within(hub.verified, 5_000, "verification of intent");
  return { store, hub, env, first, callback };
}

/** A server stopped as a container runtime stops it, and gone. */
async function stop(server: ServerProcess): Promise<void> {
  server.signal("SIGTERM");
  expect(await server.exitCode(5_000)).toBe(0);
}

/** A TCP forwarder to 127.0.0.1:`port`, as a proxy in front of the server: the same server at another URL, which it returns. */
async function forwarder(port: number, defer: Defer): Promise<string> {
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  };
  const server = createServer((client) => {
    const upstream = connect(port, "127.0.0.1");
    track(client);
    track(upstream);
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  defer(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const cli = websubCli;

/**
 * A subscription survives a restart: the same callback keeps working, deliveries continue, and the
 * hub is asked for nothing until renewal is due. On SQLite (the default, one host) and on Redis
 * (several hosts; a real redis-server, skipped with the reason when it is not installed).
 */
const STORES: Array<{ engine: Engine; kind: "sqlite" | "redis" }> = [
  { engine: "node-http", kind: "sqlite" },
  { engine: "deno-per-connection", kind: "sqlite" },
  { engine: "bun-serve", kind: "redis" },
];

describe("durable subscriptions", () => {
  for (const { engine, kind } of STORES) {
    const missing = kind === "redis" ? redisMissing() : undefined;
    test.skipIf(missing !== undefined)(
      `${engine} on ${kind}${
        missing ? ` (skipped: ${missing})` : ""
      }: a restart keeps the subscription, its callback and its deliveries, and asks the hub for nothing`,
      () =>
        using(async (defer) => {
          const { store, hub, env, first, callback } = await subscribedOnce(engine, kind, defer);
          await first.waitForEvent("websub_verified", 2_000);
          if (kind === "sqlite") expect(statSync(store).mode & 0o777).toBe(0o600);
          await stop(first);

          // The same port, as a restarted server behind a fixed address has.
          const second = await startServer(engine, { ...env, PORT: String(first.port) });
          defer(() => second.kill());
          const loaded = await second.waitForEvent("websub_subscriptions_loaded", 8_000);
          expect(loaded).toMatchObject({ subscriptions: 1, states: { active: 1 } });
          const delivered = await hub.deliver(5);
          expect(new Set(delivered.statuses)).toEqual(new Set([202]));
          await second.waitForEvent("content_received", 2_000, () => second.named("content_received").length === 5);
          // One subscription request in all: the restart asked the hub for nothing.
          expect(hub.requests.length).toBe(1);
          expect(hub.requests[0]!.get("hub.callback")).toBe(callback);
          expect(second.named("websub_subscribe_requested")).toEqual([]);
          expect(second.nonJsonLines).toEqual([]);
        }),
      30_000,
    );

    test.skipIf(missing !== undefined)(
      `${engine} on ${kind}${
        missing ? ` (skipped: ${missing})` : ""
      }: a changed WEBSUB_CALLBACK_URL subscribes the new callback, then unsubscribes the old one, whose path stays served: a publish is taken once`,
      () =>
        using(async (defer) => {
          const { hub, env, first, callback: old } = await subscribedOnce(engine, kind, defer);
          await stop(first);

          // The same server on the same port, now told it is reached through a proxy at another URL.
          const proxy = await forwarder(first.port, defer);
          const release = hub.hold("unsubscribe");
          const second = await startServer(engine, { ...env, PORT: String(first.port), WEBSUB_CALLBACK_URL: proxy });
          defer(() => second.kill());
          const moved = () => [...hub.subscriptions.keys()].find((callback) => callback.startsWith(`${proxy}/websub/`));
          await hub.until(() => moved() !== undefined, 8_000, "verified subscription at the new callback");
          // Until the hub verifies the old callback's unsubscription it delivers to both: the old one answers 410.
          expect(await hub.publish()).toEqual([
            { callback: old, status: 410, signed: true },
            { callback: moved()!, status: 202, signed: true },
          ]);
          await hub.until(() => hub.requests.length === 3, 5_000, "unsubscription request");
          expect(Object.fromEntries(hub.requests[2]!)).toEqual({ "hub.mode": "unsubscribe", "hub.topic": HUB_TOPIC, "hub.callback": old });
          release();
          await hub.until(() => !hub.subscriptions.has(old), 5_000, "old callback unsubscribed");
          // Confirmed at the old callback, which this server still serves.
          expect(hub.verifications.filter((v) => v.mode === "unsubscribe")).toEqual([{
            mode: "unsubscribe",
            callback: old,
            confirmed: true,
          }]);
          expect(await hub.publish()).toEqual([{ callback: moved()!, status: 202, signed: true }]);
          await second.waitForEvent("content_received", 2_000, () => second.named("content_received").length === 2);
          await second.waitForEvent("websub_unsubscribed", 2_000);
          const metrics = await (await fetchOnce(`${second.url}/metrics`)).text();
          expect(metric(metrics, 'websub_deliveries_total{result="accepted"}')).toBe(2);
          expect(metric(metrics, 'websub_deliveries_total{result="gone"}')).toBe(1);
          expect(second.nonJsonLines).toEqual([]);
        }),
      30_000,
    );

    test.skipIf(missing !== undefined)(
      `${engine} on ${kind}${
        missing ? ` (skipped: ${missing})` : ""
      }: WEBSUB_SECRET added, then changed, re-subscribes at once; until the hub verifies that, its unsigned or old-secret deliveries get 401`,
      () =>
        using(async (defer) => {
          const store = await storeOf(kind, defer);
          const hub = await startHub();
          defer(() => hub.close());
          const env = { WEBSUB_HUB: hub.url, WEBSUB_TOPIC: HUB_TOPIC, WEBSUB_STORE: store };
          const first = await startServer(engine, env);
          defer(() => first.kill());
          const callback = await within(hub.verified, 5_000, "verification of intent");
          expect(await hub.publish()).toEqual([{ callback, status: 202, signed: false }]);
          await stop(first);

          for (const [n, secret] of [[1, SECRET], [2, `${SECRET}-rotated`]] as const) {
            const release = hub.hold("subscribe");
            const server = await startServer(engine, { ...env, PORT: String(first.port), WEBSUB_SECRET: secret });
            defer(() => server.kill());
            // At startup, not at the renewal (45 minutes into this hub's lease): the same callback, with the secret.
            await hub.until(() => hub.requests.length === n + 1, 5_000, "re-subscription with the secret");
            expect(Object.fromEntries(hub.requests[n]!)).toEqual({
              "hub.mode": "subscribe",
              "hub.topic": HUB_TOPIC,
              "hub.callback": callback,
              "hub.secret": secret,
            });
            // Until it verifies the request, the hub signs as before (WebSub 5.1): refused, for it to retry (7).
            expect(await hub.publish()).toEqual([{ callback, status: 401, signed: n === 2 }]);
            release();
            await hub.until(() => hub.subscriptions.get(callback) === secret, 5_000, "the re-subscription verified");
            expect(await hub.publish()).toEqual([{ callback, status: 202, signed: true }]);
            await server.waitForEvent("content_received", 2_000);
            expect(server.named("websub_signature_rejected")).toMatchObject([{ check: n === 1 ? "missing" : "outdated" }]);
            expect(server.nonJsonLines).toEqual([]);
            await stop(server);
            expect(server.named("content_received")).toHaveLength(1);
          }
        }),
      40_000,
    );
  }

  test.concurrent(
    "WORKERS=2 on one SQLite file: the hub's verification and deliveries reach any worker, one worker renews, one scrape counts the subscription once",
    () =>
      using(async (defer) => {
        const dir = scratch(defer);
        const hub = await startHub();
        defer(() => hub.close());
        const server = await startServer("node-http", {
          WORKERS: "2",
          WEBSUB_HUB: hub.url,
          WEBSUB_TOPIC: HUB_TOPIC,
          WEBSUB_SECRET: SECRET,
          WEBSUB_STORE: join(dir, "websub.sqlite"),
        });
        defer(() => server.kill());
        await within(hub.verified, 8_000, "verification of intent");
        const delivered = await hub.deliver(20);
        expect(new Set(delivered.statuses)).toEqual(new Set([202]));
        await server.waitForEvent("content_received", 3_000, () => server.named("content_received").length === 20);
        // Deliveries reach both workers (the kernel balances connections on the shared port); each
        // stores what it receives, and either may process it (inbox.e2e.test.ts shows each once).
        const workers = new Set(server.named("websub_delivery").map((e) => e.worker));
        expect(workers.size).toBe(2);
        expect(hub.requests.length).toBe(1);
        // Only the worker doing the subscriber's work reports subscriptions, as of its last look at
        // the store (every 5 s; the verification may have reached the other worker): scraped until
        // it shows the subscription active, for at most 7 s.
        const activeIn = (text: string) =>
          text.split("\n").filter((line) => line.startsWith("websub_subscriptions{") && line.includes('state="active"'));
        let metrics = "";
        for (const deadline = Date.now() + 7_000; Date.now() < deadline;) {
          metrics = await (await fetchOnce(`${server.url}/metrics`)).text();
          if (activeIn(metrics).some((line) => line.endsWith(" 1"))) break;
          await Bun.sleep(200);
        }
        const active = activeIn(metrics);
        expect(active).toEqual([expect.stringMatching(/^websub_subscriptions\{worker="[01]",state="active"\} 1$/)]);
        expect(metric(metrics, 'websub_deliveries_total{result="accepted"}')).toBe(20);
      }),
    30_000,
  );

  test.concurrent(
    "npm run websub: list shows subscriptions without their secret; subscribe and unsubscribe a topic while the server runs",
    () =>
      using(async (defer) => {
        const dir = scratch(defer);
        const store = join(dir, "websub.sqlite");
        // A hub that accepts requests and never verifies them: they stay pending.
        const topics = await startTopicServer();
        defer(() => topics.close());
        const configured = `${topics.url}/blog/100`;
        const server = await startServer("node-http", { WEBSUB_TOPIC: configured, WEBSUB_SECRET: SECRET, WEBSUB_STORE: store });
        defer(() => server.kill());
        await server.waitForEvent("websub_subscribe_requested", 8_000);

        const listed = await cli(["list"], { WEBSUB_STORE: store });
        expect(listed.code).toBe(0);
        expect(listed.lines).toEqual([
          expect.objectContaining({ state: "pending", pending: "subscribe", source: configured, origin: "config", signed: true }),
        ]);
        expect(JSON.stringify(listed.lines)).not.toContain(SECRET);

        // A topic of the operator's: the running server picks it up at its next look and asks the hub.
        const added = await cli(["subscribe", `${topics.url}/blog/101`], { WEBSUB_STORE: store });
        expect(added.code).toBe(0);
        expect(added.lines[0]).toMatchObject({ event: "websub_subscribe_queued", origin: "manual", state: "pending" });
        const requested = await server.waitForEvent("websub_subscribe_requested", 8_000, (e) => e.topic !== configured);
        expect(requested.topic).toBe(`${topics.url}/blog/101`);

        const dropped = await cli(["unsubscribe", configured], { WEBSUB_STORE: store, WEBSUB_TOPIC: configured });
        expect(dropped.code).toBe(0);
        expect(dropped.lines.map((l) => l.event ?? l.warning)).toEqual(["websub_unsubscribe_queued", "still_configured"]);
        await server.waitForEvent("websub_unsubscribe_requested", 8_000);
        const forms = topics.hubPosts.map((p) => new URLSearchParams(p.body)).map((f) => [f.get("hub.mode"), f.get("hub.topic")]);
        expect(forms.slice(0, 3)).toEqual([
          ["subscribe", configured],
          ["subscribe", `${topics.url}/blog/101`],
          ["unsubscribe", configured],
        ]);
        // The topic is still in WEBSUB_TOPIC (the CLI warned so), and the configuration wins: the
        // pass that sends the unsubscription may already ask for it again, at the end. Nothing else.
        expect(forms.slice(3)).toEqual(forms.length > 3 ? [["subscribe", configured]] : []);

        expect((await cli(["unsubscribe", "https://nowhere.example/feed"], { WEBSUB_STORE: store })).code).toBe(1);
        expect((await cli(["frobnicate"], { WEBSUB_STORE: store })).code).toBe(2);
        expect((await cli(["list"], { WEBSUB_STORE: "memory" })).code).toBe(2);
      }),
    40_000,
  );
});

test.concurrent(
  "discovery at startup: with WEBSUB_TOPIC alone the server finds the hub in the topic's Link headers and subscribes to its rel=self",
  () =>
    using(async (defer) => {
      const dir = scratch(defer);
      const topics = await startTopicServer();
      defer(() => topics.close());
      const server = await startServer("bun-serve", { WEBSUB_TOPIC: `${topics.url}/blog/200`, WEBSUB_STORE: join(dir, "websub.sqlite") });
      defer(() => server.kill());
      const requested = await server.waitForEvent("websub_subscribe_requested", 8_000);
      // websub.rocks 200: the topic's rel=self differs from the URL fetched, and is what the hub is asked for.
      expect(requested).toMatchObject({ topic: `${topics.url}/blog/200?self=other`, hub: `${topics.url}/blog/hub` });
      expect(String(requested.callbackUrl)).toStartWith(`${server.url}/websub/`);
      expect(topics.hubPosts.length).toBe(1);
      const form = new URLSearchParams(topics.hubPosts[0]!.body);
      expect([form.get("hub.mode"), form.get("hub.topic"), form.get("hub.callback")]).toEqual([
        "subscribe",
        `${topics.url}/blog/200?self=other`,
        String(requested.callbackUrl),
      ]);
    }),
  20_000,
);

test.concurrent(
  "WORKERS=2 with WEBSUB_STORE=memory stops the server at startup (exit 2), naming both variables",
  async () => {
    const server = spawnServer("node-http", { WORKERS: "2", WEBSUB_TOPIC: HUB_TOPIC, WEBSUB_STORE: "memory" });
    try {
      expect(await server.exitCode(10_000)).toBe(2);
      expect(server.stderr).toContain('WORKERS "2" cannot run the websub module: WEBSUB_STORE=memory');
      expect(server.events.map((e) => e.event)).not.toContain("listening");
    } finally {
      await server.kill();
    }
  },
  15_000,
);

test.concurrent(
  "a bad WEBSUB_CALLBACK_URL or WEBSUB_SECRET stops the server at startup (exit 2), naming the variable and never printing the secret",
  async () => {
    const secret = "x".repeat(200);
    const server = spawnServer("bun-serve", {
      WEBSUB_TOPIC: HUB_TOPIC,
      WEBSUB_CALLBACK_URL: "https://example.com/hooks?x=1",
      WEBSUB_SECRET: secret,
      WEBSUB_STORE: "memory",
    });
    try {
      expect(await server.exitCode(10_000)).toBe(2);
      expect(server.stderr).toContain('WEBSUB_CALLBACK_URL "https://example.com/hooks?x=1" has a query or a fragment');
      expect(server.stderr).toContain("WEBSUB_SECRET is 200 bytes long");
      expect(server.stderr).not.toContain(secret);
    } finally {
      await server.kill();
    }
  },
  15_000,
);
