/**
 * The subscriber's side of the hub protocol: finds each topic's hub, asks for the subscription,
 * renews it well before its lease ends, retries what failed with backoff, and unsubscribes what is
 * no longer wanted. State lives in the store, so a restart picks up where it left off, and one
 * process among several (the holder of a lock in the store) does the work.
 */
import type { Logger } from "../policy/log.ts";
import { discover } from "./discovery.ts";
import { backoffMs, postToHub, retryable } from "./hub_client.ts";
import type { Subscription, SubscriptionStore } from "./store/types.ts";

/** What the subscriber asks for. */
export interface SubscriberOptions {
  store: SubscriptionStore;
  logger: Logger;
  /** The topic URLs the configuration wants (WEBSUB_TOPIC); others it subscribed to are unsubscribed. */
  topics: readonly string[];
  /** A hub to use instead of discovering one (WEBSUB_HUB). */
  hub?: string;
  /** Shared secret sent with each subscription request (WEBSUB_SECRET). */
  secret?: string;
  /** The lease to ask for, in seconds (WEBSUB_LEASE); the hub decides. */
  leaseSeconds?: number;
  /** Base URL callbacks are built on: WEBSUB_CALLBACK_URL, or the server's own URL. */
  callbackBase: string;
  /** Every request to a topic or a hub is given up after this long. @default 10 s */
  requestTimeoutMs?: number;
  /** A hub that accepted a request but has not verified it after this long is asked again. @default 5 min */
  verifyTimeoutMs?: number;
  /** How often the store is looked at for work when nothing is due sooner (`npm run websub` edits wait for it). @default 5 s */
  pollMs?: number;
  /** First retry delay, doubling up to `retryMaxMs`. @default 5 s */
  retryBaseMs?: number;
  /** @default 1 h */
  retryMaxMs?: number;
  now?: () => number;
  random?: () => number;
  fetch?: typeof fetch;
}

/** A running subscriber. */
export interface Subscriber {
  /** Looks at the store now rather than at the next poll (after a verification, in tests). */
  wake(): void;
  /** The subscriptions as the last pass saw them, when this process does the work; undefined otherwise. */
  snapshot(): readonly Subscription[] | undefined;
  /** Stops the loop; resolves once the pass in progress, if any, has ended. */
  stop(): Promise<void>;
}

/** The lock in the store that one process holds to do the subscriber's work. */
export const LEASE_LOCK = "websub-subscriber";

/**
 * When to renew a lease granted at `verifiedAtMs` for `leaseSeconds`: between 75% and 85% of the
 * way through it, so that a few retries fit before it ends, and spread so that many subscriptions
 * verified at once do not all renew at once.
 */
export function renewAtMs(verifiedAtMs: number, leaseSeconds: number, random: () => number = Math.random): number {
  return verifiedAtMs + Math.round(leaseSeconds * 1_000 * (0.75 + 0.1 * random()));
}

/** Derives a callback URL: `base` (no query, no fragment) plus `/websub/<id>`. */
export function callbackUrlOf(base: string, id: string): string {
  return `${base.replace(/\/+$/, "")}/websub/${id}`;
}

/**
 * `sub` marked to be unsubscribed: content is refused (410) from now on, a request still unverified
 * is no longer confirmed, and the subscriber asks the hub at its next look.
 */
export function toUnsubscribe(sub: Subscription, nowMs: number): Subscription {
  const next: Subscription = {
    ...sub,
    unsubscribe: true,
    state: sub.state === "active" ? "unsubscribing" : sub.state,
    nextAttemptAtMs: nowMs,
    failures: 0,
    updatedAtMs: nowMs,
  };
  delete next.pending;
  return next;
}

/** Starts the subscriber loop; it runs until stopped. */
export function startSubscriber(options: SubscriberOptions): Subscriber {
  const { store, logger } = options;
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const timeoutMs = options.requestTimeoutMs ?? 10_000;
  const verifyTimeoutMs = options.verifyTimeoutMs ?? 300_000;
  const pollMs = options.pollMs ?? 5_000;
  const retry = { baseMs: options.retryBaseMs ?? 5_000, maxMs: options.retryMaxMs ?? 3_600_000, random };
  const owner = crypto.randomUUID();
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();
  let again = false;
  let seen: Subscription[] | undefined;
  let loaded = false;

  const schedule = (delayMs: number) => {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(() => void pass(), Math.max(0, Math.min(delayMs, pollMs)));
  };

  const pass = (): Promise<void> => {
    if (stopped) return running;
    // One pass at a time; a wake during a pass runs another right after it.
    if (running !== settled) {
      again = true;
      return running;
    }
    running = work().catch((error: unknown) => {
      logger.error("websub_subscriber_failed", { error });
      return pollMs;
    }).then((nextMs) => {
      running = settled;
      if (again) {
        again = false;
        void pass();
      } else schedule(nextMs);
    });
    return running;
  };
  const settled = running;

  // Held long enough for the longest step (discovery's HEAD and GET, then the POST, each up to
  // the request timeout) and for three polls, and taken again before each step: a holder that is
  // still at work never loses it, and one that died hands over within this.
  const lockMs = Math.max(pollMs * 3, timeoutMs * 4);
  const hold = () => store.claim(LEASE_LOCK, owner, lockMs);

  /** One look at the store; resolves with how long until the next thing is due. */
  async function work(): Promise<number> {
    if (!(await hold())) {
      seen = undefined;
      return pollMs;
    }
    await reconcile(await store.list());
    seen = await store.list();
    if (!loaded) {
      loaded = true;
      const states: Record<string, number> = {};
      for (const sub of seen) states[sub.state] = (states[sub.state] ?? 0) + 1;
      logger.info("websub_subscriptions_loaded", { store: store.description, subscriptions: seen.length, states });
    }
    let next = pollMs;
    for (const listed of seen) {
      if (stopped) break;
      // As it is now: a verification may have changed it since the list was read.
      const sub = await store.get(listed.id);
      if (sub === undefined) continue;
      const due = sub.nextAttemptAtMs;
      const expired = sub.state === "active" && sub.expiresAtMs !== undefined && sub.expiresAtMs <= now();
      // WEBSUB_SECRET added, changed or removed since the hub was asked: asked again now, not at the
      // renewal, so that the hub signs with it as soon as it can.
      const rekeyed = !sub.unsubscribe && (sub.state === "active" || sub.pending === "subscribe") && sub.secret !== options.secret;
      if (!expired && !rekeyed && (due === undefined || due > now())) {
        if (due !== undefined) next = Math.min(next, due - now());
        continue;
      }
      if (!(await hold())) break;
      next = 0;
      if (expired) {
        await expire(sub);
        continue;
      }
      if (rekeyed) logger.info("websub_secret_changed", { id: sub.id, topic: sub.topic, signed: options.secret !== undefined });
      await act(sub, rekeyed);
      next = 0;
    }
    return next;
  }

  /**
   * Creates what the configuration wants and is missing; marks what it no longer wants; gives a
   * subscription whose callback base changed a new one at the current base, and lets it go once
   * that one is verified.
   */
  async function reconcile(all: Subscription[]): Promise<void> {
    const put = async (sub: Subscription) => {
      await store.put(sub);
      const at = all.findIndex((s) => s.id === sub.id);
      if (at < 0) all.push(sub);
      else all[at] = sub;
    };
    const create = (source: string, origin: Subscription["origin"]): Subscription => ({
      id: crypto.randomUUID(),
      source,
      origin,
      topic: source,
      hub: "",
      callbackUrl: "",
      state: "pending",
      nextAttemptAtMs: now(),
      updatedAtMs: now(),
    });
    const wanted = new Set(options.topics);
    for (const source of wanted) {
      if (!all.some((s) => s.source === source && !s.unsubscribe)) await put(create(source, "config"));
    }
    for (const sub of [...all]) {
      if (sub.origin !== "config" || wanted.has(sub.source) || sub.unsubscribe) continue;
      await put(toUnsubscribe(sub, now()));
      logger.info("websub_topic_dropped", { id: sub.id, topic: sub.topic, source: sub.source });
    }
    // WEBSUB_CALLBACK_URL (or the server's URL) changed. The hub keeps one subscription per topic
    // and callback (WebSub 5.1), so the new callback is a new subscription, with an id of its own;
    // the old one takes content until the hub verified the new one (the callback routes then mark it
    // to be unsubscribed, before the hub can deliver to the new one), and is renewed meanwhile.
    const current = (s: Subscription) => s.callbackUrl === "" || s.callbackUrl === callbackUrlOf(options.callbackBase, s.id);
    for (const sub of [...all]) {
      if (sub.unsubscribe || current(sub)) continue;
      const others = all.filter((s) => s.id !== sub.id && s.source === sub.source && !s.unsubscribe && current(s));
      if (sub.state === "active" && others.length === 0) {
        const replacement = create(sub.source, sub.origin);
        await put(replacement);
        logger.info("websub_callback_changed", {
          id: sub.id,
          topic: sub.topic,
          from: sub.callbackUrl,
          to: callbackUrlOf(options.callbackBase, replacement.id),
          replacement: replacement.id,
        });
        continue;
      }
      // Replaced (a process stopped between the verification and the mark), or never verified and no longer needed.
      const replacement = sub.state === "active" ? others.find((s) => s.state === "active") : others[0];
      if (replacement === undefined) continue;
      await put(toUnsubscribe(sub, now()));
      logger.info("websub_callback_replaced", { id: sub.id, topic: sub.topic, callbackUrl: sub.callbackUrl, replacement: replacement.id });
    }
  }

  /** Marks an active subscription whose lease ended before a renewal was verified: an error, never silent. */
  async function expire(sub: Subscription): Promise<void> {
    logger.error("websub_lease_expired", { id: sub.id, topic: sub.topic, hub: sub.hub, expiredAtMs: sub.expiresAtMs });
    await store.put({ ...sub, state: "expired", nextAttemptAtMs: now(), updatedAtMs: now() });
  }

  /**
   * Does what is due for `sub`: a (re)subscription, an unsubscription, or a retry of either.
   * `rekeyed`: asked again for a changed secret, not because a verification is overdue.
   */
  async function act(sub: Subscription, rekeyed = false): Promise<void> {
    const mode = sub.unsubscribe ? "unsubscribe" : "subscribe";
    const ended = sub.expiresAtMs !== undefined && sub.expiresAtMs <= now();
    if (mode === "unsubscribe" && (sub.hub === "" || sub.state === "denied" || sub.state === "failed" || sub.callbackUrl === "" || ended)) {
      // The hub never had it, or its lease has ended (say at an old callback the hub could not verify
      // the unsubscription at): nothing to ask.
      await store.delete(sub.id);
      logger.info("websub_unsubscribed", { id: sub.id, topic: sub.topic, hub: sub.hub || null });
      return;
    }
    let next: Subscription = { ...sub };
    if (sub.pending !== undefined && !rekeyed) {
      // Asked before, and the hub has not verified within verifyTimeoutMs: a failure, asked again.
      next.failures = (sub.failures ?? 0) + 1;
      logger.warn("websub_verification_overdue", {
        id: sub.id,
        topic: sub.topic,
        hub: sub.hub,
        mode: sub.pending,
        failures: next.failures,
      });
    }
    if (mode === "subscribe" && (sub.hub === "" || sub.state !== "active")) {
      // (Re)discovered before each new subscription; a renewal keeps the hub that verified it.
      try {
        const found = options.hub === undefined ? await discover(sub.source, { timeoutMs, fetch: options.fetch }) : undefined;
        next = { ...next, hub: options.hub ?? found!.hubs[0]!, topic: found?.topic ?? sub.source };
      } catch (error) {
        return await failed(sub, "discovery", error);
      }
    }
    // A renewal and an unsubscription name the callback the hub has (a changed base gets a
    // subscription of its own, see reconcile); a new subscription, the current one.
    if (next.callbackUrl === "" || (mode === "subscribe" && sub.state !== "active")) {
      next.callbackUrl = callbackUrlOf(options.callbackBase, sub.id);
    }
    const form = new URLSearchParams({ "hub.mode": mode, "hub.topic": next.topic, "hub.callback": next.callbackUrl });
    if (mode === "subscribe") {
      // Once it verifies this request, the hub signs with whatever secret it sends, none included;
      // until then with that of the subscription it verified before (WebSub 5.1).
      const signing = sub.state !== "active" ? undefined : sub.pending === "subscribe" ? sub.previousSecret ?? sub.secret : sub.secret;
      delete next.secret;
      delete next.previousSecret;
      if (options.secret !== undefined) {
        next.secret = options.secret;
        form.set("hub.secret", options.secret);
      }
      if (signing !== undefined && signing !== next.secret) next.previousSecret = signing;
      if (options.leaseSeconds !== undefined) form.set("hub.lease_seconds", String(options.leaseSeconds));
    }
    // Recorded before the request: the hub may verify before it answers.
    next = {
      ...next,
      state: mode === "unsubscribe" ? "unsubscribing" : next.state === "active" ? "active" : "pending",
      pending: mode,
      nextAttemptAtMs: now() + verifyTimeoutMs,
      updatedAtMs: now(),
    };
    await store.put(next);
    let status: number;
    let hub: string;
    try {
      ({ status, hub } = await postToHub(next.hub, form, { timeoutMs, fetch: options.fetch }));
    } catch (error) {
      return await failed(next, "request", error);
    }
    const renewal = mode === "subscribe" && sub.state === "active";
    if (status >= 200 && status < 300) {
      // A hub that moved (a redirect) is asked at its new place from now on.
      const current = await store.get(next.id);
      if (current !== undefined && hub !== next.hub) await store.put({ ...current, hub });
      logger.info(`websub_${mode}_requested`, { id: next.id, topic: next.topic, hub, callbackUrl: next.callbackUrl, status, renewal });
      return;
    }
    if (retryable(status)) return await failed(next, "request", new Error(`The hub answered ${status}`), status);
    // A final refusal: the hub will not have it, whatever we retry.
    const current = await store.get(next.id);
    logger.error(`websub_${mode}_refused`, { id: next.id, topic: next.topic, hub, status });
    if (mode === "unsubscribe") {
      await store.delete(next.id);
      return;
    }
    if (current === undefined || changed(current, next)) return;
    const refused: Subscription = { ...current, pending: undefined, failures: 0, updatedAtMs: now() };
    delete refused.pending;
    // A refused renewal leaves the lease as it was: it runs to its end, then expires (an error).
    if (renewal) refused.nextAttemptAtMs = current.expiresAtMs ?? now() + retry.maxMs;
    else {
      refused.state = "failed";
      delete refused.nextAttemptAtMs;
    }
    await store.put(refused);
  }

  /** A request that did not get through: retried with capped exponential backoff, and logged. */
  async function failed(sub: Subscription, step: "discovery" | "request", error: unknown, status?: number): Promise<void> {
    const failures = (sub.failures ?? 0) + 1;
    const delayMs = backoffMs(failures, retry);
    const current = await store.get(sub.id);
    // Verified (or removed) while the request was out: nothing to retry.
    if (current === undefined || changed(current, sub)) return;
    const next: Subscription = { ...current, failures, nextAttemptAtMs: now() + delayMs, updatedAtMs: now() };
    delete next.pending;
    await store.put(next);
    logger.warn("websub_request_failed", {
      id: sub.id,
      topic: sub.topic,
      hub: sub.hub || null,
      mode: sub.unsubscribe ? "unsubscribe" : "subscribe",
      step,
      status: status ?? null,
      failures,
      retryInMs: delayMs,
      error,
    });
  }

  schedule(0);
  return {
    wake: () => void pass(),
    snapshot: () => seen,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      // Another process (a restart, a sibling worker) takes over at once rather than after the lock's ttl.
      await store.release(LEASE_LOCK, owner).catch((error: unknown) => logger.warn("websub_release_failed", { error }));
    },
  };
}

/** Whether someone else (a verification) wrote `current` since `seen` was written. */
function changed(current: Subscription, seen: Subscription): boolean {
  return current.updatedAtMs !== seen.updatedAtMs || current.state !== seen.state || current.pending !== seen.pending;
}
