import { Hono } from "hono";
import type { Context } from "hono";
import { readBody } from "../policy/body.ts";
import type { Logger } from "../policy/log.ts";
import { renewAtMs, toUnsubscribe } from "./subscriber.ts";
import type { DeliveredTo, InboxLimits } from "./store/inbox.ts";
import type { Subscription, SubscriptionStore } from "./store/types.ts";

/** HMAC hashes a hub may sign content with (WebSub 7.1.1). */
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

export type { Subscription, SubscriptionStore } from "./store/types.ts";
export type { DeliveredTo } from "./store/inbox.ts";

/** Content a hub distributed whose signature (if any) checked out, as `handleContent` receives it. */
export interface Delivery {
  /** Stable across attempts and restarts: processing keyed on it can be idempotent. */
  id: string;
  /** 1 the first time; more when an earlier attempt threw or its process ended (docs/websub.md#processing). */
  attempt: number;
  /** The subscription it came for, as it stood when it arrived (never its secret). */
  subscription: DeliveredTo;
  /** The hub's headers that describe the content (see CONTENT_HEADERS), names in lower case. */
  headers: Record<string, string>;
  /** The raw body, as signed; on an ArrayBuffer, so that it can be sent on as it is (`fetch(url, { body })`). */
  body: Uint8Array<ArrayBuffer>;
  /** `headers["content-type"]`, or null. */
  contentType: string | null;
  /** Epoch ms when it was stored, just before the hub's 2xx. */
  receivedAtMs: number;
}

/**
 * The request headers kept with a delivery: what describes the content (the topic's `Link`
 * rel=self and rel=hub, WebSub 7), nothing about the connection or its credentials.
 */
export const CONTENT_HEADERS = ["content-type", "content-encoding", "content-language", "link", "last-modified", "etag", "date"] as const;

/** Seconds a hub is asked to wait (`Retry-After`) when the inbox is full or cannot be written. */
export const RETRY_AFTER_SECONDS = 30;

/** Configuration of the callback routes. */
export interface WebSubOptions {
  store: SubscriptionStore;
  logger: Logger;
  /** Largest content body accepted; larger gets 413. */
  maxBodyBytes: number;
  /**
   * The server's secret (WEBSUB_SECRET): content for any subscription must be signed with it from
   * the moment the server runs with it, whatever secret (or none) the subscription was made with.
   */
  secret?: string;
  /** The inbox's bounds (WEBSUB_INBOX_LIMIT, WEBSUB_INBOX_BYTES): past them, 503. */
  limits: InboxLimits;
  /** Called once a delivery is in the store's inbox, before its 2xx: the processor looks at once. */
  onStored?(): void;
  /** Called after the store changed (a verification), so that the subscriber looks again. */
  onChange?(): void;
  /** Clock for lease expiry; tests pin it. */
  now?: () => number;
  random?: () => number;
}

function goneReason(sub: Subscription | undefined, nowMs: number): string | undefined {
  if (sub === undefined) return "unknown_subscription";
  if (sub.state !== "active") return `state_${sub.state}`;
  if (sub.unsubscribe) return "state_unsubscribing";
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

  // Verification of intent (§5.3): confirm only a request we made and have not seen verified yet,
  // so that nobody can subscribe us to anything, or renew what we let go.
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
      logger.error("websub_denied", { id, topic, hub: sub.hub, reason: c.req.query("hub.reason") ?? null });
      options.onChange?.();
      // Not wanted any more: the denial ends it.
      if (sub.unsubscribe) {
        await store.delete(id);
        return c.body(null, 200);
      }
      // A hub may deny at any time, also long after it verified (§5.2).
      const denied: Subscription = { ...sub, state: "denied", updatedAtMs: now() };
      delete denied.pending;
      delete denied.nextAttemptAtMs;
      await store.put(denied);
      return c.body(null, 200);
    }
    if (mode !== "subscribe" && mode !== "unsubscribe") return refuse("unknown_mode");
    if (challenge === undefined || challenge === "") return refuse("missing_challenge");
    if (sub.pending !== mode) return refuse("not_requested");
    const echo = () => c.text(challenge, 200, { "x-content-type-options": "nosniff" });
    if (mode === "unsubscribe") {
      await store.delete(id);
      logger.info("websub_unsubscribed", { id, topic, hub: sub.hub });
      options.onChange?.();
      return echo();
    }
    // A lease of 0 would end as it begins: refused, so the hub is asked again rather than looping.
    if (lease !== undefined && !/^[1-9]\d{0,9}$/.test(lease)) return refuse("invalid_lease_seconds");
    const next: Subscription = { ...sub, state: "active", failures: 0, updatedAtMs: now() };
    delete next.pending;
    // The hub signs with this request's secret from now on.
    delete next.previousSecret;
    delete next.leaseSeconds;
    delete next.expiresAtMs;
    delete next.nextAttemptAtMs;
    if (lease !== undefined) {
      next.leaseSeconds = Number(lease);
      next.expiresAtMs = now() + next.leaseSeconds * 1000;
      next.nextAttemptAtMs = renewAtMs(now(), next.leaseSeconds, options.random);
    }
    await store.put(next);
    if (sub.state !== "active") {
      // A new subscription replaces any other for its source (one made at a callback base since
      // changed): that one refuses content from now on, before the hub can deliver here, and is unsubscribed.
      for (const other of await store.list()) {
        if (other.id === id || other.source !== sub.source || other.unsubscribe) continue;
        await store.put(toUnsubscribe(other, now()));
        logger.info("websub_callback_replaced", { id: other.id, topic: other.topic, callbackUrl: other.callbackUrl, replacement: id });
      }
    }
    const event = sub.state === "active" ? "websub_renewed" : "websub_verified";
    logger.info(event, { id, topic, hub: sub.hub, leaseSeconds: next.leaseSeconds ?? null, renewAtMs: next.nextAttemptAtMs ?? null });
    options.onChange?.();
    return echo();
  });

  // Content distribution (§7): 410 tells the hub to stop, 413 bounds memory, 2xx acknowledges.
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
    // The server's secret, from the moment it runs with it; else the one the subscription was made with.
    const secret = options.secret ?? sub.secret;
    if (secret) {
      const header = c.req.header("x-hub-signature") ?? null;
      const check = await verifySignature(header, body, secret);
      // An unsigned delivery is refused (websub.rocks 302): the hub was given a secret, or is being
      // given one, so content without a signature is not from it, or not yet signed as asked.
      if (check === "missing") {
        logger.warn("websub_signature_rejected", { id, check });
        return c.json({ error: "signature_required", message: "This subscription requires an X-Hub-Signature header." }, 401);
      }
      if (check !== "valid") {
        // Signed with the secret being replaced: the hub, which signs with it until it verifies the
        // request carrying the new one (§5.1). Refused rather than taken (the secret may be replaced
        // because it leaked), and not acknowledged, so that the hub sends it again (§7), signed anew.
        for (const old of [sub.previousSecret, sub.secret]) {
          if (old === undefined || old === secret || (await verifySignature(header, body, old)) !== "valid") continue;
          logger.warn("websub_signature_rejected", { id, check: "outdated" });
          return c.json(
            { error: "signature_outdated", message: "This subscription requires an X-Hub-Signature made with its new secret." },
            401,
          );
        }
        // Any other signature that does not check out is ignored, and acknowledged so that its sender
        // learns nothing from the answer, as the Recommendation allows (§7.1.2).
        logger.warn("websub_signature_rejected", { id, check });
        return accepted(c);
      }
    }
    // Stored before the 2xx: a hub never sends acknowledged content again, so from here on it is
    // ours to keep (docs/websub.md#delivered). A slow consumer does not hold the hub's connection.
    const headers: Record<string, string> = {};
    for (const name of CONTENT_HEADERS) {
      const value = c.req.header(name);
      if (value !== undefined) headers[name] = value;
    }
    const to: DeliveredTo = { id: sub.id, source: sub.source, topic: sub.topic, hub: sub.hub, callbackUrl: sub.callbackUrl };
    const delivery = { id: crypto.randomUUID(), subscription: to, headers, body, receivedAtMs: now() };
    let stored: boolean;
    try {
      stored = await store.inbox.add(delivery, options.limits);
    } catch (error) {
      // Not acknowledged: the hub sends it again (§7), which is the only copy there is.
      logger.error("websub_inbox_write_failed", { id, error });
      return c.json(
        { error: "inbox_unavailable", message: "The delivery could not be stored; send it again later." },
        503,
        { "retry-after": String(RETRY_AFTER_SECONDS) },
      );
    }
    if (!stored) {
      logger.warn("websub_inbox_full", { id, bytes: body.byteLength, ...options.limits });
      return c.json(
        { error: "inbox_full", message: "Too many deliveries wait to be processed; send it again later." },
        503,
        { "retry-after": String(RETRY_AFTER_SECONDS) },
      );
    }
    logger.info("websub_delivery", { id, delivery: delivery.id, bytes: body.byteLength });
    options.onStored?.();
    return accepted(c);
  });

  return routes;
}
