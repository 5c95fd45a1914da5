import { Hono } from "hono";
import type { Context } from "hono";
import { readBody } from "../policy/body.ts";
import type { Logger } from "../policy/log.ts";

/** HMAC hashes a hub may sign content with (WebSub §8). */
export type HashAlgorithm = "sha1" | "sha256" | "sha384" | "sha512";

/** Outcome of checking an `X-Hub-Signature` header; only "valid" lets content through. */
export type SignatureCheck = "valid" | "missing" | "malformed" | "unsupported" | "mismatch";

const ALGORITHMS: Record<HashAlgorithm, { hash: string; bytes: number }> = {
  sha1: { hash: "SHA-1", bytes: 20 },
  sha256: { hash: "SHA-256", bytes: 32 },
  sha384: { hash: "SHA-384", bytes: 48 },
  sha512: { hash: "SHA-512", bytes: 64 },
};

const encoder = new TextEncoder();

function hmacKey(secret: string, algorithm: HashAlgorithm, usage: "sign" | "verify"): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: ALGORITHMS[algorithm].hash }, false, [usage]);
}

// Web Crypto takes views of an ArrayBuffer only; copy just when the body sits on a SharedArrayBuffer.
function plain(body: Uint8Array): Uint8Array<ArrayBuffer> {
  return body.buffer instanceof ArrayBuffer ? (body as Uint8Array<ArrayBuffer>) : body.slice();
}

/** Checks an `X-Hub-Signature: method=hex` header against the HMAC of the raw body, in constant time (crypto.subtle.verify). */
export async function verifySignature(header: string | null, body: Uint8Array, secret: string): Promise<SignatureCheck> {
  if (header === null) return "missing";
  const eq = header.indexOf("=");
  if (eq < 0) return "malformed";
  const method = header.slice(0, eq).trim().toLowerCase();
  const hex = header.slice(eq + 1).trim();
  // hasOwn, so that "constructor=..." or "__proto__=..." cannot reach the prototype.
  if (!Object.hasOwn(ALGORITHMS, method)) return "unsupported";
  const algorithm = method as HashAlgorithm;
  if (!/^[0-9a-f]*$/i.test(hex) || hex.length !== ALGORITHMS[algorithm].bytes * 2) return "malformed";
  const signature = new Uint8Array(hex.length / 2);
  for (let i = 0; i < signature.length; i++) signature[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  // verify() rather than sign-and-compare: the comparison is constant time inside Web Crypto.
  const key = await hmacKey(secret, algorithm, "verify");
  return (await crypto.subtle.verify("HMAC", key, signature, plain(body))) ? "valid" : "mismatch";
}

/** `method=hex` for a body, as a hub sends it (used by the hub simulator and tests). */
export async function signBody(body: Uint8Array, secret: string, algorithm: HashAlgorithm = "sha256"): Promise<string> {
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret, algorithm, "sign"), plain(body)));
  return `${algorithm}=${Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** One subscription as the callback knows it; `id` is the path segment in /websub/:id. */
export interface Subscription {
  id: string;
  hub: string;
  topic: string;
  secret?: string;
  state: "pending" | "active" | "unsubscribing" | "denied";
  leaseSeconds?: number; // what the hub granted
  expiresAtMs?: number; // epoch ms when the lease ends; absent means no expiry
}

/** Where subscriptions live; async so a database can stand behind it. */
export interface SubscriptionStore {
  get(id: string): Promise<Subscription | undefined>;
  put(s: Subscription): Promise<void>;
  delete(id: string): Promise<void>;
}

/** A process-local store; copies on the way in and out so callers cannot mutate it behind its back. */
export function memoryStore(): SubscriptionStore {
  const map = new Map<string, Subscription>();
  return {
    get: (id) => Promise.resolve(map.has(id) ? { ...map.get(id)! } : undefined),
    put: (s) => Promise.resolve(void map.set(s.id, { ...s })),
    delete: (id) => Promise.resolve(void map.delete(id)),
  };
}

/** Content a hub distributed whose signature (if any) checked out. */
export interface Delivery {
  subscription: Subscription;
  body: Uint8Array;
  contentType: string | null;
  receivedAtMs: number;
}

/** Configuration of the callback routes. */
export interface WebSubOptions {
  store: SubscriptionStore;
  logger: Logger;
  /** Largest content body accepted; larger gets 413. */
  maxBodyBytes: number;
  /** Called after the 2xx has been sent, for content whose signature checked out. Errors are logged, never thrown. */
  onDelivery(delivery: Delivery): void | Promise<void>;
  /** Clock for lease expiry; tests pin it. */
  now?: () => number;
}

function goneReason(sub: Subscription | undefined, nowMs: number): string | undefined {
  if (sub === undefined) return "unknown_subscription";
  if (sub.state !== "active") return `state_${sub.state}`;
  if (sub.expiresAtMs !== undefined && sub.expiresAtMs <= nowMs) return "lease_expired";
  return undefined;
}

// A rejected signature gets the same answer as accepted content, so the sender learns nothing from it.
function accepted(c: Context): Response {
  return c.json({ status: "accepted" }, 202);
}

/** Routes for the callback, to be mounted with app.route("/websub", websubRoutes(options)). */
export function websubRoutes(options: WebSubOptions): Hono {
  const { store, logger, maxBodyBytes } = options;
  const now = options.now ?? Date.now;
  const routes = new Hono();

  // Verification of intent (§5.3): confirm only what we asked for, so nobody can subscribe us to anything.
  routes.get("/:id", async (c) => {
    const id = c.req.param("id");
    const [mode, topic, challenge, lease] = ["mode", "topic", "challenge", "lease_seconds"].map((k) => c.req.query(`hub.${k}`));
    const refuse = (reason: string) => {
      logger.info("websub_verification_refused", { id, mode: mode ?? null, reason });
      return c.json({ error: "verification_refused", message: `This callback does not confirm the request (${reason}).` }, 404);
    };
    const sub = await store.get(id);
    if (sub === undefined) return refuse("unknown_subscription");
    if (topic !== sub.topic) return refuse("topic_mismatch");
    if (mode === "denied") {
      await store.put({ ...sub, state: "denied" });
      logger.warn("websub_denied", { id, topic, reason: c.req.query("hub.reason") ?? null });
      return c.body(null, 200);
    }
    if (mode !== "subscribe" && mode !== "unsubscribe") return refuse("unknown_mode");
    if (challenge === undefined || challenge === "") return refuse("missing_challenge");
    const echo = () => c.text(challenge, 200, { "x-content-type-options": "nosniff" });
    if (mode === "unsubscribe") {
      if (sub.state !== "unsubscribing") return refuse("not_requested");
      await store.delete(id);
      logger.info("websub_verified", { id, mode, topic, leaseSeconds: null });
      return echo();
    }
    // "active" too: a hub re-verifies on renewal, and it must not interrupt delivery.
    if (sub.state !== "pending" && sub.state !== "active") return refuse("not_requested");
    if (lease !== undefined && !/^\d{1,10}$/.test(lease)) return refuse("invalid_lease_seconds");
    const next: Subscription = { ...sub, state: "active" };
    delete next.leaseSeconds;
    delete next.expiresAtMs;
    if (lease !== undefined) {
      next.leaseSeconds = Number(lease);
      next.expiresAtMs = now() + next.leaseSeconds * 1000;
    }
    await store.put(next);
    logger.info("websub_verified", { id, mode, topic, leaseSeconds: next.leaseSeconds ?? null });
    return echo();
  });

  // Content distribution (§7, §8): 410 tells the hub to stop, 413 bounds memory, 2xx acknowledges.
  routes.post("/:id", async (c) => {
    const id = c.req.param("id");
    const sub = await store.get(id);
    const reason = goneReason(sub, now());
    if (sub === undefined || reason !== undefined) {
      logger.info("websub_gone", { id, reason });
      return c.json({ error: "subscription_gone", message: "This callback has no active subscription." }, 410);
    }
    const body = await readBody(c.req.raw, maxBodyBytes);
    if (body === undefined) {
      logger.warn("websub_too_large", { id, maxBodyBytes, contentLength: c.req.header("content-length") ?? null });
      return c.json({ error: "payload_too_large", message: `The body exceeds ${maxBodyBytes} bytes.` }, 413);
    }
    if (sub.secret) {
      const check = await verifySignature(c.req.header("x-hub-signature") ?? null, body, sub.secret);
      if (check !== "valid") {
        logger.warn("websub_signature_rejected", { id, check });
        return accepted(c);
      }
    }
    logger.info("websub_delivery", { id, bytes: body.byteLength });
    const delivery: Delivery = { subscription: sub, body, contentType: c.req.header("content-type") ?? null, receivedAtMs: now() };
    // After the response: a slow consumer must not hold the hub's connection open.
    setTimeout(() => {
      Promise.resolve()
        .then(() => options.onDelivery(delivery))
        .catch((error: unknown) => logger.error("websub_delivery_failed", { id, error }));
    }, 0);
    return accepted(c);
  });

  return routes;
}

/** Asks a hub to subscribe (or unsubscribe): records a pending subscription, POSTs the form, resolves with the hub's status. */
export async function requestSubscription(options: {
  store: SubscriptionStore;
  hub: string;
  topic: string;
  callbackUrl: string; // full URL including /websub/<id>
  id: string;
  secret?: string;
  leaseSeconds?: number;
  mode?: "subscribe" | "unsubscribe";
  fetch?: typeof fetch;
}): Promise<{ status: number }> {
  const { store, hub, topic, callbackUrl, id, secret, leaseSeconds, mode = "subscribe" } = options;
  if (secret !== undefined && (secret === "" || encoder.encode(secret).byteLength >= 200)) {
    throw new RangeError("The hub.secret must be from 1 to 199 bytes long.");
  }
  const previous = await store.get(id);
  // Renewing an active subscription keeps it active, so content keeps flowing until the hub re-verifies.
  const renewing = mode === "subscribe" && previous?.state === "active" && previous.hub === hub && previous.topic === topic;
  const next: Subscription = mode === "unsubscribe"
    ? { ...previous, id, hub, topic, state: "unsubscribing" }
    : { ...(renewing ? previous : {}), id, hub, topic, state: renewing ? "active" : "pending" };
  // The hub signs with whatever secret this request sends, none included.
  if (mode === "subscribe") delete next.secret;
  if (mode === "subscribe" && secret !== undefined) next.secret = secret;
  await store.put(next);

  const form = new URLSearchParams({ "hub.mode": mode, "hub.topic": topic, "hub.callback": callbackUrl });
  // The secret and the lease only mean something to a subscription request (§5.1).
  if (mode === "subscribe" && secret !== undefined) form.set("hub.secret", secret);
  if (mode === "subscribe" && leaseSeconds !== undefined) form.set("hub.lease_seconds", String(leaseSeconds));
  // A hub that refuses (or cannot be reached) leaves the store as it was before the request.
  const restore = () => (previous === undefined ? store.delete(id) : store.put(previous));
  let res: Response;
  try {
    const headers = { "content-type": "application/x-www-form-urlencoded" };
    res = await (options.fetch ?? fetch)(hub, { method: "POST", headers, body: form.toString() });
  } catch (error) {
    await restore();
    throw error;
  }
  await res.body?.cancel().catch(() => undefined);
  if (res.status < 200 || res.status >= 300) await restore();
  return { status: res.status };
}
