import { describe, expect, test } from "bun:test";
import { Hono } from "hono";
import { createLogger } from "../../src/policy/log.ts";
import { createRegistry } from "../../src/policy/metrics.ts";
import { INBOX_DEFAULTS, loadWebSubConfig, parseTopics, websub } from "../../src/websub/mod.ts";
import { memoryStore } from "../../src/websub/store/types.ts";
import { callbackUrlOf } from "../../src/websub/subscriber.ts";
import { signBody, verifySignature, websubRoutes } from "../../src/websub/websub.ts";
import type { Delivery, HashAlgorithm, Subscription, SubscriptionStore } from "../../src/websub/websub.ts";
import { PROCESSING_DEFAULTS, toDelivery } from "../../src/websub/processing.ts";
import type { InboxLimits } from "../../src/websub/store/inbox.ts";

const encoder = new TextEncoder();
const NOW = 1_700_000_000_000;
const TOPIC = "https://publisher.example/feed";
const HUB = "https://hub.example/";
const BASE = "https://me.example";
const TEST_MS = 5_000;

function setup(
  options: { maxBodyBytes?: number; limits?: InboxLimits; random?: () => number; secret?: string; store?: SubscriptionStore } = {},
) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger((line) => lines.push(JSON.parse(line)));
  const clock = { now: NOW };
  const store = options.store ?? memoryStore(() => clock.now);
  const deliveries: Delivery[] = [];
  /** Takes what the route stored into `deliveries`, as the processor would claim it. */
  const settle = async () => {
    for (let entry; (entry = await store.inbox.claim("test", 60_000, true)) !== undefined;) {
      deliveries.push(toDelivery(entry));
      await store.inbox.done(entry.id, "test");
    }
  };
  const changes = { count: 0 };
  const app = new Hono();
  app.route(
    "/websub",
    websubRoutes({
      store,
      logger,
      maxBodyBytes: options.maxBodyBytes ?? 1024,
      secret: options.secret,
      limits: options.limits ?? { maxCount: 100, maxBytes: 1_000_000 },
      onChange: () => void changes.count++,
      now: () => clock.now,
      random: options.random ?? (() => 0.5),
    }),
  );
  /** Stores a subscription: by default an active one, verified before, with no request pending. */
  const put = (s: Partial<Subscription> & { id: string }) =>
    store.put({
      source: TOPIC,
      origin: "config",
      hub: HUB,
      topic: TOPIC,
      callbackUrl: callbackUrlOf(BASE, s.id),
      state: "active",
      updatedAtMs: NOW - 1_000,
      ...s,
    });
  return { app, store, clock, deliveries, settle, lines, changes, put, named: (event: string) => lines.filter((l) => l.event === event) };
}

function verify(id: string, params: Record<string, string>) {
  return `/websub/${id}?${new URLSearchParams(params)}`;
}

const subscribe = (challenge: string, extra: Record<string, string> = {}) => ({
  "hub.mode": "subscribe",
  "hub.topic": TOPIC,
  "hub.challenge": challenge,
  ...extra,
});

describe("verifySignature", () => {
  const body = encoder.encode("<feed>hello</feed>");

  for (const algorithm of ["sha1", "sha256", "sha384", "sha512"] as HashAlgorithm[]) {
    test(`accepts a valid ${algorithm} signature`, async () => {
      const header = await signBody(body, "s3cret", algorithm);
      expect(header.startsWith(`${algorithm}=`)).toBe(true);
      expect(await verifySignature(header, body, "s3cret")).toBe("valid");
    });
  }

  test("a signature made with another key is a mismatch", async () => {
    expect(await verifySignature(await signBody(body, "other"), body, "s3cret")).toBe("mismatch");
  });

  test("a signature over another body is a mismatch", async () => {
    expect(await verifySignature(await signBody(encoder.encode("x"), "s3cret"), body, "s3cret")).toBe("mismatch");
  });

  test("a truncated signature is malformed", async () => {
    const header = await signBody(body, "s3cret", "sha256");
    expect(await verifySignature(header.slice(0, -2), body, "s3cret")).toBe("malformed");
    expect(await verifySignature(header.slice(0, -1), body, "s3cret")).toBe("malformed");
  });

  test("a missing header is missing", async () => {
    expect(await verifySignature(null, body, "s3cret")).toBe("missing");
  });

  test("base64 instead of hex is malformed; uppercase hex and method are accepted", async () => {
    const mac = await crypto.subtle.sign(
      "HMAC",
      await crypto.subtle.importKey("raw", encoder.encode("s3cret"), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]),
      body,
    );
    const base64 = btoa(String.fromCharCode(...new Uint8Array(mac)));
    expect(await verifySignature(`sha256=${base64}`, body, "s3cret")).toBe("malformed");
    const header = await signBody(body, "s3cret", "sha256");
    expect(await verifySignature(header.toUpperCase(), body, "s3cret")).toBe("valid");
  });

  test("headers without a method or with junk are malformed", async () => {
    expect(await verifySignature("", body, "s3cret")).toBe("malformed");
    expect(await verifySignature("deadbeef", body, "s3cret")).toBe("malformed");
    expect(await verifySignature("sha1=zz" + "0".repeat(38), body, "s3cret")).toBe("malformed");
  });

  test("an unknown method is unsupported, including prototype names", async () => {
    expect(await verifySignature(`md5=${"0".repeat(32)}`, body, "s3cret")).toBe("unsupported");
    expect(await verifySignature(`constructor=${"0".repeat(40)}`, body, "s3cret")).toBe("unsupported");
    expect(await verifySignature(`__proto__=${"0".repeat(40)}`, body, "s3cret")).toBe("unsupported");
  });
});

describe("verification of intent", () => {
  test("a subscribe we requested is confirmed by echoing the challenge: active, with its lease and a renewal time", async () => {
    const { app, store, put, named, changes } = setup();
    await put({ id: "a", state: "pending", pending: "subscribe", nextAttemptAtMs: NOW + 300_000, failures: 2 });
    const res = await app.request(verify("a", subscribe("c-123", { "hub.lease_seconds": "600" })));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toStartWith("text/plain");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(await res.text()).toBe("c-123");
    const sub = await store.get("a");
    // random 0.5: 80% of the way through the 600 s lease.
    expect(sub).toMatchObject({
      state: "active",
      leaseSeconds: 600,
      expiresAtMs: NOW + 600_000,
      nextAttemptAtMs: NOW + 480_000,
      failures: 0,
      updatedAtMs: NOW,
    });
    expect(sub?.pending).toBeUndefined();
    expect(named("websub_verified")).toMatchObject([
      { level: "info", id: "a", topic: TOPIC, hub: HUB, leaseSeconds: 600, renewAtMs: NOW + 480_000 },
    ]);
    expect(named("websub_renewed")).toEqual([]);
    expect(changes.count).toBe(1);
  }, TEST_MS);

  test("a renewal's verification ends the old secret: previousSecret is gone", async () => {
    const { app, store, put } = setup();
    await put({ id: "a", state: "active", pending: "subscribe", secret: "new", previousSecret: "old" });
    expect((await app.request(verify("a", subscribe("c", { "hub.lease_seconds": "600" })))).status).toBe(200);
    const sub = await store.get("a");
    expect(sub).toMatchObject({ state: "active", secret: "new" });
    expect(sub?.previousSecret).toBeUndefined();
  }, TEST_MS);

  test("a new subscription's verification replaces the others for its source: unsubscribed, refusing content (410) at once", async () => {
    const { app, store, put, named } = setup();
    await put({ id: "old", state: "active", leaseSeconds: 600, expiresAtMs: NOW + 600_000 });
    await put({ id: "other", source: "https://publisher.example/other", topic: "https://publisher.example/other", state: "active" });
    await put({ id: "new", state: "pending", pending: "subscribe" });
    expect((await app.request(verify("new", subscribe("c", { "hub.lease_seconds": "600" })))).status).toBe(200);
    expect(await store.get("old")).toMatchObject({ state: "unsubscribing", unsubscribe: true, nextAttemptAtMs: NOW, failures: 0 });
    expect((await store.get("other"))?.unsubscribe).toBeUndefined();
    expect(named("websub_callback_replaced")).toMatchObject([
      { id: "old", topic: TOPIC, callbackUrl: callbackUrlOf(BASE, "old"), replacement: "new" },
    ]);
    expect((await app.request(new Request("http://localhost/websub/old", { method: "POST", body: "x" }))).status).toBe(410);
    expect((await app.request(new Request("http://localhost/websub/new", { method: "POST", body: "x" }))).status).toBe(202);
  }, TEST_MS);

  test("the renewal time is 75% to 85% of the way through the lease, spread by options.random", async () => {
    for (const [random, expected] of [[0, 750_000], [0.999_99, 849_999], [0.25, 775_000]] as const) {
      const { app, store, put } = setup({ random: () => random });
      await put({ id: "a", state: "pending", pending: "subscribe" });
      expect((await app.request(verify("a", subscribe("c", { "hub.lease_seconds": "1000" })))).status).toBe(200);
      const sub = await store.get("a");
      expect(sub?.nextAttemptAtMs).toBe(NOW + expected);
      expect(sub!.nextAttemptAtMs!).toBeGreaterThanOrEqual(NOW + 750_000);
      expect(sub!.nextAttemptAtMs!).toBeLessThanOrEqual(NOW + 850_000);
    }
  }, TEST_MS);

  test("a renewal we requested is confirmed and logs websub_renewed; no lease_seconds means no expiry and no renewal", async () => {
    const { app, store, put, named, changes, clock } = setup();
    await put({
      id: "a",
      state: "active",
      pending: "subscribe",
      leaseSeconds: 10,
      expiresAtMs: NOW + 2_000,
      nextAttemptAtMs: NOW + 60_000,
    });
    clock.now = NOW + 1_000;
    const res = await app.request(verify("a", subscribe("again", { "hub.lease_seconds": "100" })));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("again");
    expect(await store.get("a")).toMatchObject({
      state: "active",
      leaseSeconds: 100,
      expiresAtMs: NOW + 1_000 + 100_000,
      nextAttemptAtMs: NOW + 1_000 + 80_000,
    });
    expect(named("websub_renewed")).toMatchObject([{ id: "a", leaseSeconds: 100, renewAtMs: NOW + 81_000 }]);
    expect(named("websub_verified")).toEqual([]);
    expect(changes.count).toBe(1);

    // Another renewal, confirmed without lease_seconds: no expiry known, so nothing to renew.
    await put({ ...(await store.get("a"))!, pending: "subscribe" });
    expect(await (await app.request(verify("a", subscribe("third")))).text()).toBe("third");
    const sub = await store.get("a");
    expect(sub?.state).toBe("active");
    expect(sub?.expiresAtMs).toBeUndefined();
    expect(sub?.leaseSeconds).toBeUndefined();
    expect(sub?.nextAttemptAtMs).toBeUndefined();
    expect(named("websub_renewed")).toHaveLength(2);
  }, TEST_MS);

  test(
    "a subscribe verification for an active subscription with no renewal requested is 404 not_requested, and changes nothing",
    async () => {
      const { app, store, put, named, changes } = setup();
      const before: Partial<Subscription> & { id: string } = {
        id: "a",
        state: "active",
        leaseSeconds: 600,
        expiresAtMs: NOW + 600_000,
        nextAttemptAtMs: NOW + 480_000,
      };
      await put(before);
      const stored = await store.get("a");
      const res = await app.request(verify("a", subscribe("c", { "hub.lease_seconds": "999999" })));
      expect(res.status).toBe(404);
      expect(await res.json()).toMatchObject({ error: "verification_refused" });
      expect(await store.get("a")).toEqual(stored);
      expect(named("websub_verification_refused")).toMatchObject([{ id: "a", mode: "subscribe", reason: "not_requested" }]);
      expect(named("websub_renewed")).toEqual([]);
      expect(changes.count).toBe(0);
    },
    TEST_MS,
  );

  test("a verification is confirmed once: replaying it is 404 not_requested", async () => {
    const { app, store, put, named } = setup();
    await put({ id: "a", state: "pending", pending: "subscribe" });
    const url = verify("a", subscribe("once", { "hub.lease_seconds": "600" }));
    expect((await app.request(url)).status).toBe(200);
    const after = await store.get("a");
    expect((await app.request(url)).status).toBe(404);
    expect(await store.get("a")).toEqual(after);
    expect(named("websub_verification_refused")).toMatchObject([{ id: "a", reason: "not_requested" }]);
  }, TEST_MS);

  test("a subscribe verification for a subscription we let go (expired, failed, denied, no request) is refused", async () => {
    for (const state of ["expired", "failed", "denied", "pending"] as const) {
      const { app, store, put, named } = setup();
      await put({ id: "a", state });
      expect((await app.request(verify("a", subscribe("c", { "hub.lease_seconds": "60" })))).status).toBe(404);
      expect((await store.get("a"))?.state).toBe(state);
      expect(named("websub_verification_refused")).toMatchObject([{ reason: "not_requested" }]);
    }
  }, TEST_MS);

  const refusals: Array<[string, Partial<Subscription> | undefined, Record<string, string>, string]> = [
    ["an unknown id", undefined, subscribe("c"), "unknown_subscription"],
    [
      "a wrong topic",
      { state: "pending", pending: "subscribe" },
      { "hub.mode": "subscribe", "hub.topic": "https://evil.example/", "hub.challenge": "c" },
      "topic_mismatch",
    ],
    ["a missing topic", { state: "pending", pending: "subscribe" }, { "hub.mode": "subscribe", "hub.challenge": "c" }, "topic_mismatch"],
    ["a subscribe when an unsubscribe is pending", { state: "unsubscribing", pending: "unsubscribe" }, subscribe("c"), "not_requested"],
    [
      "an unsubscribe when a subscribe is pending",
      { state: "pending", pending: "subscribe" },
      { "hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "c" },
      "not_requested",
    ],
    [
      "an unsubscribe we did not ask for",
      { state: "active" },
      { "hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "c" },
      "not_requested",
    ],
    [
      "an unsubscribe whose request failed (unsubscribing, nothing pending)",
      { state: "unsubscribing", unsubscribe: true },
      { "hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "c" },
      "not_requested",
    ],
    [
      "a missing challenge",
      { state: "pending", pending: "subscribe" },
      { "hub.mode": "subscribe", "hub.topic": TOPIC },
      "missing_challenge",
    ],
    ["an empty challenge", { state: "pending", pending: "subscribe" }, subscribe(""), "missing_challenge"],
    [
      "an unknown mode",
      { state: "pending", pending: "subscribe" },
      { "hub.mode": "resubscribe", "hub.topic": TOPIC, "hub.challenge": "c" },
      "unknown_mode",
    ],
    ["no mode", { state: "pending", pending: "subscribe" }, { "hub.topic": TOPIC, "hub.challenge": "c" }, "unknown_mode"],
    ...["-5", "1.5", "abc", "", "12345678901"].map((lease): [string, Partial<Subscription>, Record<string, string>, string] => [
      `a malformed lease ${JSON.stringify(lease)}`,
      { state: "pending", pending: "subscribe" },
      subscribe("c", { "hub.lease_seconds": lease }),
      "invalid_lease_seconds",
    ]),
  ];
  for (const [name, existing, params, reason] of refusals) {
    test(`${name} is refused with 404 (${reason})`, async () => {
      const { app, store, put, named, changes } = setup();
      if (existing) await put({ id: "a", ...existing });
      const before = await store.get("a");
      const res = await app.request(verify("a", params));
      expect(res.status).toBe(404);
      const body = (await res.json()) as { error: string; message: string };
      expect(body.error).toBe("verification_refused");
      expect(body.message).toContain(reason);
      expect(named("websub_verification_refused")).toMatchObject([{ id: "a", reason }]);
      // Refused means untouched: the pending request may still be confirmed by the right verification.
      expect(await store.get("a")).toEqual(before);
      expect(changes.count).toBe(0);
    }, TEST_MS);
  }

  test("an unsubscribe we requested is confirmed and the subscription deleted", async () => {
    const { app, store, put, named, changes } = setup();
    await put({ id: "a", state: "unsubscribing", unsubscribe: true, pending: "unsubscribe", secret: "s3cret" });
    const res = await app.request(verify("a", { "hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "bye" }));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("bye");
    expect(await store.get("a")).toBeUndefined();
    expect(named("websub_unsubscribed")).toMatchObject([{ level: "info", id: "a", topic: TOPIC, hub: HUB }]);
    expect(JSON.stringify(named("websub_unsubscribed"))).not.toContain("s3cret");
    expect(changes.count).toBe(1);
    // Once deleted, a second one has nothing to confirm.
    expect((await app.request(verify("a", { "hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "bye" }))).status).toBe(404);
  }, TEST_MS);

  test("a denial of a subscription being unsubscribed ends it: deleted, and the denial logged", async () => {
    const { app, store, put, named, changes } = setup();
    await put({ id: "a", state: "unsubscribing", unsubscribe: true, pending: "unsubscribe", nextAttemptAtMs: NOW + 300_000 });
    const res = await app.request(verify("a", { "hub.mode": "denied", "hub.topic": TOPIC, "hub.reason": "gone" }));
    expect(res.status).toBe(200);
    expect(await store.get("a")).toBeUndefined();
    expect(named("websub_denied")).toMatchObject([{ level: "error", id: "a", reason: "gone" }]);
    expect(changes.count).toBe(1);
  }, TEST_MS);

  test("a denial is taken at any time: pending, or active (long after verification, or while renewing)", async () => {
    const cases: Array<Partial<Subscription>> = [
      { state: "pending", pending: "subscribe", nextAttemptAtMs: NOW + 300_000 },
      { state: "active", leaseSeconds: 600, expiresAtMs: NOW + 600_000, nextAttemptAtMs: NOW + 480_000 },
      { state: "active", pending: "subscribe", leaseSeconds: 600, expiresAtMs: NOW + 600_000, nextAttemptAtMs: NOW + 300_000 },
    ];
    for (const existing of cases) {
      const { app, store, put, named, changes } = setup();
      await put({ id: "a", ...existing });
      const res = await app.request(verify("a", { "hub.mode": "denied", "hub.topic": TOPIC, "hub.reason": "topic not allowed" }));
      expect(res.status).toBe(200);
      const sub = await store.get("a");
      expect(sub).toMatchObject({ state: "denied", updatedAtMs: NOW });
      expect(sub?.pending).toBeUndefined();
      expect(sub?.nextAttemptAtMs).toBeUndefined();
      expect(named("websub_denied")).toMatchObject([{ level: "error", id: "a", topic: TOPIC, hub: HUB, reason: "topic not allowed" }]);
      expect(changes.count).toBe(1);
      // Denied: content is refused from now on, and a late subscribe verification confirms nothing.
      expect((await app.request(new Request("http://localhost/websub/a", { method: "POST", body: "x" }))).status).toBe(410);
      expect((await app.request(verify("a", subscribe("late", { "hub.lease_seconds": "60" })))).status).toBe(404);
    }
  }, TEST_MS);

  test("a denial without a reason logs reason null", async () => {
    const { app, put, named } = setup();
    await put({ id: "a", state: "pending", pending: "subscribe" });
    expect((await app.request(verify("a", { "hub.mode": "denied", "hub.topic": TOPIC }))).status).toBe(200);
    expect(named("websub_denied")).toMatchObject([{ id: "a", reason: null }]);
  }, TEST_MS);

  test("a denial for another topic, or for an unknown id, is refused", async () => {
    const { app, store, put, named, changes } = setup();
    await put({ id: "a", state: "active" });
    const res = await app.request(verify("a", { "hub.mode": "denied", "hub.topic": "https://other.example/" }));
    expect(res.status).toBe(404);
    expect((await store.get("a"))?.state).toBe("active");
    expect((await app.request(verify("zz", { "hub.mode": "denied", "hub.topic": TOPIC }))).status).toBe(404);
    expect(named("websub_verification_refused")).toMatchObject([
      { id: "a", mode: "denied", reason: "topic_mismatch" },
      { id: "zz", mode: "denied", reason: "unknown_subscription" },
    ]);
    expect(named("websub_denied")).toEqual([]);
    expect(changes.count).toBe(0);
  }, TEST_MS);
});

describe("content distribution", () => {
  const post = (body: BodyInit | null, headers: Record<string, string> = {}, id = "a") =>
    new Request(`http://localhost/websub/${id}`, { method: "POST", body, headers });

  test("accepted content is stored in the inbox before the 202, once, byte for byte, with the hub's content headers", async () => {
    const { app, put, deliveries, settle, named } = setup();
    await put({ id: "a" });
    const bytes = new Uint8Array([0, 255, 10, 13, 0xc3, 0x28, 7]); // not valid UTF-8 on purpose
    const link = '<https://publisher.example/feed>; rel="self", <https://hub.example/>; rel="hub"';
    const res = await app.request(post(bytes, { "content-type": "application/octet-stream", link, cookie: "c=1", "x-hub-signature": "x" }));
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ status: "accepted" });
    expect(deliveries).toHaveLength(0);
    await settle();
    expect(deliveries).toHaveLength(1);
    expect(Array.from(deliveries[0]!.body)).toEqual(Array.from(bytes));
    expect(deliveries[0]!.contentType).toBe("application/octet-stream");
    expect(deliveries[0]!.receivedAtMs).toBe(NOW);
    expect(deliveries[0]!.subscription).toEqual({ id: "a", source: TOPIC, topic: TOPIC, hub: HUB, callbackUrl: callbackUrlOf(BASE, "a") });
    expect(deliveries[0]!.headers).toEqual({ "content-type": "application/octet-stream", link });
    expect(deliveries[0]!.attempt).toBe(1);
    expect(named("websub_delivery")).toMatchObject([{ id: "a", delivery: deliveries[0]!.id, bytes: 7 }]);
  }, TEST_MS);

  test("signed content with a valid signature is delivered", async () => {
    const { app, put, deliveries, settle } = setup();
    await put({ id: "a", secret: "s3cret" });
    const body = encoder.encode("<entry/>");
    const res = await app.request(post(body, { "x-hub-signature": await signBody(body, "s3cret", "sha512") }));
    expect(res.status).toBe(202);
    await settle();
    expect(deliveries).toHaveLength(1);
  }, TEST_MS);

  test("with a secret, content without X-Hub-Signature is 401 signature_required and not delivered (websub.rocks 302)", async () => {
    const { app, put, deliveries, settle, named } = setup();
    await put({ id: "a", secret: "s3cret" });
    const res = await app.request(post(encoder.encode("<entry/>"), { "content-type": "application/atom+xml" }));
    expect(res.status).toBe(401);
    expect(res.headers.get("content-type")).toStartWith("application/json");
    const body = (await res.json()) as { error: string; message: string };
    expect(body.error).toBe("signature_required");
    expect(body.message).toContain("X-Hub-Signature");
    expect(JSON.stringify(body)).not.toContain("s3cret");
    await settle();
    expect(deliveries).toHaveLength(0);
    expect(named("websub_signature_rejected")).toMatchObject([{ level: "warn", id: "a", check: "missing" }]);
    expect(named("websub_delivery")).toEqual([]);
  }, TEST_MS);

  test(
    "a mismatching, malformed or unsupported signature is acknowledged 202 (WebSub 7.1.2 allows it) but dropped, with a warning",
    async () => {
      const { app, put, deliveries, settle, named } = setup();
      await put({ id: "a", secret: "s3cret" });
      const body = encoder.encode("<entry/>");
      const headers = [
        await signBody(body, "wrong"),
        await signBody(encoder.encode("<other/>"), "s3cret"),
        "sha256=abc",
        `md5=${"0".repeat(32)}`,
      ];
      for (const signature of headers) {
        const res = await app.request(post(body, { "x-hub-signature": signature }));
        expect(res.status).toBe(202);
        expect(await res.json()).toEqual({ status: "accepted" });
      }
      await settle();
      expect(deliveries).toHaveLength(0);
      expect(named("websub_signature_rejected")).toMatchObject([
        { level: "warn", id: "a", check: "mismatch" },
        { level: "warn", id: "a", check: "mismatch" },
        { level: "warn", id: "a", check: "malformed" },
        { level: "warn", id: "a", check: "unsupported" },
      ]);
      expect(JSON.stringify(named("websub_signature_rejected"))).not.toContain("s3cret");
      expect(named("websub_delivery")).toEqual([]);
    },
    TEST_MS,
  );

  test("with WEBSUB_SECRET set, unsigned content is refused 401 for every subscription, one made without a secret too", async () => {
    const { app, put, deliveries, settle, named } = setup({ secret: "s3cret" });
    await put({ id: "a" });
    await put({ id: "b", secret: "s3cret" });
    for (const id of ["a", "b"]) {
      const res = await app.request(post(encoder.encode("<entry/>"), {}, id));
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ error: "signature_required" });
    }
    // Signed with the server's secret, it is taken from either: the hub of "a" signs with it once it verified the new request.
    const body = encoder.encode("<entry/>");
    for (const id of ["a", "b"]) {
      expect((await app.request(post(body, { "x-hub-signature": await signBody(body, "s3cret") }, id))).status).toBe(202);
    }
    await settle();
    expect(deliveries.map((d) => d.subscription.id)).toEqual(["a", "b"]);
    expect(named("websub_signature_rejected")).toMatchObject([{ id: "a", check: "missing" }, { id: "b", check: "missing" }]);
  }, TEST_MS);

  test("signed with the secret a re-subscription replaces, before the hub verified it: 401 signature_outdated, not delivered", async () => {
    const { app, put, deliveries, settle, named } = setup({ secret: "s3cret-2" });
    // Requested with the new secret, not verified yet (the hub signs with the old one until then, WebSub 5.1) ...
    await put({ id: "a", secret: "s3cret-2", previousSecret: "s3cret-1", pending: "subscribe" });
    // ... or not requested yet: the server runs with the new secret, the subscriber has not looked at it.
    await put({ id: "b", secret: "s3cret-1" });
    const body = encoder.encode("<entry/>");
    for (const id of ["a", "b"]) {
      const res = await app.request(post(body, { "x-hub-signature": await signBody(body, "s3cret-1", "sha1") }, id));
      expect(res.status).toBe(401);
      const answer = (await res.json()) as { error: string; message: string };
      expect(answer.error).toBe("signature_outdated");
      expect(JSON.stringify(answer)).not.toContain("s3cret");
      // Neither secret: acknowledged and dropped, as any mismatch.
      expect((await app.request(post(body, { "x-hub-signature": await signBody(body, "guess") }, id))).status).toBe(202);
      expect((await app.request(post(body, { "x-hub-signature": await signBody(body, "s3cret-2") }, id))).status).toBe(202);
    }
    await settle();
    expect(deliveries.map((d) => d.subscription.id)).toEqual(["a", "b"]);
    expect(named("websub_signature_rejected").map((l) => [l.id, l.check])).toEqual([
      ["a", "outdated"],
      ["a", "mismatch"],
      ["b", "outdated"],
      ["b", "mismatch"],
    ]);
  }, TEST_MS);

  test("without a secret, unsigned content is delivered", async () => {
    const { app, put, deliveries, settle } = setup();
    await put({ id: "a" });
    expect((await app.request(post("x"))).status).toBe(202);
    await settle();
    expect(deliveries).toHaveLength(1);
  }, TEST_MS);

  test("content for an active lease is accepted; once now passes expiresAtMs it is 410 Gone", async () => {
    const { app, put, clock, named } = setup();
    await put({ id: "a", leaseSeconds: 60, expiresAtMs: NOW + 60_000 });
    expect((await app.request(post("x"))).status).toBe(202);
    clock.now = NOW + 59_999;
    expect((await app.request(post("x"))).status).toBe(202);
    clock.now = NOW + 60_000;
    const res = await app.request(post("x"));
    expect(res.status).toBe(410);
    expect(await res.json()).toMatchObject({ error: "subscription_gone" });
    expect(named("websub_gone")).toMatchObject([{ id: "a", reason: "lease_expired" }]);
  }, TEST_MS);

  test("content during a requested renewal is still accepted: the subscription stays active", async () => {
    const { app, put, deliveries, settle } = setup();
    await put({ id: "a", pending: "subscribe", leaseSeconds: 60, expiresAtMs: NOW + 60_000 });
    expect((await app.request(post("x"))).status).toBe(202);
    await settle();
    expect(deliveries).toHaveLength(1);
  }, TEST_MS);

  test("unknown ids and subscriptions that are not active are 410 Gone", async () => {
    const { app, put, deliveries, settle, named } = setup();
    const states = ["pending", "unsubscribing", "denied", "failed", "expired"] as const;
    for (const state of states) await put({ id: state, state });
    for (const id of ["nope", ...states]) expect((await app.request(post("x", {}, id))).status).toBe(410);
    await settle();
    expect(deliveries).toHaveLength(0);
    expect(named("websub_gone").map((l) => l.reason)).toEqual(["unknown_subscription", ...states.map((s) => `state_${s}`)]);
  }, TEST_MS);

  test("a body over maxBodyBytes by Content-Length is 413 before it is read", async () => {
    const { app, put, deliveries, settle, named } = setup({ maxBodyBytes: 100 });
    await put({ id: "a" });
    let pulled = false;
    const body = new ReadableStream<Uint8Array>({
      pull() {
        pulled = true;
      },
    }, { highWaterMark: 0 });
    const req = new Request(
      "http://localhost/websub/a",
      { method: "POST", body, headers: { "content-length": "101" }, duplex: "half" } as RequestInit,
    );
    const res = await app.request(req);
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: "payload_too_large" });
    expect(pulled).toBe(false);
    expect(named("websub_too_large")).toMatchObject([{ id: "a", maxBodyBytes: 100, contentLength: "101" }]);
    expect((await app.request(post(new Uint8Array(100)))).status).toBe(202);
    await settle();
    expect(deliveries).toHaveLength(1);
  }, TEST_MS);

  test("a streamed body without Content-Length is cut off at maxBodyBytes with 413", async () => {
    const { app, put, deliveries, settle } = setup({ maxBodyBytes: 100 });
    await put({ id: "a" });
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        sent += 40;
        controller.enqueue(new Uint8Array(40));
        if (sent >= 400) controller.close();
      },
    }, { highWaterMark: 0 });
    const req = new Request("http://localhost/websub/a", { method: "POST", body, duplex: "half" } as RequestInit);
    expect(req.headers.get("content-length")).toBeNull();
    const res = await app.request(req);
    expect(res.status).toBe(413);
    expect(sent).toBeLessThan(400);
    await settle();
    expect(deliveries).toHaveLength(0);
  }, TEST_MS);

  test("a delivery the store cannot write is not acknowledged: 503 with Retry-After, and an error event", async () => {
    const store = memoryStore(() => NOW);
    store.inbox.add = () => Promise.reject(new Error("disk I/O error"));
    const { app, put, named } = setup({ store });
    await put({ id: "a" });
    const res = await app.request(post("x"));
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("30");
    expect(await res.json()).toMatchObject({ error: "inbox_unavailable" });
    expect(named("websub_inbox_write_failed")).toMatchObject([{ level: "error", id: "a", error: { message: "disk I/O error" } }]);
    expect(named("websub_delivery")).toEqual([]);
  }, TEST_MS);

  test("past the inbox's count or bytes a delivery gets 503 with Retry-After, and nothing is stored", async () => {
    const { app, put, deliveries, settle, named, store } = setup({ limits: { maxCount: 2, maxBytes: 10 } });
    await put({ id: "a" });
    expect((await app.request(post("12345"))).status).toBe(202);
    // 5 + 6 bytes would pass 10.
    const big = await app.request(post("123456"));
    expect([big.status, big.headers.get("retry-after")]).toEqual([503, "30"]);
    expect(await big.json()).toMatchObject({ error: "inbox_full" });
    expect((await app.request(post("1"))).status).toBe(202);
    // A third would pass 2 deliveries.
    expect((await app.request(post("2"))).status).toBe(503);
    expect(named("websub_inbox_full")).toMatchObject([{ level: "warn", bytes: 6 }, { level: "warn", bytes: 1 }]);
    expect(await store.inbox.stats()).toEqual({ pending: 2, failed: 0, bytes: 6 });
    await settle();
    expect(deliveries.map((d) => new TextDecoder().decode(d.body))).toEqual(["12345", "1"]);
    // Processed, they leave room.
    expect((await app.request(post("2"))).status).toBe(202);
  }, TEST_MS);

  test("a full round trip: requested, verified, then signed content delivered and unsigned content refused", async () => {
    const { app, put, deliveries, settle } = setup();
    await put({ id: "a", state: "pending", pending: "subscribe", secret: "s3cret" });
    const res = await app.request(verify("a", subscribe("hi", { "hub.lease_seconds": "60" })));
    expect(await res.text()).toBe("hi");
    const body = encoder.encode("news");
    const posted = await app.request(post(body, { "x-hub-signature": await signBody(body, "s3cret", "sha1") }));
    expect(posted.status).toBe(202);
    expect((await app.request(post(body))).status).toBe(401);
    await settle();
    expect(deliveries.map((d) => new TextDecoder().decode(d.body))).toEqual(["news"]);
  }, TEST_MS);
});

describe("configuration (WEBSUB_*)", () => {
  const T = "https://example.com/feed";
  const problems = (env: Record<string, string | undefined>): string[] => {
    const result = loadWebSubConfig(env);
    if (result.ok) throw new Error(`expected problems, got ${JSON.stringify(result.config)}`);
    return result.problems;
  };

  test("a full configuration: topics, hub, secret, lease, callback URL and store", () => {
    const result = loadWebSubConfig({
      WEBSUB_TOPIC: `${T}, http://b.example/feed`,
      WEBSUB_HUB: "http://127.0.0.1:9/hub",
      WEBSUB_SECRET: "s3cret",
      WEBSUB_LEASE: "1h",
      WEBSUB_CALLBACK_URL: "https://me.example/hooks",
      WEBSUB_STORE: "memory",
    });
    expect(result).toEqual({
      ok: true,
      config: {
        topics: [T, "http://b.example/feed"],
        hub: "http://127.0.0.1:9/hub",
        secret: "s3cret",
        leaseSeconds: 3_600,
        callbackUrl: "https://me.example/hooks",
        store: { kind: "memory" },
        processing: PROCESSING_DEFAULTS,
        limits: INBOX_DEFAULTS,
      },
    });
  });

  test("only WEBSUB_TOPIC: hubs are discovered, the store is data/websub.sqlite", () => {
    const result = loadWebSubConfig({ WEBSUB_TOPIC: T });
    expect(result.ok).toBe(true);
    const config = result.ok ? result.config : null;
    expect(config?.topics).toEqual([T]);
    expect(config?.hub).toBeUndefined();
    expect(config?.secret).toBeUndefined();
    expect(config?.leaseSeconds).toBeUndefined();
    expect(config?.callbackUrl).toBeUndefined();
    expect(config?.store).toMatchObject({ kind: "sqlite" });
    expect(config?.store.kind === "sqlite" && config.store.path).toEndWith("/data/websub.sqlite");
  });

  test("WEBSUB_TOPIC: several URLs separated by commas and white space, duplicates dropped, order kept", () => {
    const result = loadWebSubConfig({
      WEBSUB_TOPIC: ` ${T},,http://b.example/x\n\thttps://c.example/ ,${T} http://b.example/x,`,
    });
    expect(result.ok && result.config?.topics).toEqual([T, "http://b.example/x", "https://c.example/"]);
    expect(parseTopics("https://a.example/1 https://a.example/2,https://a.example/1")).toEqual([
      "https://a.example/1",
      "https://a.example/2",
    ]);
  });

  test("WEBSUB_TOPIC: one bad URL in a list is refused, naming it; separators alone name no topic", () => {
    expect(problems({ WEBSUB_TOPIC: `${T}, ftp://x.example/y` })).toEqual([
      'WEBSUB_TOPIC "ftp://x.example/y" is not an http(s) URL: give one or more topic URLs, separated by commas',
    ]);
    expect(problems({ WEBSUB_TOPIC: `${T} example.com/feed` })[0]).toStartWith('WEBSUB_TOPIC "example.com/feed" is not an http(s) URL');
    expect(problems({ WEBSUB_TOPIC: " , ," })[0]).toStartWith("WEBSUB_TOPIC");
    expect(problems({ WEBSUB_TOPIC: " , ," })[0]).toContain("names no topic");
  });

  test("the inbox's variables: defaults, and every bad value named with what is allowed", () => {
    const config = loadWebSubConfig({
      WEBSUB_TOPIC: T,
      WEBSUB_STORE: "memory",
      WEBSUB_ORDER: "none",
      WEBSUB_CONCURRENCY: "8",
      WEBSUB_PROCESSING_LEASE: "1m",
      WEBSUB_RETRY_ATTEMPTS: "3",
      WEBSUB_RETRY_FIRST: "250ms",
      WEBSUB_RETRY_MAX: "5s",
      WEBSUB_INBOX_LIMIT: "50",
      WEBSUB_INBOX_BYTES: "2mb",
      WEBSUB_HANDLER: "test/websub/_content.ts",
      SHUTDOWN_TIMEOUT: "30s",
    });
    expect(config.ok && config.config).toMatchObject({
      processing: { ordered: false, concurrency: 8, leaseMs: 60_000, attempts: 3, retryFirstMs: 250, retryMaxMs: 5_000 },
      limits: { maxCount: 50, maxBytes: 2 * 1_048_576 },
      handler: expect.stringMatching(/\/test\/websub\/_content\.ts$/),
    });
    expect(problems({
      WEBSUB_TOPIC: T,
      WEBSUB_ORDER: "fifo",
      WEBSUB_CONCURRENCY: "0",
      WEBSUB_PROCESSING_LEASE: "0",
      WEBSUB_RETRY_ATTEMPTS: "many",
      WEBSUB_RETRY_FIRST: "1",
      WEBSUB_INBOX_LIMIT: "20000000",
      WEBSUB_INBOX_BYTES: "1gb",
      WEBSUB_HANDLER: "nowhere/content.ts",
    })).toEqual([
      'WEBSUB_HANDLER "nowhere/content.ts" does not exist: give the path of a module that exports handleContent',
      'WEBSUB_ORDER "fifo" is not an order: use subscription or none',
      'WEBSUB_CONCURRENCY "0" is under the minimum of 1',
      'WEBSUB_PROCESSING_LEASE "0" is zero: a claim must last a while, so use e.g. 30s',
      'WEBSUB_RETRY_ATTEMPTS "many" is not a count of attempts: use a whole number from 1 to 1000',
      'WEBSUB_RETRY_FIRST "1" has no unit: use e.g. 1s or 1m',
      'WEBSUB_INBOX_LIMIT "20000000" is over the maximum of 10000000',
      'WEBSUB_INBOX_BYTES "1gb" is over the maximum of 100mb',
    ]);
    expect(problems({ WEBSUB_TOPIC: T, WEBSUB_RETRY_FIRST: "2m", WEBSUB_RETRY_MAX: "1m" })).toEqual([
      'WEBSUB_RETRY_MAX "1m" is shorter than WEBSUB_RETRY_FIRST "2m": use at least that',
    ]);
    // The inbox must hold one delivery of the largest size the server accepts.
    expect(problems({ WEBSUB_TOPIC: T, WEBSUB_INBOX_BYTES: "512kb" })).toEqual([
      'WEBSUB_INBOX_BYTES "512kb" is smaller than BODY_LIMIT (1048576 bytes): the inbox must hold at least one delivery of the largest size accepted',
    ]);
    expect(loadWebSubConfig({ WEBSUB_TOPIC: T, WEBSUB_INBOX_BYTES: "512kb", BODY_LIMIT: "256kb" }).ok).toBe(true);
    expect(problems({ WEBSUB_RETRY_ATTEMPTS: "3" })).toEqual([
      'WEBSUB_TOPIC "" is missing: WEBSUB_RETRY_ATTEMPTS is set, and there is nothing to subscribe to',
    ]);
  });

  test("a WEBSUB_HANDLER module without a handleContent function stops the module at startup, naming the variable", async () => {
    const config = loadWebSubConfig({ WEBSUB_TOPIC: T, WEBSUB_STORE: "memory", WEBSUB_HANDLER: "test/websub/_hub.ts" });
    if (!config.ok || config.config === null) throw new Error("expected a configuration");
    const context = { logger: createLogger(() => {}), registry: createRegistry(), bodyLimitBytes: 1_024 };
    const error = await Promise.resolve(websub.create(config.config, context)).then(() => undefined, (e: Error) => e);
    expect(error?.message).toMatch(/^WEBSUB_HANDLER ".*\/test\/websub\/_hub\.ts" exports no function handleContent/);
  }, TEST_MS);

  test("WEBSUB_HUB must be an http(s) URL", () => {
    expect(problems({ WEBSUB_TOPIC: T, WEBSUB_HUB: "ftp://hub.example/" })).toEqual([
      'WEBSUB_HUB "ftp://hub.example/" is not an http(s) URL',
    ]);
  });

  test("WEBSUB_SECRET of only white space is refused, without quoting it", () => {
    for (const secret of ["   ", "\t \n"]) {
      const found = problems({ WEBSUB_TOPIC: T, WEBSUB_SECRET: secret });
      expect(found).toHaveLength(1);
      expect(found[0]).toStartWith("WEBSUB_SECRET is only white space");
      expect(found[0]).not.toContain(secret);
    }
  });

  test("WEBSUB_SECRET of 200 bytes or more is refused, without quoting it; 199 bytes is fine", () => {
    const ascii = "k9".repeat(100);
    const multibyte = "é".repeat(100); // 100 characters, 200 bytes
    for (const secret of [ascii, multibyte, ascii + "x"]) {
      const found = problems({ WEBSUB_TOPIC: T, WEBSUB_SECRET: secret });
      expect(found).toHaveLength(1);
      expect(found[0]).toStartWith("WEBSUB_SECRET is ");
      expect(found[0]).toContain("under 200 bytes");
      expect(found[0]).not.toContain(secret.slice(0, 20));
    }
    const ok = loadWebSubConfig({ WEBSUB_TOPIC: T, WEBSUB_SECRET: "k".repeat(199) });
    expect(ok.ok && ok.config?.secret).toBe("k".repeat(199));
  });

  test("WEBSUB_LEASE is a duration, rounded up to whole seconds", () => {
    const lease = (value: string) => {
      const result = loadWebSubConfig({ WEBSUB_TOPIC: T, WEBSUB_LEASE: value });
      return result.ok ? result.config?.leaseSeconds : result.problems;
    };
    expect(lease("90m")).toBe(5_400);
    expect(lease("1500ms")).toBe(2);
    expect(lease("90")).toEqual(['WEBSUB_LEASE "90" has no unit: use e.g. 90s or 90m']);
  });

  test("WEBSUB_CALLBACK_URL with a query or a fragment is refused, naming the variable", () => {
    for (const url of ["https://me.example/hooks?x=1", "https://me.example/hooks#f", "https://me.example/hooks?"]) {
      const found = problems({ WEBSUB_TOPIC: T, WEBSUB_CALLBACK_URL: url });
      expect(found).toHaveLength(1);
      expect(found[0]).toStartWith(`WEBSUB_CALLBACK_URL "${url}" has a query or a fragment`);
    }
    expect(problems({ WEBSUB_TOPIC: T, WEBSUB_CALLBACK_URL: "ftp://me.example/hooks" })).toEqual([
      'WEBSUB_CALLBACK_URL "ftp://me.example/hooks" is not an http(s) URL',
    ]);
    const ok = loadWebSubConfig({ WEBSUB_TOPIC: T, WEBSUB_CALLBACK_URL: "http://me.example:8080/base/" });
    expect(ok.ok && ok.config?.callbackUrl).toBe("http://me.example:8080/base/");
  });

  test("WEBSUB_STORE: a spec that is not a store is refused, naming the variable and no credentials", () => {
    const found = problems({ WEBSUB_TOPIC: T, WEBSUB_STORE: "postgres://user:hunter2@db.example/websub" });
    expect(found).toHaveLength(1);
    expect(found[0]).toStartWith("WEBSUB_STORE ");
    expect(found[0]).toContain("is not a store");
    expect(found[0]).not.toContain("hunter2");
    const redis = loadWebSubConfig({ WEBSUB_TOPIC: T, WEBSUB_STORE: "redis://user:hunter2@127.0.0.1:6379/2" });
    expect(redis.ok && redis.config?.store).toMatchObject({ kind: "redis" });
    expect(redis.ok && redis.config?.store.kind === "redis" && redis.config.store.description).not.toContain("hunter2");
  });

  test("a WEBSUB_* variable without WEBSUB_TOPIC is an error, naming it (and never quoting the secret)", () => {
    expect(problems({ WEBSUB_HUB: "http://hub.example/" })).toEqual([
      'WEBSUB_TOPIC "" is missing: WEBSUB_HUB is set, and there is nothing to subscribe to',
    ]);
    for (const [key, value] of [["WEBSUB_SECRET", "hush-hush"], ["WEBSUB_LEASE", "1h"], ["WEBSUB_CALLBACK_URL", "https://me.example/"]]) {
      const found = problems({ [key!]: value });
      expect(found).toHaveLength(1);
      expect(found[0]).toStartWith("WEBSUB_TOPIC");
      expect(found[0]).toContain(key!);
      expect(found[0]).not.toContain("hush-hush");
    }
  });

  test("unset (or set empty), the module is off", () => {
    expect(loadWebSubConfig({})).toEqual({ ok: true, config: null });
    expect(loadWebSubConfig({ WEBSUB_TOPIC: "", WEBSUB_HUB: "" })).toEqual({ ok: true, config: null });
  });
});
