import { describe, expect, test } from "bun:test";
import { Hono } from "hono";
import { createLogger } from "../policy/log.ts";
import { loadWebSubConfig } from "./mod.ts";
import { memoryStore, requestSubscription, signBody, verifySignature, websubRoutes } from "./websub.ts";
import type { Delivery, HashAlgorithm, Subscription, SubscriptionStore } from "./websub.ts";

const encoder = new TextEncoder();
const NOW = 1_700_000_000_000;
const TOPIC = "https://publisher.example/feed";
const HUB = "https://hub.example/";

function setup(options: { maxBodyBytes?: number; onDelivery?: (d: Delivery) => void | Promise<void> } = {}) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger((line) => lines.push(JSON.parse(line)));
  const store = memoryStore();
  const clock = { now: NOW };
  const deliveries: Delivery[] = [];
  const app = new Hono();
  app.route(
    "/websub",
    websubRoutes({
      store,
      logger,
      maxBodyBytes: options.maxBodyBytes ?? 1024,
      onDelivery: options.onDelivery ?? ((d) => void deliveries.push(d)),
      now: () => clock.now,
    }),
  );
  const put = (s: Partial<Subscription> & { id: string }) => store.put({ hub: HUB, topic: TOPIC, state: "active", ...s });
  return { app, store, clock, deliveries, lines, put, named: (event: string) => lines.filter((l) => l.event === event) };
}

function verify(id: string, params: Record<string, string>) {
  return `/websub/${id}?${new URLSearchParams(params)}`;
}

// onDelivery runs from setTimeout(…, 0); two macrotask turns let an async consumer settle.
const settle = () => new Promise((resolve) => setTimeout(resolve, 5));

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
  test("a pending subscribe is confirmed by echoing the challenge, and becomes active with its lease", async () => {
    const { app, store, put, named } = setup();
    await put({ id: "a", state: "pending" });
    const res = await app.request(
      verify("a", { "hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c-123", "hub.lease_seconds": "600" }),
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toStartWith("text/plain");
    expect(await res.text()).toBe("c-123");
    expect(await store.get("a")).toMatchObject({ state: "active", leaseSeconds: 600, expiresAtMs: NOW + 600_000 });
    expect(named("websub_verified")).toMatchObject([{ id: "a", mode: "subscribe", topic: TOPIC, leaseSeconds: 600 }]);
  });

  test("a renewal of an active subscription is confirmed; no lease_seconds means no expiry", async () => {
    const { app, store, put } = setup();
    await put({ id: "a", leaseSeconds: 10, expiresAtMs: NOW + 10_000 });
    const res = await app.request(verify("a", { "hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "again" }));
    expect(await res.text()).toBe("again");
    const sub = await store.get("a");
    expect(sub?.state).toBe("active");
    expect(sub?.expiresAtMs).toBeUndefined();
    expect(sub?.leaseSeconds).toBeUndefined();
  });

  const refusals: Array<[string, Partial<Subscription> | undefined, Record<string, string>, string]> = [
    ["an unknown id", undefined, { "hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c" }, "unknown_subscription"],
    [
      "a wrong topic",
      { state: "pending" },
      { "hub.mode": "subscribe", "hub.topic": "https://evil.example/", "hub.challenge": "c" },
      "topic_mismatch",
    ],
    [
      "an unsolicited subscribe",
      { state: "denied" },
      { "hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c" },
      "not_requested",
    ],
    ["a missing challenge", { state: "pending" }, { "hub.mode": "subscribe", "hub.topic": TOPIC }, "missing_challenge"],
    ["an unknown mode", { state: "pending" }, { "hub.mode": "resubscribe", "hub.topic": TOPIC, "hub.challenge": "c" }, "unknown_mode"],
    [
      "an unsubscribe we did not ask for",
      { state: "active" },
      { "hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "c" },
      "not_requested",
    ],
    ["a malformed lease", { state: "pending" }, {
      "hub.mode": "subscribe",
      "hub.topic": TOPIC,
      "hub.challenge": "c",
      "hub.lease_seconds": "-5",
    }, "invalid_lease_seconds"],
  ];
  for (const [name, existing, params, reason] of refusals) {
    test(`${name} is refused with 404`, async () => {
      const { app, store, put, named } = setup();
      if (existing) await put({ id: "a", ...existing });
      const res = await app.request(verify("a", params));
      expect(res.status).toBe(404);
      const body = (await res.json()) as { error: string; message: string };
      expect(body.error).toBe("verification_refused");
      expect(body.message).not.toContain("c-");
      expect(named("websub_verification_refused")).toMatchObject([{ id: "a", reason }]);
      if (existing) expect((await store.get("a"))?.state).toBe(existing.state!);
    });
  }

  test("an unsubscribe we asked for is confirmed and the subscription deleted", async () => {
    const { app, store, put, named } = setup();
    await put({ id: "a", state: "unsubscribing" });
    const res = await app.request(verify("a", { "hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "bye" }));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("bye");
    expect(await store.get("a")).toBeUndefined();
    expect(named("websub_verified")).toMatchObject([{ id: "a", mode: "unsubscribe" }]);
  });

  test("a denial marks the subscription denied and logs the reason", async () => {
    const { app, store, put, named } = setup();
    await put({ id: "a", state: "pending" });
    const res = await app.request(verify("a", { "hub.mode": "denied", "hub.topic": TOPIC, "hub.reason": "topic not allowed" }));
    expect(res.status).toBe(200);
    expect((await store.get("a"))?.state).toBe("denied");
    expect(named("websub_denied")).toMatchObject([{ id: "a", reason: "topic not allowed" }]);
  });

  test("a denial for another topic is refused", async () => {
    const { app, store, put } = setup();
    await put({ id: "a", state: "active" });
    const res = await app.request(verify("a", { "hub.mode": "denied", "hub.topic": "https://other.example/" }));
    expect(res.status).toBe(404);
    expect((await store.get("a"))?.state).toBe("active");
  });
});

describe("content distribution", () => {
  const post = (body: BodyInit | null, headers: Record<string, string> = {}, id = "a") =>
    new Request(`http://localhost/websub/${id}`, { method: "POST", body, headers });

  test("accepted content answers 202 at once and reaches onDelivery once, byte for byte, afterwards", async () => {
    const { app, put, deliveries, named } = setup();
    await put({ id: "a" });
    const bytes = new Uint8Array([0, 255, 10, 13, 0xc3, 0x28, 7]); // not valid UTF-8 on purpose
    const res = await app.request(post(bytes, { "content-type": "application/octet-stream" }));
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ status: "accepted" });
    expect(deliveries).toHaveLength(0);
    await settle();
    expect(deliveries).toHaveLength(1);
    expect(Array.from(deliveries[0]!.body)).toEqual(Array.from(bytes));
    expect(deliveries[0]!.contentType).toBe("application/octet-stream");
    expect(deliveries[0]!.receivedAtMs).toBe(NOW);
    expect(deliveries[0]!.subscription.id).toBe("a");
    expect(named("websub_delivery")).toMatchObject([{ id: "a", bytes: 7 }]);
  });

  test("signed content with a valid signature is delivered", async () => {
    const { app, put, deliveries } = setup();
    await put({ id: "a", secret: "s3cret" });
    const body = encoder.encode("<entry/>");
    const res = await app.request(post(body, { "x-hub-signature": await signBody(body, "s3cret", "sha512") }));
    expect(res.status).toBe(202);
    await settle();
    expect(deliveries).toHaveLength(1);
  });

  test("a bad or missing signature is acknowledged with 2xx but dropped, with a warning", async () => {
    const { app, put, deliveries, named } = setup();
    await put({ id: "a", secret: "s3cret" });
    const body = encoder.encode("<entry/>");
    const bad = await app.request(post(body, { "x-hub-signature": await signBody(body, "wrong") }));
    const missing = await app.request(post(body));
    for (const res of [bad, missing]) {
      expect(res.status).toBe(202);
      expect(await res.json()).toEqual({ status: "accepted" });
    }
    await settle();
    expect(deliveries).toHaveLength(0);
    const warned = named("websub_signature_rejected");
    expect(warned).toMatchObject([{ level: "warn", id: "a", check: "mismatch" }, { level: "warn", id: "a", check: "missing" }]);
    expect(named("websub_delivery")).toEqual([]);
  });

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
  });

  test("unknown ids and subscriptions that are not active are 410 Gone", async () => {
    const { app, put, deliveries } = setup();
    await put({ id: "p", state: "pending" });
    await put({ id: "u", state: "unsubscribing" });
    await put({ id: "d", state: "denied" });
    for (const id of ["nope", "p", "u", "d"]) expect((await app.request(post("x", {}, id))).status).toBe(410);
    await settle();
    expect(deliveries).toHaveLength(0);
  });

  test("a body over maxBodyBytes by Content-Length is 413 before it is read", async () => {
    const { app, put, deliveries, named } = setup({ maxBodyBytes: 100 });
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
  });

  test("a streamed body without Content-Length is cut off at maxBodyBytes with 413", async () => {
    const { app, put, deliveries } = setup({ maxBodyBytes: 100 });
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
  });

  test("a failing onDelivery is logged, not thrown", async () => {
    const { app, put, named } = setup({
      onDelivery: () => Promise.reject(new Error("consumer broke")),
    });
    await put({ id: "a" });
    expect((await app.request(post("x"))).status).toBe(202);
    await settle();
    expect(named("websub_delivery_failed")).toMatchObject([{ level: "error", id: "a", error: { message: "consumer broke" } }]);
  });
});

describe("requestSubscription", () => {
  function fakeHub(status = 202) {
    const calls: Array<{ url: string; method: string; contentType: string | null; form: URLSearchParams }> = [];
    const fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const req = new Request(input, init);
      calls.push({
        url: req.url,
        method: req.method,
        contentType: req.headers.get("content-type"),
        form: new URLSearchParams(await req.text()),
      });
      return new Response(null, { status });
    }) as typeof globalThis.fetch;
    return { calls, fetch };
  }
  const base = (store: SubscriptionStore, fetch: typeof globalThis.fetch) => ({
    store,
    fetch,
    hub: HUB,
    topic: TOPIC,
    id: "a",
    callbackUrl: "https://me.example/websub/a",
  });

  test("subscribe POSTs the form to the hub and records a pending subscription", async () => {
    const store = memoryStore();
    const hub = fakeHub();
    const result = await requestSubscription({ ...base(store, hub.fetch), secret: "s3cret", leaseSeconds: 3600 });
    expect(result).toEqual({ status: 202 });
    expect(hub.calls).toHaveLength(1);
    const call = hub.calls[0]!;
    expect(call.url).toBe(HUB);
    expect(call.method).toBe("POST");
    expect(call.contentType).toStartWith("application/x-www-form-urlencoded");
    expect(Object.fromEntries(call.form)).toEqual({
      "hub.mode": "subscribe",
      "hub.topic": TOPIC,
      "hub.callback": "https://me.example/websub/a",
      "hub.secret": "s3cret",
      "hub.lease_seconds": "3600",
    });
    expect(await store.get("a")).toEqual({ id: "a", hub: HUB, topic: TOPIC, secret: "s3cret", state: "pending" });
  });

  test("without a secret or lease the form carries neither", async () => {
    const store = memoryStore();
    const hub = fakeHub();
    await requestSubscription(base(store, hub.fetch));
    expect([...hub.calls[0]!.form.keys()].sort()).toEqual(["hub.callback", "hub.mode", "hub.topic"]);
    expect((await store.get("a"))?.secret).toBeUndefined();
  });

  test("unsubscribe marks the subscription unsubscribing, and the hub's verification then deletes it", async () => {
    const { app, store, put } = setup();
    await put({ id: "a", secret: "s3cret" });
    const hub = fakeHub();
    await requestSubscription({ ...base(store, hub.fetch), mode: "unsubscribe" });
    expect(hub.calls[0]!.form.get("hub.mode")).toBe("unsubscribe");
    expect((await store.get("a"))?.state).toBe("unsubscribing");
    const res = await app.request(verify("a", { "hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "bye" }));
    expect(await res.text()).toBe("bye");
    expect(await store.get("a")).toBeUndefined();
  });

  test("a full round trip: subscribe, verify, deliver signed content", async () => {
    const { app, store, deliveries } = setup();
    await requestSubscription({ ...base(store, fakeHub().fetch), secret: "s3cret", leaseSeconds: 60 });
    const res = await app.request(
      verify("a", { "hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "hi", "hub.lease_seconds": "60" }),
    );
    expect(await res.text()).toBe("hi");
    const body = encoder.encode("news");
    const posted = await app.request(
      new Request("http://localhost/websub/a", {
        method: "POST",
        body,
        headers: { "x-hub-signature": await signBody(body, "s3cret", "sha1") },
      }),
    );
    expect(posted.status).toBe(202);
    await settle();
    expect(new TextDecoder().decode(deliveries[0]!.body)).toBe("news");
  });

  test("renewing an active subscription keeps it active", async () => {
    const store = memoryStore();
    await store.put({ id: "a", hub: HUB, topic: TOPIC, state: "active", leaseSeconds: 60, expiresAtMs: NOW + 60_000 });
    await requestSubscription({ ...base(store, fakeHub().fetch), leaseSeconds: 60 });
    expect((await store.get("a"))?.state).toBe("active");
  });

  test("a renewal replaces the stored secret with the one it sends, or with none", async () => {
    const store = memoryStore();
    await store.put({ id: "a", hub: HUB, topic: TOPIC, secret: "old", state: "active" });
    await requestSubscription({ ...base(store, fakeHub().fetch), secret: "new" });
    expect(await store.get("a")).toEqual({ id: "a", hub: HUB, topic: TOPIC, secret: "new", state: "active" });
    await requestSubscription(base(store, fakeHub().fetch));
    expect(await store.get("a")).toEqual({ id: "a", hub: HUB, topic: TOPIC, state: "active" });
  });

  test("a hub that refuses, or cannot be reached, leaves the store as it was", async () => {
    const store = memoryStore();
    expect(await requestSubscription(base(store, fakeHub(400).fetch))).toEqual({ status: 400 });
    expect(await store.get("a")).toBeUndefined();
    const existing: Subscription = { id: "a", hub: HUB, topic: TOPIC, state: "active" };
    await store.put(existing);
    const down = (() => Promise.reject(new TypeError("connection refused"))) as unknown as typeof fetch;
    await expect(requestSubscription({ ...base(store, down), mode: "unsubscribe" })).rejects.toThrow("connection refused");
    expect(await store.get("a")).toEqual(existing);
  });

  test("a secret of 200 bytes or more is refused before anything is stored", async () => {
    const store = memoryStore();
    const hub = fakeHub();
    await expect(requestSubscription({ ...base(store, hub.fetch), secret: "x".repeat(200) })).rejects.toThrow(RangeError);
    expect(hub.calls).toHaveLength(0);
    expect(await store.get("a")).toBeUndefined();
  });
});

describe("configuration (WEBSUB_*)", () => {
  test("a WebSub subscription needs a hub and a topic, both http(s) URLs", () => {
    const result = loadWebSubConfig({
      WEBSUB_HUB: "http://127.0.0.1:9/hub",
      WEBSUB_TOPIC: "https://example.com/feed",
      WEBSUB_SECRET: "s3cret",
      WEBSUB_LEASE: "1h",
    });
    expect(result.ok && result.config).toEqual({
      hub: "http://127.0.0.1:9/hub",
      topic: "https://example.com/feed",
      secret: "s3cret",
      leaseSeconds: 3_600,
      callbackUrl: undefined,
    });
    expect(loadWebSubConfig({ WEBSUB_HUB: "http://hub.example/" })).toEqual({
      ok: false,
      problems: ['WEBSUB_TOPIC "" is missing: WEBSUB_HUB "http://hub.example/" needs a topic to subscribe to'],
    });
    expect(loadWebSubConfig({ WEBSUB_TOPIC: "https://example.com/feed" })).toEqual({
      ok: false,
      problems: ['WEBSUB_TOPIC "https://example.com/feed" has no hub: set WEBSUB_HUB too'],
    });
    expect(loadWebSubConfig({ WEBSUB_HUB: "ftp://hub.example/", WEBSUB_TOPIC: "https://example.com/feed" })).toEqual({
      ok: false,
      problems: ['WEBSUB_HUB "ftp://hub.example/" is not an http(s) URL'],
    });
    const long = loadWebSubConfig({ WEBSUB_HUB: "http://h.example/", WEBSUB_TOPIC: "http://t.example/", WEBSUB_SECRET: "x".repeat(200) });
    expect(long.ok ? [] : long.problems[0]).toContain("WEBSUB_SECRET");
  });

  test("unset, the module is off", () => {
    expect(loadWebSubConfig({})).toEqual({ ok: true, config: null });
  });
});
