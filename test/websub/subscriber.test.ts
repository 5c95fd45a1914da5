import { describe, expect, test } from "bun:test";
import { createServer, type Server } from "node:http";
import type { Socket } from "node:net";
import { Hono } from "hono";
import { using, within } from "../../harness/wait.ts";
import { createLogger } from "../../src/policy/log.ts";
import { startTopicServer } from "./_topic_server.ts";
import { run } from "../../src/websub/cli.ts";
import { backoffMs } from "../../src/websub/hub_client.ts";
import { memoryStore, type Subscription, type SubscriptionStore } from "../../src/websub/store/types.ts";
import {
  callbackUrlOf,
  LEASE_LOCK,
  renewAtMs,
  startSubscriber,
  type Subscriber,
  type SubscriberOptions,
} from "../../src/websub/subscriber.ts";
import { signBody, websubRoutes } from "../../src/websub/websub.ts";

/** The pinned clock's start; real time only paces the loop (pollMs), the clock decides what is due. */
const T0 = 1_700_000_000_000;
const BASE = "http://subscriber.test";
const POLL_MS = 40;
const VERIFY_TIMEOUT_MS = 60_000;
const TEST_MS = 10_000;
const WAIT_MS = 5_000;
const A = "https://publisher.example/a";
const B = "https://publisher.example/b";

type Defer = (cleanup: () => unknown) => void;
type Line = Record<string, unknown>;

/** Wakes waiters whenever something they may wait for happened: a hub request, a log line, a store write or claim. */
class Changes {
  readonly #waiters = new Set<() => void>();

  notify(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  until(condition: () => boolean, what: string, timeoutMs = WAIT_MS): Promise<void> {
    let check = () => {};
    const met = new Promise<void>((resolve) => {
      check = () => {
        if (condition()) resolve();
      };
    });
    this.#waiters.add(check);
    check();
    return within(met, timeoutMs, what).finally(() => this.#waiters.delete(check));
  }
}

/** A request the hub received. */
interface HubRequest {
  /** performance.now() when it arrived. */
  atMs: number;
  path: string;
  contentType: string | undefined;
  form: URLSearchParams;
}

/** What the hub answers: a status, a redirect, or nothing ever. */
type Reply = number | "hang" | { status: number; location: string };
type Replier = (index: number, request: HubRequest) => Reply | Promise<Reply>;

interface Hub {
  readonly url: string;
  readonly requests: readonly HubRequest[];
  /** Resolves once the hub has received `n` requests in all. */
  received(n: number): Promise<void>;
}

/** A hub on 127.0.0.1 that records each form POSTed to it and answers as `reply` says. */
async function startHub(defer: Defer, changes: Changes, reply: Replier): Promise<Hub> {
  const sockets = new Set<Socket>();
  const requests: HubRequest[] = [];
  const server: Server = createServer(async (req, res) => {
    const chunks: Uint8Array[] = [];
    for await (const chunk of req) chunks.push(chunk as Uint8Array);
    const index = requests.length;
    const request: HubRequest = {
      atMs: performance.now(),
      path: req.url ?? "/",
      contentType: req.headers["content-type"],
      form: new URLSearchParams(Buffer.concat(chunks).toString()),
    };
    requests.push(request);
    changes.notify();
    const answer = req.method === "POST" ? await reply(index, request) : 405;
    if (answer === "hang") return;
    if (typeof answer === "number") res.writeHead(answer, { "content-type": "text/plain" }).end(`answer ${answer}`);
    else res.writeHead(answer.status, { location: answer.location }).end();
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  defer(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hub`,
    requests,
    received: (n) => changes.until(() => requests.length >= n, `${n} hub request(s) (got ${requests.length})`),
  };
}

/** Everything a test drives: a clock, a store that reports its claims, a logger, a hub, the callback routes, subscribers. */
async function world(defer: Defer, options: { pinned?: boolean; reply?: Replier; secret?: string } = {}) {
  const changes = new Changes();
  const clock = { now: T0 };
  const now = options.pinned === false ? Date.now : () => clock.now;
  const lines: Line[] = [];
  const logger = createLogger((line) => {
    lines.push(JSON.parse(line));
    changes.notify();
  });
  const inner = memoryStore(now);
  const claims: Array<{ name: string; owner: string; ttlMs: number; ok: boolean }> = [];
  const store: SubscriptionStore = {
    ...inner,
    async put(subscription) {
      await inner.put(subscription);
      changes.notify();
    },
    async delete(id) {
      await inner.delete(id);
      changes.notify();
    },
    async claim(name, owner, ttlMs) {
      const ok = await inner.claim(name, owner, ttlMs);
      claims.push({ name, owner, ttlMs, ok });
      changes.notify();
      return ok;
    },
  };
  const hub = await startHub(defer, changes, options.reply ?? (() => 202));
  const subscribers: Subscriber[] = [];
  const app = new Hono().route(
    "/websub",
    websubRoutes({
      store,
      logger,
      maxBodyBytes: 1024,
      secret: options.secret,
      limits: { maxCount: 100, maxBytes: 1_000_000 },
      onChange: () => subscribers.forEach((s) => s.wake()),
      now,
      random: () => 0.5,
    }),
  );
  const named = (event: string) => lines.filter((l) => l.event === event);
  const okClaims = () => claims.filter((c) => c.ok).length;

  return {
    clock,
    changes,
    lines,
    store,
    claims,
    hub,
    app,
    named,
    /** Starts a subscriber with small timings, stopped when the test ends. */
    start(overrides: Partial<SubscriberOptions> = {}): Subscriber {
      const subscriber = startSubscriber({
        store,
        logger,
        topics: [],
        callbackBase: BASE,
        pollMs: POLL_MS,
        requestTimeoutMs: 2_000,
        verifyTimeoutMs: VERIFY_TIMEOUT_MS,
        retryBaseMs: 1_000,
        retryMaxMs: 60_000,
        now,
        random: () => 0.5,
        ...overrides,
      });
      subscribers.push(subscriber);
      defer(() => subscriber.stop());
      return subscriber;
    },
    /** Resolves once `event` has been logged `count` times in all. */
    event(event: string, count = 1): Promise<void> {
      return changes.until(() => named(event).length >= count, `${count} ${event} event(s) (got ${named(event).length})`);
    },
    /** Resolves once the lock holder has run `n` whole passes that started after this call. */
    passes(n: number): Promise<void> {
      const from = okClaims();
      // A pass starts with a claim; the (n+1)th claim from here means n passes started and ended.
      return changes.until(() => okClaims() >= from + n + 1, `${n} subscriber pass(es)`);
    },
    /** Acts as the hub: a verification of intent for the request `form`, through the callback routes. */
    async verify(form: URLSearchParams, params: Record<string, string> = {}) {
      const challenge = crypto.randomUUID();
      const url = new URL(form.get("hub.callback")!);
      url.search = new URLSearchParams({
        "hub.mode": form.get("hub.mode")!,
        "hub.topic": form.get("hub.topic")!,
        "hub.challenge": challenge,
        ...params,
      }).toString();
      const res = await app.request(url.href);
      return { status: res.status, body: await res.text(), challenge };
    },
    /**
     * A content delivery to the callback of `id`, signed with `secret` (by default the subscription's, null for
     * none); its status tells whether the subscription is active and the signature good.
     */
    async deliver(id: string, secret?: string | null): Promise<number> {
      const body = new TextEncoder().encode("<feed/>");
      const key = secret === undefined ? (await inner.get(id))?.secret : secret ?? undefined;
      const headers: Record<string, string> = key === undefined ? {} : { "x-hub-signature": await signBody(body, key) };
      const res = await app.request(callbackUrlOf(BASE, id), { method: "POST", body, headers });
      await res.body?.cancel();
      return res.status;
    },
    async only(): Promise<Subscription> {
      const all = await store.list();
      expect(all).toHaveLength(1);
      return all[0]!;
    },
    async bySource(source: string): Promise<Subscription> {
      const found = (await store.list()).find((s) => s.source === source);
      if (found === undefined) throw new Error(`no subscription for ${source}`);
      return found;
    },
  };
}

type World = Awaited<ReturnType<typeof world>>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("renewAtMs and callbackUrlOf", () => {
  test("renewal falls 75% to 85% of the way through the lease", () => {
    expect(renewAtMs(T0, 1_000, () => 0)).toBe(T0 + 750_000);
    expect(renewAtMs(T0, 1_000, () => 0.5)).toBe(T0 + 800_000);
    expect(renewAtMs(T0, 1_000, () => 0.999_99)).toBe(T0 + 849_999);
    for (let i = 0; i < 100; i++) {
      const at = renewAtMs(T0, 86_400);
      expect(at).toBeGreaterThanOrEqual(T0 + 0.75 * 86_400_000);
      expect(at).toBeLessThanOrEqual(T0 + 0.85 * 86_400_000);
    }
  });

  test("the callback is the base, without trailing slashes, plus /websub/<id>", () => {
    expect(callbackUrlOf("https://me.example", "abc")).toBe("https://me.example/websub/abc");
    expect(callbackUrlOf("https://me.example/hooks/", "abc")).toBe("https://me.example/hooks/websub/abc");
    expect(callbackUrlOf("http://127.0.0.1:8080//", "x")).toBe("http://127.0.0.1:8080/websub/x");
  });
});

describe("subscribing", () => {
  test(
    "discovers the topic's hub, then POSTs hub.callback, the rel=self topic, the secret and the lease",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const ts = await startTopicServer();
        defer(() => ts.close());
        // /blog/200 names a rel=self other than its own URL (websub.rocks 200): the hub must get the rel=self.
        const source = `${ts.url}/blog/200`;
        const self = `${source}?self=other`;
        w.start({ topics: [source], secret: "s3cret", leaseSeconds: 600, callbackBase: `${BASE}/` });
        await w.event("websub_subscribe_requested");
        const sub = await w.only();
        const callback = callbackUrlOf(BASE, sub.id);
        expect(callback).toBe(`${BASE}/websub/${sub.id}`);
        expect(ts.hubPosts).toHaveLength(1);
        const post = ts.hubPosts[0]!;
        expect(post.path).toBe("/blog/hub");
        expect(post.contentType).toBe("application/x-www-form-urlencoded");
        expect(Object.fromEntries(new URLSearchParams(post.body))).toEqual({
          "hub.mode": "subscribe",
          "hub.topic": self,
          "hub.callback": callback,
          "hub.secret": "s3cret",
          "hub.lease_seconds": "600",
        });
        // Discovery first: the topic was fetched before the hub was asked.
        const firstPost = ts.requests.findIndex((r) => r.method === "POST");
        expect(ts.requests.slice(0, firstPost).map((r) => r.path)).toContain("/blog/200");
        expect(sub).toMatchObject({
          source,
          origin: "config",
          topic: self,
          hub: `${ts.url}/blog/hub`,
          callbackUrl: callback,
          secret: "s3cret",
          state: "pending",
          pending: "subscribe",
          nextAttemptAtMs: T0 + VERIFY_TIMEOUT_MS,
        });
        expect(w.named("websub_subscribe_requested")).toMatchObject([
          { level: "info", id: sub.id, topic: self, hub: `${ts.url}/blog/hub`, callbackUrl: callback, status: 202, renewal: false },
        ]);
        expect(JSON.stringify(w.lines)).not.toContain("s3cret");
      }),
    TEST_MS,
  );

  test(
    "a configured hub (WEBSUB_HUB) skips discovery: the topic is never fetched, and the hub gets the topic as configured",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const ts = await startTopicServer();
        defer(() => ts.close());
        const source = `${ts.url}/blog/100`;
        w.start({ topics: [source], hub: w.hub.url });
        await w.hub.received(1);
        await w.event("websub_subscribe_requested");
        const sub = await w.only();
        expect(ts.requests).toEqual([]);
        expect(w.hub.requests[0]!.path).toBe("/hub");
        expect(w.hub.requests[0]!.contentType).toBe("application/x-www-form-urlencoded");
        // Neither secret nor lease configured: neither is sent.
        expect(Object.fromEntries(w.hub.requests[0]!.form)).toEqual({
          "hub.mode": "subscribe",
          "hub.topic": source,
          "hub.callback": callbackUrlOf(BASE, sub.id),
        });
        expect(sub).toMatchObject({ source, topic: source, hub: w.hub.url, state: "pending", pending: "subscribe" });
        expect(sub.secret).toBeUndefined();
      }),
    TEST_MS,
  );

  test(
    "verified, it is active with a renewal 75-85% into the lease; nothing is asked before then, even by a restarted subscriber; then it is renewed",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const ts = await startTopicServer();
        defer(() => ts.close());
        const source = `${ts.url}/blog/100`;
        const options = { topics: [source], secret: "s3cret", leaseSeconds: 1_000 };
        const first = w.start(options);
        await w.event("websub_subscribe_requested");
        const request = new URLSearchParams(ts.hubPosts[0]!.body);
        const verified = await w.verify(request, { "hub.lease_seconds": "1000" });
        expect(verified).toMatchObject({ status: 200, body: verified.challenge });
        const active = await w.only();
        expect(active).toMatchObject({ state: "active", leaseSeconds: 1_000, expiresAtMs: T0 + 1_000_000, failures: 0 });
        expect(active.pending).toBeUndefined();
        const renewAt = active.nextAttemptAtMs!;
        expect(renewAt).toBeGreaterThanOrEqual(T0 + 750_000);
        expect(renewAt).toBeLessThanOrEqual(T0 + 850_000);
        expect(w.named("websub_verified")).toMatchObject([{ id: active.id, leaseSeconds: 1_000, renewAtMs: renewAt }]);

        // A restart: the first process stops, its lock runs out, a second one takes over the same store.
        await first.stop();
        w.clock.now = T0 + 400_000;
        const second = w.start(options);
        await w.passes(2);
        expect(second.snapshot()).toMatchObject([{ id: active.id, state: "active" }]);
        expect(ts.hubPosts).toHaveLength(1);
        w.clock.now = renewAt - 1;
        second.wake();
        await w.passes(2);
        expect(ts.hubPosts).toHaveLength(1);
        expect(await w.only()).toEqual(active);

        // Renewal due: the same request again, to the hub that verified it, without discovering again.
        const fetchesBefore = ts.requests.filter((r) => r.method !== "POST").length;
        w.clock.now = renewAt;
        second.wake();
        await w.event("websub_subscribe_requested", 2);
        expect(ts.hubPosts).toHaveLength(2);
        expect(ts.hubPosts[1]!.path).toBe("/blog/hub");
        expect(Object.fromEntries(new URLSearchParams(ts.hubPosts[1]!.body))).toEqual(Object.fromEntries(request));
        expect(ts.requests.filter((r) => r.method !== "POST")).toHaveLength(fetchesBefore);
        expect(w.named("websub_subscribe_requested")[1]).toMatchObject({ id: active.id, renewal: true, status: 202 });
        expect(await w.only()).toMatchObject({ state: "active", pending: "subscribe", nextAttemptAtMs: renewAt + VERIFY_TIMEOUT_MS });
        expect(await w.deliver(active.id)).toBe(202);

        // The hub verifies the renewal: websub_renewed, a new lease, a new renewal time.
        w.clock.now = renewAt + 5;
        const renewed = await w.verify(new URLSearchParams(ts.hubPosts[1]!.body), { "hub.lease_seconds": "2000" });
        expect(renewed).toMatchObject({ status: 200, body: renewed.challenge });
        expect(w.named("websub_renewed")).toMatchObject([{ id: active.id, leaseSeconds: 2_000 }]);
        expect(w.named("websub_verified")).toHaveLength(1);
        const after = await w.only();
        expect(after).toMatchObject({
          state: "active",
          leaseSeconds: 2_000,
          expiresAtMs: renewAt + 5 + 2_000_000,
          nextAttemptAtMs: renewAt + 5 + 1_600_000,
        });
        expect(after.pending).toBeUndefined();
        await w.passes(2);
        expect(ts.hubPosts).toHaveLength(2);
      }),
    TEST_MS,
  );

  test(
    "a hub answering 503 is retried with growing, capped delays, each failure a websub_request_failed warning",
    () =>
      using(async (defer) => {
        const w = await world(defer, { pinned: false, reply: () => 503 });
        const retry = { baseMs: 100, maxMs: 400, random: () => 0 };
        const subscriber = w.start({
          topics: [A],
          hub: w.hub.url,
          retryBaseMs: retry.baseMs,
          retryMaxMs: retry.maxMs,
          random: retry.random,
        });
        await w.event("websub_request_failed", 5);
        await subscriber.stop();
        const delays = [1, 2, 3, 4, 5].map((n) => backoffMs(n, retry));
        expect(delays).toEqual([50, 100, 200, 200, 200]);
        const warnings = w.named("websub_request_failed");
        expect(warnings).toHaveLength(5);
        warnings.forEach((warning, i) =>
          expect(warning).toMatchObject({
            level: "warn",
            topic: A,
            hub: w.hub.url,
            mode: "subscribe",
            step: "request",
            status: 503,
            failures: i + 1,
            retryInMs: delays[i],
          })
        );
        // Each retry waited at least its delay, and no more than a loaded machine adds to it.
        const at = w.hub.requests.map((r) => r.atMs);
        expect(at).toHaveLength(5);
        for (let i = 1; i < at.length; i++) {
          expect(at[i]! - at[i - 1]!).toBeGreaterThanOrEqual(delays[i - 1]! - 2);
          expect(at[i]! - at[i - 1]!).toBeLessThan(delays[i - 1]! + 1_000);
        }
        expect(at[4]! - at[0]!).toBeGreaterThanOrEqual(50 + 100 + 200 + 200 - 2);
        const sub = await w.only();
        expect(sub).toMatchObject({ state: "pending", failures: 5 });
        expect(sub.pending).toBeUndefined();
        expect(w.named("websub_subscribe_refused")).toEqual([]);
      }),
    TEST_MS,
  );

  test(
    "429 and 408 are retried too; once the hub takes the request it is recorded as requested",
    () =>
      using(async (defer) => {
        const statuses = [429, 408, 202];
        const w = await world(defer, { pinned: false, reply: (i) => statuses[i] ?? 202 });
        w.start({ topics: [A], hub: w.hub.url, retryBaseMs: 20, retryMaxMs: 100 });
        await w.event("websub_subscribe_requested");
        expect(w.hub.requests).toHaveLength(3);
        expect(w.named("websub_request_failed").map((l) => l.status)).toEqual([429, 408]);
        expect(await w.only()).toMatchObject({ state: "pending", pending: "subscribe", failures: 2 });
        // A verification then clears the failures.
        expect((await w.verify(w.hub.requests[2]!.form, { "hub.lease_seconds": "60" })).status).toBe(200);
        expect(await w.only()).toMatchObject({ state: "active", failures: 0 });
      }),
    TEST_MS,
  );

  test(
    "a topic whose discovery fails is retried with backoff, each failure a websub_request_failed warning (step discovery)",
    () =>
      using(async (defer) => {
        const w = await world(defer, { pinned: false });
        const ts = await startTopicServer();
        defer(() => ts.close());
        const source = `${ts.url}/no-hub`;
        const retry = { baseMs: 40, maxMs: 1_000, random: () => 0 };
        w.start({ topics: [source], retryBaseMs: retry.baseMs, retryMaxMs: retry.maxMs, random: retry.random });
        await w.event("websub_request_failed", 3);
        expect(w.named("websub_request_failed").slice(0, 3)).toMatchObject([1, 2, 3].map((failures) => ({
          level: "warn",
          topic: source,
          hub: null,
          step: "discovery",
          status: null,
          failures,
          retryInMs: backoffMs(failures, retry),
          error: { name: "DiscoveryError" },
        })));
        expect(w.hub.requests).toEqual([]);
        expect(ts.hubPosts).toEqual([]);
        expect((await w.only()).hub).toBe("");
      }),
    TEST_MS,
  );

  test(
    "a hub that verifies before it answers its 202 leaves the subscription active",
    () =>
      using(async (defer) => {
        let w: World | undefined = undefined;
        const verifications: number[] = [];
        w = await world(defer, {
          reply: async (_, request) => {
            verifications.push((await w!.verify(request.form, { "hub.lease_seconds": "1000" })).status);
            return 202;
          },
        });
        w.start({ topics: [A], hub: w.hub.url });
        await w.event("websub_subscribe_requested");
        expect(verifications).toEqual([200]);
        const sub = await w.only();
        expect(sub).toMatchObject({ state: "active", leaseSeconds: 1_000, nextAttemptAtMs: T0 + 800_000 });
        expect(sub.pending).toBeUndefined();
      }),
    TEST_MS,
  );

  test(
    "a denial stops all work on the subscription: no renewal, no new subscription for the topic",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const subscriber = w.start({ topics: [A], hub: w.hub.url });
        await w.hub.received(1);
        expect((await w.verify(w.hub.requests[0]!.form, { "hub.lease_seconds": "100" })).status).toBe(200);
        const url = new URL(w.hub.requests[0]!.form.get("hub.callback")!);
        url.search = new URLSearchParams({ "hub.mode": "denied", "hub.topic": A, "hub.reason": "unwelcome" }).toString();
        expect((await w.app.request(url.href)).status).toBe(200);
        await w.event("websub_denied");
        w.clock.now = T0 + 200_000;
        subscriber.wake();
        await w.passes(3);
        expect(w.hub.requests).toHaveLength(1);
        expect(await w.only()).toMatchObject({ state: "denied" });
        expect(w.named("websub_lease_expired")).toEqual([]);
      }),
    TEST_MS,
  );

  for (const status of [400, 403, 404]) {
    test(
      `a ${status} is final: websub_subscribe_refused, state failed, and no more requests, however late`,
      () =>
        using(async (defer) => {
          const w = await world(defer, { reply: () => status });
          const subscriber = w.start({ topics: [A], hub: w.hub.url });
          await w.event("websub_subscribe_refused");
          const sub = await w.only();
          expect(w.named("websub_subscribe_refused")).toMatchObject([{ level: "error", id: sub.id, topic: A, hub: w.hub.url, status }]);
          expect(sub).toMatchObject({ state: "failed", failures: 0 });
          expect(sub.pending).toBeUndefined();
          expect(sub.nextAttemptAtMs).toBeUndefined();
          w.clock.now = T0 + 86_400_000;
          subscriber.wake();
          await w.passes(3);
          expect(w.hub.requests).toHaveLength(1);
          expect(await w.only()).toMatchObject({ id: sub.id, state: "failed" });
          expect(w.named("websub_request_failed")).toEqual([]);
        }),
      TEST_MS,
    );
  }

  test(
    "a hub that never answers fails after requestTimeoutMs, not before and not much after",
    () =>
      using(async (defer) => {
        const w = await world(defer, { pinned: false, reply: () => "hang" });
        w.start({ topics: [A], hub: w.hub.url, requestTimeoutMs: 300, retryBaseMs: 60_000 });
        await w.hub.received(1);
        await w.event("websub_request_failed");
        // From the hub's receipt, which comes a little after the request (and its timeout) started.
        const elapsed = performance.now() - w.hub.requests[0]!.atMs;
        expect(elapsed).toBeGreaterThanOrEqual(250);
        expect(elapsed).toBeLessThan(300 + 1_500);
        const [warning] = w.named("websub_request_failed");
        expect(warning).toMatchObject({ level: "warn", step: "request", status: null, failures: 1, error: { name: "HubRequestError" } });
        expect((warning!.error as { message: string }).message).toContain("within 300ms");
        const sub = await w.only();
        expect(sub).toMatchObject({ state: "pending", failures: 1 });
        expect(sub.pending).toBeUndefined();
        expect(w.hub.requests).toHaveLength(1);
      }),
    TEST_MS,
  );

  test(
    "a hub that redirects with 307 gets the form re-POSTed at its new location, which is stored",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const ts = await startTopicServer();
        defer(() => ts.close());
        w.start({ topics: [A], hub: `${ts.url}/hub/redirect/307`, secret: "s3cret" });
        await w.event("websub_subscribe_requested");
        const sub = await w.only();
        const moved = `${ts.url}/hub/final?from=307`;
        expect(ts.requests.filter((r) => r.method === "POST").map((r) => r.path)).toEqual(["/hub/redirect/307", "/hub/final?from=307"]);
        expect(Object.fromEntries(new URLSearchParams(ts.hubPosts[0]!.body))).toEqual({
          "hub.mode": "subscribe",
          "hub.topic": A,
          "hub.callback": callbackUrlOf(BASE, sub.id),
          "hub.secret": "s3cret",
        });
        expect(sub.hub).toBe(moved);
        expect(w.named("websub_subscribe_requested")).toMatchObject([{ hub: moved, status: 202 }]);
      }),
    TEST_MS,
  );

  test(
    "a discovered hub that redirects with 302 (websub.rocks 203) is followed, and the renewal goes straight to where it moved",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const ts = await startTopicServer();
        defer(() => ts.close());
        const subscriber = w.start({ topics: [`${ts.url}/blog/203`], leaseSeconds: 100 });
        await w.event("websub_subscribe_requested");
        const moved = `${ts.url}/hub/final?from=302`;
        expect((await w.only()).hub).toBe(moved);
        const form = new URLSearchParams(ts.hubPosts[0]!.body);
        expect(form.get("hub.mode")).toBe("subscribe");
        expect((await w.verify(form, { "hub.lease_seconds": "100" })).status).toBe(200);
        w.clock.now = (await w.only()).nextAttemptAtMs!;
        subscriber.wake();
        await w.event("websub_subscribe_requested", 2);
        expect(ts.requests.filter((r) => r.method === "POST").map((r) => r.path)).toEqual([
          "/hub/redirect/302",
          "/hub/final?from=302",
          "/hub/final?from=302",
        ]);
        expect(ts.hubPosts[1]!.body).toBe(ts.hubPosts[0]!.body);
      }),
    TEST_MS,
  );
});

describe("leases", () => {
  test(
    "an active subscription whose lease ends with no verified renewal becomes expired, an error, and is requested again",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const subscriber = w.start({ topics: [A], hub: w.hub.url, leaseSeconds: 100 });
        await w.hub.received(1);
        expect((await w.verify(w.hub.requests[0]!.form, { "hub.lease_seconds": "100" })).status).toBe(200);
        const { id } = await w.only();
        // The renewal is requested at 80% of the lease, and the hub never verifies it.
        w.clock.now = T0 + 80_000;
        subscriber.wake();
        await w.hub.received(2);
        w.clock.now = T0 + 99_999;
        subscriber.wake();
        await w.passes(2);
        expect(w.named("websub_lease_expired")).toEqual([]);
        expect(await w.deliver(id)).toBe(202);

        w.clock.now = T0 + 100_000;
        subscriber.wake();
        await w.event("websub_lease_expired");
        expect(w.named("websub_lease_expired")).toMatchObject([{
          level: "error",
          id,
          topic: A,
          hub: w.hub.url,
          expiredAtMs: T0 + 100_000,
        }]);
        await w.hub.received(3);
        await w.event("websub_subscribe_requested", 3);
        expect(Object.fromEntries(w.hub.requests[2]!.form)).toEqual(Object.fromEntries(w.hub.requests[0]!.form));
        expect(w.named("websub_subscribe_requested")[2]).toMatchObject({ id, renewal: false });
        expect(await w.only()).toMatchObject({ id, state: "pending", pending: "subscribe" });
        expect(await w.deliver(id)).toBe(410);
        // Verified again: a new subscription as far as the log goes, not a renewal.
        expect((await w.verify(w.hub.requests[2]!.form, { "hub.lease_seconds": "100" })).status).toBe(200);
        expect(w.named("websub_verified")).toHaveLength(2);
        expect(w.named("websub_renewed")).toEqual([]);
        expect(await w.only()).toMatchObject({ state: "active", expiresAtMs: T0 + 200_000 });
      }),
    TEST_MS,
  );

  test(
    "a renewal the hub refuses (4xx) lets the lease run to its end; then it expires and is requested afresh",
    () =>
      using(async (defer) => {
        const w = await world(defer, { reply: (i) => (i === 0 ? 202 : 403) });
        const subscriber = w.start({ topics: [A], hub: w.hub.url, leaseSeconds: 100 });
        await w.hub.received(1);
        expect((await w.verify(w.hub.requests[0]!.form, { "hub.lease_seconds": "100" })).status).toBe(200);
        const { id } = await w.only();
        w.clock.now = T0 + 80_000;
        subscriber.wake();
        await w.event("websub_subscribe_refused");
        const refused = await w.only();
        expect(refused).toMatchObject({ state: "active", expiresAtMs: T0 + 100_000, nextAttemptAtMs: T0 + 100_000 });
        expect(refused.pending).toBeUndefined();
        expect(await w.deliver(id)).toBe(202);
        w.clock.now = T0 + 99_999;
        subscriber.wake();
        await w.passes(2);
        expect(w.hub.requests).toHaveLength(2);

        w.clock.now = T0 + 100_000;
        subscriber.wake();
        await w.event("websub_lease_expired");
        await w.event("websub_subscribe_refused", 2);
        expect(w.hub.requests).toHaveLength(3);
        expect(await w.only()).toMatchObject({ state: "failed" });
      }),
    TEST_MS,
  );
});

describe("reconciling the configured topics", () => {
  test(
    "a topic dropped from the configuration is unsubscribed, and deleted once the hub verifies the unsubscription",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const options = { hub: w.hub.url, secret: "s3cret", leaseSeconds: 1_000 };
        const first = w.start({ ...options, topics: [A, B] });
        await w.hub.received(2);
        for (const request of w.hub.requests) expect((await w.verify(request.form, { "hub.lease_seconds": "1000" })).status).toBe(200);
        const a = await w.bySource(A);
        const b = await w.bySource(B);
        expect([a.state, b.state]).toEqual(["active", "active"]);
        await first.stop();

        w.clock.now = T0 + 1_000;
        w.start({ ...options, topics: [A] });
        await w.event("websub_unsubscribe_requested");
        expect(w.named("websub_topic_dropped")).toMatchObject([{ id: b.id, topic: B, source: B }]);
        expect(w.hub.requests).toHaveLength(3);
        expect(Object.fromEntries(w.hub.requests[2]!.form)).toEqual({
          "hub.mode": "unsubscribe",
          "hub.topic": B,
          "hub.callback": b.callbackUrl,
        });
        expect(await w.bySource(B)).toMatchObject({ state: "unsubscribing", unsubscribe: true, pending: "unsubscribe" });
        expect(await w.deliver(b.id)).toBe(410);
        expect(await w.bySource(A)).toEqual(a);

        const confirmed = await w.verify(w.hub.requests[2]!.form);
        expect(confirmed).toMatchObject({ status: 200, body: confirmed.challenge });
        expect(w.named("websub_unsubscribed")).toMatchObject([{ id: b.id, topic: B, hub: w.hub.url }]);
        await w.passes(2);
        expect(await w.store.list()).toEqual([a]);
        expect(w.hub.requests).toHaveLength(3);
      }),
    TEST_MS,
  );

  test(
    "an unsubscription the hub refuses (4xx) is final: logged as an error and deleted",
    () =>
      using(async (defer) => {
        const w = await world(defer, { reply: (_, r) => (r.form.get("hub.mode") === "unsubscribe" ? 404 : 202) });
        const first = w.start({ topics: [A, B], hub: w.hub.url });
        await w.hub.received(2);
        for (const request of w.hub.requests) expect((await w.verify(request.form, { "hub.lease_seconds": "1000" })).status).toBe(200);
        const b = await w.bySource(B);
        await first.stop();
        w.start({ topics: [A], hub: w.hub.url });
        await w.event("websub_unsubscribe_refused");
        expect(w.named("websub_unsubscribe_refused")).toMatchObject([{ level: "error", id: b.id, topic: B, status: 404 }]);
        await w.passes(2);
        expect((await w.store.list()).map((s) => s.source)).toEqual([A]);
        expect(w.hub.requests).toHaveLength(3);
      }),
    TEST_MS,
  );

  test(
    "a dropped topic the hub never had (never requested, failed or denied) is deleted at once, without asking the hub",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const never: Subscription = {
          id: "never",
          source: "https://publisher.example/never",
          origin: "config",
          topic: "https://publisher.example/never",
          hub: "",
          callbackUrl: "",
          state: "pending",
          nextAttemptAtMs: T0 + 5_000,
          failures: 3,
          updatedAtMs: T0 - 1,
        };
        const hubHad = { hub: w.hub.url, callbackUrl: callbackUrlOf(BASE, "x"), updatedAtMs: T0 - 1 };
        await w.store.put(never);
        await w.store.put({ ...never, ...hubHad, id: "failed", source: `${B}?failed`, topic: `${B}?failed`, state: "failed" });
        await w.store.put({ ...never, ...hubHad, id: "denied", source: `${B}?denied`, topic: `${B}?denied`, state: "denied" });
        w.start({ topics: [A], hub: w.hub.url });
        await w.event("websub_unsubscribed", 3);
        await w.hub.received(1);
        expect(w.named("websub_unsubscribed")).toMatchObject([
          { id: "never", hub: null },
          { id: "failed", hub: w.hub.url },
          { id: "denied", hub: w.hub.url },
        ]);
        await w.passes(2);
        expect((await w.store.list()).map((s) => s.source)).toEqual([A]);
        // The only request the hub got is the subscription to the configured topic.
        expect(w.hub.requests.map((r) => r.form.get("hub.mode"))).toEqual(["subscribe"]);
        expect(w.named("websub_unsubscribe_requested")).toEqual([]);
      }),
    TEST_MS,
  );

  test(
    "a subscription made by an operator (origin manual) is left alone by reconciliation, and still renewed when due",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const M = "https://publisher.example/manual";
        const manual: Subscription = {
          id: "m",
          source: M,
          origin: "manual",
          topic: M,
          hub: w.hub.url,
          callbackUrl: callbackUrlOf(BASE, "m"),
          state: "active",
          leaseSeconds: 1_000,
          expiresAtMs: T0 + 1_000_000,
          nextAttemptAtMs: T0 + 800_000,
          updatedAtMs: T0 - 1,
        };
        await w.store.put(manual);
        const subscriber = w.start({ topics: [A], hub: w.hub.url, verifyTimeoutMs: 10_000_000 });
        await w.hub.received(1);
        await w.passes(3);
        expect(await w.store.get("m")).toEqual(manual);
        expect(w.named("websub_topic_dropped")).toEqual([]);
        expect(w.hub.requests.map((r) => r.form.get("hub.topic"))).toEqual([A]);

        w.clock.now = T0 + 800_000;
        subscriber.wake();
        await w.hub.received(2);
        expect(Object.fromEntries(w.hub.requests[1]!.form)).toEqual({
          "hub.mode": "subscribe",
          "hub.topic": M,
          "hub.callback": callbackUrlOf(BASE, "m"),
        });
        await w.event("websub_subscribe_requested", 2);
        expect(await w.store.get("m")).toMatchObject({ origin: "manual", state: "active", pending: "subscribe" });
      }),
    TEST_MS,
  );
});

describe("a changed callback base (WEBSUB_CALLBACK_URL, or the server's URL)", () => {
  test(
    "an active subscription gets a new one at the new callback; the old one takes content until the hub verifies it, then 410, and is unsubscribed at its own callback",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const first = w.start({ topics: [A], hub: w.hub.url, leaseSeconds: 1_000 });
        await w.hub.received(1);
        expect((await w.verify(w.hub.requests[0]!.form, { "hub.lease_seconds": "1000" })).status).toBe(200);
        const before = await w.only();
        await first.stop();

        const moved = "https://moved.example";
        w.clock.now = T0 + 1_000;
        w.start({ topics: [A], hub: w.hub.url, leaseSeconds: 1_000, callbackBase: moved });
        await w.event("websub_subscribe_requested", 2);
        // A callback of its own (WebSub 5.1.1: unique per subscription): the hub keeps one subscription per topic and callback.
        const after = (await w.store.list()).find((s) => s.id !== before.id)!;
        const to = callbackUrlOf(moved, after.id);
        expect(w.named("websub_callback_changed")).toMatchObject([{
          id: before.id,
          topic: A,
          from: before.callbackUrl,
          to,
          replacement: after.id,
        }]);
        expect(Object.fromEntries(w.hub.requests[1]!.form)).toEqual({
          "hub.mode": "subscribe",
          "hub.topic": A,
          "hub.callback": to,
          "hub.lease_seconds": "1000",
        });
        expect(after).toMatchObject({ source: A, origin: "config", topic: A, state: "pending", pending: "subscribe", callbackUrl: to });
        // Until the hub verifies the new callback, it delivers to the old one only.
        expect(await w.store.get(before.id)).toEqual(before);
        expect(await w.deliver(before.id)).toBe(202);
        await w.passes(2);
        expect(w.hub.requests).toHaveLength(2);

        // Replaced as the new one is verified, before the hub can deliver there: no content is taken twice.
        expect((await w.verify(w.hub.requests[1]!.form, { "hub.lease_seconds": "1000" })).status).toBe(200);
        expect(await w.deliver(before.id)).toBe(410);
        expect(await w.deliver(after.id)).toBe(202);
        expect(w.named("websub_verified").map((l) => l.id)).toEqual([before.id, after.id]);
        expect(w.named("websub_callback_replaced")).toMatchObject([
          { id: before.id, topic: A, callbackUrl: before.callbackUrl, replacement: after.id },
        ]);
        await w.event("websub_unsubscribe_requested");
        expect(Object.fromEntries(w.hub.requests[2]!.form)).toEqual({
          "hub.mode": "unsubscribe",
          "hub.topic": A,
          "hub.callback": before.callbackUrl,
        });
        // The hub verifies the unsubscription at the old callback, which is still served.
        const bye = await w.verify(w.hub.requests[2]!.form);
        expect(bye).toMatchObject({ status: 200, body: bye.challenge });
        expect(w.named("websub_unsubscribed")).toMatchObject([{ id: before.id }]);
        expect(await w.only()).toMatchObject({ id: after.id, state: "active", callbackUrl: to });
        await w.passes(2);
        expect(w.hub.requests).toHaveLength(3);
      }),
    TEST_MS,
  );

  /**
   * A subscription verified at the first callback base (lease 100 s), then the subscriber started
   * again at https://moved.example, which has asked the hub for the new callback (not verified).
   */
  async function movedAfterVerified(defer: (cleanup: () => unknown) => void) {
    const w = await world(defer);
    const first = w.start({ topics: [A], hub: w.hub.url });
    await w.hub.received(1);
    expect((await w.verify(w.hub.requests[0]!.form, { "hub.lease_seconds": "100" })).status).toBe(200);
    const before = await w.only();
    await first.stop();
    const subscriber = w.start({ topics: [A], hub: w.hub.url, callbackBase: "https://moved.example", verifyTimeoutMs: 10_000_000 });
    await w.event("websub_subscribe_requested", 2);
    return { w, before, subscriber };
  }

  test(
    "while the hub has not verified the new callback, the old subscription is renewed at its own callback and keeps taking content",
    () =>
      using(async (defer) => {
        const { w, before, subscriber } = await movedAfterVerified(defer);
        w.clock.now = before.nextAttemptAtMs!;
        subscriber.wake();
        await w.event("websub_subscribe_requested", 3);
        expect(w.hub.requests[2]!.form.toString()).toBe(w.hub.requests[0]!.form.toString());
        expect(w.named("websub_subscribe_requested")[2]).toMatchObject({ id: before.id, renewal: true });
        expect(await w.deliver(before.id)).toBe(202);
        expect(await w.store.list()).toHaveLength(2);
        expect(w.named("websub_callback_changed")).toHaveLength(1);
      }),
    TEST_MS,
  );

  test(
    "an old subscription whose lease ended before the hub verified its replacement is deleted without asking the hub",
    () =>
      using(async (defer) => {
        const { w, before, subscriber } = await movedAfterVerified(defer);
        w.clock.now = T0 + 100_000;
        subscriber.wake();
        await w.event("websub_unsubscribed");
        expect(w.named("websub_lease_expired")).toMatchObject([{ id: before.id }]);
        expect(w.named("websub_callback_replaced")).toMatchObject([{ id: before.id }]);
        expect(w.named("websub_unsubscribed")).toMatchObject([{ id: before.id }]);
        await w.passes(2);
        expect((await w.only()).id).not.toBe(before.id);
        // The hub's lease ended: the unsubscription is not asked for (the old callback may not be reachable any more).
        expect(w.hub.requests.map((r) => r.form.get("hub.mode"))).toEqual(["subscribe", "subscribe"]);
      }),
    TEST_MS,
  );

  test("npm run websub -- unsubscribe marks every subscription to the topic: the old callback's and its replacement's", async () => {
    const store = memoryStore();
    const base = { source: A, origin: "config" as const, topic: A, hub: "https://hub.example/", updatedAtMs: T0 };
    await store.put({ ...base, id: "old", callbackUrl: callbackUrlOf(BASE, "old"), state: "active" });
    await store.put({
      ...base,
      id: "new",
      callbackUrl: callbackUrlOf("https://moved.example", "new"),
      state: "pending",
      pending: "subscribe",
    });
    await store.put({ ...base, id: "b", source: B, topic: B, callbackUrl: callbackUrlOf(BASE, "b"), state: "active" });
    const lines: Line[] = [];
    expect(await run(["unsubscribe", A], store, {}, (line) => lines.push(line as Line))).toBe(0);
    expect(lines.map((l) => [l.event, l.id])).toEqual([["websub_unsubscribe_queued", "old"], ["websub_unsubscribe_queued", "new"]]);
    expect(await store.get("old")).toMatchObject({ unsubscribe: true, state: "unsubscribing" });
    expect(await store.get("new")).toMatchObject({ unsubscribe: true, state: "pending" });
    expect((await store.get("new"))?.pending).toBeUndefined();
    expect((await store.get("b"))?.unsubscribe).toBeUndefined();
  });

  test(
    "a topic dropped while the callback base changed is unsubscribed with the callback the hub has, not the new one",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const first = w.start({ topics: [A, B], hub: w.hub.url });
        await w.hub.received(2);
        for (const request of w.hub.requests) expect((await w.verify(request.form, { "hub.lease_seconds": "1000" })).status).toBe(200);
        const b = await w.bySource(B);
        await first.stop();

        w.clock.now = T0 + 1_000;
        w.start({ topics: [A], hub: w.hub.url, callbackBase: "https://moved.example" });
        await w.event("websub_unsubscribe_requested");
        const unsubscribe = w.hub.requests.find((r) => r.form.get("hub.mode") === "unsubscribe")!;
        // The hub knows the subscription by topic and callback (WebSub 5.1): another callback names nothing it has.
        expect(Object.fromEntries(unsubscribe.form)).toEqual({ "hub.mode": "unsubscribe", "hub.topic": B, "hub.callback": b.callbackUrl });
      }),
    TEST_MS,
  );
});

describe("a changed secret (WEBSUB_SECRET)", () => {
  /** An active subscription to `source` made before, with `secret` or none, its renewal far away. */
  const made = (id: string, source: string, secret?: string): Subscription => ({
    id,
    source,
    origin: "config",
    topic: source,
    hub: "",
    callbackUrl: callbackUrlOf(BASE, id),
    state: "active",
    ...(secret === undefined ? {} : { secret }),
    leaseSeconds: 1_000,
    expiresAtMs: T0 + 900_000,
    nextAttemptAtMs: T0 + 700_000,
    updatedAtMs: T0 - 100_000,
  });

  test(
    "a secret added: every subscription is requested again with it at once, not at its renewal; unsigned content is refused (401) from the start",
    () =>
      using(async (defer) => {
        const w = await world(defer, { secret: "s3cret" });
        const M = "https://publisher.example/manual";
        await w.store.put({ ...made("a", A), hub: w.hub.url });
        await w.store.put({ ...made("m", M), hub: w.hub.url, origin: "manual" });
        // The routes run with the secret before the subscriber has looked at the store.
        expect(await w.deliver("a")).toBe(401);
        w.start({ topics: [A], hub: w.hub.url, secret: "s3cret" });
        await w.event("websub_subscribe_requested", 2);
        expect(w.hub.requests.map((r) => Object.fromEntries(r.form)).sort((x, y) => x["hub.topic"]!.localeCompare(y["hub.topic"]!)))
          .toEqual([
            { "hub.mode": "subscribe", "hub.topic": A, "hub.callback": callbackUrlOf(BASE, "a"), "hub.secret": "s3cret" },
            { "hub.mode": "subscribe", "hub.topic": M, "hub.callback": callbackUrlOf(BASE, "m"), "hub.secret": "s3cret" },
          ]);
        expect(w.named("websub_secret_changed").map((l) => [l.id, l.signed]).sort()).toEqual([["a", true], ["m", true]]);
        expect(w.named("websub_subscribe_requested").every((l) => l.renewal === true)).toBe(true);
        expect(w.named("websub_verification_overdue")).toEqual([]);
        for (const id of ["a", "m"]) {
          const sub = (await w.store.get(id))!;
          expect(sub).toMatchObject({ state: "active", pending: "subscribe", secret: "s3cret" });
          expect(sub.previousSecret).toBeUndefined();
          // Until the hub verifies, it sends content unsigned: refused, so that it retries (WebSub 7) once it signs.
          expect(await w.deliver(id, null)).toBe(401);
          expect(await w.deliver(id)).toBe(202);
        }
        for (const request of w.hub.requests) expect((await w.verify(request.form, { "hub.lease_seconds": "1000" })).status).toBe(200);
        expect(w.named("websub_renewed")).toHaveLength(2);
        expect(await w.deliver("a", null)).toBe(401);
        await w.passes(2);
        expect(w.hub.requests).toHaveLength(2);
        expect(JSON.stringify(w.lines)).not.toContain("s3cret");
      }),
    TEST_MS,
  );

  test(
    "a secret changed: requested again at once; until the hub verifies it, the old secret's signature gets 401 and any other 202 (dropped); after, the old one's is dropped too",
    () =>
      using(async (defer) => {
        const w = await world(defer, { secret: "new-secret" });
        await w.store.put({ ...made("a", A, "old-secret"), hub: w.hub.url });
        w.start({ topics: [A], hub: w.hub.url, secret: "new-secret" });
        await w.event("websub_subscribe_requested");
        expect(Object.fromEntries(w.hub.requests[0]!.form)).toEqual({
          "hub.mode": "subscribe",
          "hub.topic": A,
          "hub.callback": callbackUrlOf(BASE, "a"),
          "hub.secret": "new-secret",
        });
        expect(await w.only()).toMatchObject({ state: "active", pending: "subscribe", secret: "new-secret", previousSecret: "old-secret" });
        expect(await w.deliver("a", "old-secret")).toBe(401);
        expect(await w.deliver("a", "guessed")).toBe(202);
        expect(await w.deliver("a", null)).toBe(401);
        expect(await w.deliver("a", "new-secret")).toBe(202);
        expect(w.named("websub_signature_rejected").map((l) => l.check)).toEqual(["outdated", "mismatch", "missing"]);
        expect(w.named("websub_delivery")).toHaveLength(1);

        expect((await w.verify(w.hub.requests[0]!.form, { "hub.lease_seconds": "1000" })).status).toBe(200);
        const verified = await w.only();
        expect(verified).toMatchObject({ state: "active", secret: "new-secret" });
        expect(verified.previousSecret).toBeUndefined();
        expect(await w.deliver("a", "old-secret")).toBe(202);
        expect(w.named("websub_signature_rejected").map((l) => l.check)).toEqual(["outdated", "mismatch", "missing", "mismatch"]);
        expect(JSON.stringify(w.lines)).not.toMatch(/old-secret|new-secret/);
      }),
    TEST_MS,
  );

  test(
    "a secret removed: requested again at once without one",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        await w.store.put({ ...made("a", A, "old-secret"), hub: w.hub.url });
        w.start({ topics: [A], hub: w.hub.url });
        await w.event("websub_subscribe_requested");
        expect(Object.fromEntries(w.hub.requests[0]!.form)).toEqual({
          "hub.mode": "subscribe",
          "hub.topic": A,
          "hub.callback": callbackUrlOf(BASE, "a"),
        });
        expect(w.named("websub_secret_changed")).toMatchObject([{ id: "a", signed: false }]);
        expect((await w.only()).secret).toBeUndefined();
      }),
    TEST_MS,
  );

  test(
    "a request still unverified, made with another secret, is made again at once with this one, and is not counted as overdue",
    () =>
      using(async (defer) => {
        const w = await world(defer, { secret: "new-secret" });
        await w.store.put({
          ...made("a", A, "old-secret"),
          hub: w.hub.url,
          state: "pending",
          pending: "subscribe",
          nextAttemptAtMs: T0 + VERIFY_TIMEOUT_MS,
        });
        w.start({ topics: [A], hub: w.hub.url, secret: "new-secret" });
        await w.event("websub_subscribe_requested");
        expect(w.hub.requests[0]!.form.get("hub.secret")).toBe("new-secret");
        const sub = await w.only();
        expect(sub).toMatchObject({ state: "pending", pending: "subscribe", secret: "new-secret" });
        expect(sub.failures ?? 0).toBe(0);
        // Nothing was verified: no secret for the hub to sign with meanwhile.
        expect(sub.previousSecret).toBeUndefined();
        expect(w.named("websub_verification_overdue")).toEqual([]);
        await w.passes(2);
        expect(w.hub.requests).toHaveLength(1);
      }),
    TEST_MS,
  );
});

describe("one process at a time", () => {
  test(
    "two subscribers on one store: only the lock holder reconciles and sends requests; the other takes over once it lapses",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const one = w.start({ topics: [A], hub: w.hub.url });
        const two = w.start({ topics: [A], hub: w.hub.url });
        await w.hub.received(1);
        const owners = () => [...new Set(w.claims.map((c) => c.owner))];
        await w.changes.until(
          () => owners().length === 2 && owners().every((o) => w.claims.filter((c) => c.owner === o).length >= 4),
          "both subscribers trying the lock a few times",
        );
        expect(w.hub.requests).toHaveLength(1);
        expect(await w.store.list()).toHaveLength(1);
        expect(new Set(w.claims.filter((c) => c.ok).map((c) => c.owner)).size).toBe(1);
        // Held for three polls or four request timeouts, whichever is longer (here 4 x 2 s).
        expect(w.claims.every((c) => c.name === LEASE_LOCK && c.ttlMs === Math.max(3 * POLL_MS, 4 * 2_000))).toBe(true);
        const [holder, other] = (one.snapshot() ?? []).length > 0 ? [one, two] : [two, one];
        expect(holder.snapshot()).toHaveLength(1);
        expect(other.snapshot() ?? []).toEqual([]);

        // The holder stops and gives the lock up: the other takes it at once (the clock has not moved, the ttl has not run out).
        const winner = w.claims.find((c) => c.ok)!.owner;
        await holder.stop();
        other.wake();
        await w.changes.until(() => w.claims.some((c) => c.ok && c.owner !== winner), "the other subscriber taking the lock");
        await w.passes(1);
        expect(other.snapshot()).toHaveLength(1);
        expect(w.hub.requests).toHaveLength(1);
        // Once the unverified request is overdue, the new holder asks again, for the same callback.
        w.clock.now = T0 + VERIFY_TIMEOUT_MS;
        other.wake();
        await w.hub.received(2);
        await w.event("websub_verification_overdue");
        expect(w.hub.requests[1]!.form.toString()).toBe(w.hub.requests[0]!.form.toString());
        expect(await w.store.list()).toHaveLength(1);
        expect(other.snapshot()).toHaveLength(1);
      }),
    TEST_MS,
  );
});

describe("one process at a time, however long a pass takes", () => {
  test(
    "a hub request that outlasts the lock's ttl does not let a second process take the lock and repeat the holder's work",
    () =>
      using(async (defer) => {
        // The lock is claimed for 3 polls (120 ms here; 15 s with the defaults), a request may take requestTimeoutMs
        // (600 ms here; 10 s with the defaults, 30 s for discovery plus the request).
        const w = await world(defer, { pinned: false, reply: (_, r) => (r.form.get("hub.topic") === A ? "hang" : 202) });
        const options = { topics: [A, B], hub: w.hub.url, requestTimeoutMs: 600, retryBaseMs: 60_000 };
        w.start(options);
        await w.hub.received(1);
        expect(w.hub.requests[0]!.form.get("hub.topic")).toBe(A);
        w.start(options);
        await w.event("websub_request_failed");
        await w.event("websub_subscribe_requested");
        await w.passes(2);
        expect(w.hub.requests.filter((r) => r.form.get("hub.topic") === B)).toHaveLength(1);
      }),
    TEST_MS,
  );
});

describe("stop()", () => {
  test(
    "after stop() resolves, nothing more is claimed or requested, even when work is due and wake() is called",
    () =>
      using(async (defer) => {
        const w = await world(defer);
        const subscriber = w.start({ topics: [A], hub: w.hub.url });
        await w.event("websub_subscribe_requested");
        await subscriber.stop();
        const claims = w.claims.length;
        w.clock.now = T0 + 10 * VERIFY_TIMEOUT_MS;
        subscriber.wake();
        // No event can show that nothing happens: give it several polls.
        await sleep(5 * POLL_MS);
        expect(w.claims).toHaveLength(claims);
        expect(w.hub.requests).toHaveLength(1);
      }),
    TEST_MS,
  );

  test(
    "stop() during a request waits for the pass in progress to end, and no retry follows",
    () =>
      using(async (defer) => {
        const w = await world(defer, { pinned: false, reply: () => "hang" });
        const subscriber = w.start({ topics: [A], hub: w.hub.url, requestTimeoutMs: 400, retryBaseMs: 10, retryMaxMs: 20 });
        await w.hub.received(1);
        await within(subscriber.stop(), 2_000, "stop()");
        // The pass ended: the request had timed out and its failure was recorded before stop() resolved.
        expect(w.named("websub_request_failed")).toHaveLength(1);
        expect(performance.now() - w.hub.requests[0]!.atMs).toBeGreaterThanOrEqual(350);
        await sleep(5 * POLL_MS);
        expect(w.hub.requests).toHaveLength(1);
      }),
    TEST_MS,
  );
});
