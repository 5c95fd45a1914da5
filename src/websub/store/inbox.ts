/**
 * The inbox: deliveries stored before the hub gets its 2xx and kept until `handleContent` returned
 * for them (docs/websub.md#delivered). The interface every store implements, and the process-local
 * one behind `WEBSUB_STORE=memory`. Times the stores compare (leases, retries) are delays from the
 * store's own clock, so that hosts sharing a Redis need not agree on the time.
 */

/** What a delivery was for, as it stood when the hub's content arrived; never the secret. */
export interface DeliveredTo {
  id: string;
  source: string;
  topic: string;
  hub: string;
  callbackUrl: string;
}

/** A delivery as the callback route stores it. */
export interface InboxEntry {
  /** Stable across attempts and restarts: a key for idempotent processing. */
  id: string;
  subscription: DeliveredTo;
  /** The hub's headers that describe the content (content-type, link, ...), names in lower case. */
  headers: Record<string, string>;
  body: Uint8Array;
  /** Epoch ms when the route stored it. */
  receivedAtMs: number;
}

/** A delivery claimed for processing. */
export interface ClaimedEntry extends InboxEntry {
  /** Attempts so far, this one included: 1 the first time. */
  attempt: number;
}

/** One line of `npm run websub -- inbox`: a delivery without its body. */
export interface InboxSummary {
  id: string;
  subscriptionId: string;
  topic: string;
  /** `pending` waits (or waits for a retry), `processing` is claimed by a live lease, `failed` is a dead letter. */
  state: "pending" | "processing" | "failed";
  attempts: number;
  bytes: number;
  receivedAtMs: number;
  /** Epoch ms (the store's clock) when it may be taken next, for a pending one. */
  nextAttemptAtMs?: number;
  /** The last attempt's error, as a sentence. */
  lastError?: string;
}

/** Bounds on what the inbox holds, dead letters included; past either, a delivery is refused (503). */
export interface InboxLimits {
  maxCount: number;
  maxBytes: number;
}

/** How much the inbox holds. */
export interface InboxStats {
  /** Waiting or being processed. */
  pending: number;
  /** Dead letters. */
  failed: number;
  /** Body bytes of all of them. */
  bytes: number;
}

/**
 * Where deliveries wait. Every call that changes a claimed delivery names the `owner` that claimed
 * it, and does nothing (resolving false) when that owner no longer holds it: its lease ran out and
 * another process took it (docs/websub.md#processing).
 */
export interface Inbox {
  /** Stores `entry` unless that would take the inbox past `limits`: false, stored nothing. */
  add(entry: InboxEntry, limits: InboxLimits): Promise<boolean>;
  /**
   * Claims for `leaseMs` the oldest delivery that is due and not claimed; with `ordered`, only the
   * oldest pending one of its subscription qualifies, so a subscription's deliveries are processed
   * one at a time, in arrival order. Counts the attempt.
   */
  claim(owner: string, leaseMs: number, ordered: boolean): Promise<ClaimedEntry | undefined>;
  /** Extends `owner`'s lease on `id` to `leaseMs` from now. */
  extend(id: string, owner: string, leaseMs: number): Promise<boolean>;
  /** Removes a delivery `owner` processed. */
  done(id: string, owner: string): Promise<boolean>;
  /** Releases `owner`'s claim; the delivery is due again in `delayMs`, with `error` kept as its last. */
  retry(id: string, owner: string, delayMs: number, error: string): Promise<boolean>;
  /** Keeps a delivery as failed (a dead letter): no more attempts until `requeue`. */
  fail(id: string, owner: string, error: string): Promise<boolean>;
  /** Milliseconds until `claim(..., ordered)` could take something (0: now); undefined when nothing waits. */
  nextDueInMs(ordered: boolean): Promise<number | undefined>;
  stats(): Promise<InboxStats>;
  /** Every delivery, oldest first, without bodies. */
  list(): Promise<InboxSummary[]>;
  /** A dead letter made pending again, due now, its attempts back to 0; false if there is no such dead letter. */
  requeue(id: string): Promise<boolean>;
  /** Removes a dead letter; false if there is no such dead letter. */
  drop(id: string): Promise<boolean>;
}

interface MemoryRow {
  entry: InboxEntry;
  seq: number;
  state: "pending" | "failed";
  attempts: number;
  dueAtMs: number;
  owner?: string;
  untilMs: number;
  lastError?: string;
}

/** The inbox of `WEBSUB_STORE=memory`: in this process only, gone when it ends. Bodies are copied in and out. */
export function memoryInbox(now: () => number = Date.now): Inbox {
  const rows = new Map<string, MemoryRow>();
  let seq = 0;
  let bytes = 0;
  const pending = () => [...rows.values()].filter((r) => r.state === "pending").sort((a, b) => a.seq - b.seq);
  /** What `claim` may take: every pending delivery, or only the oldest of each subscription. */
  const candidates = (ordered: boolean) => {
    const seen = new Set<string>();
    return pending().filter((row) => {
      const first = !seen.has(row.entry.subscription.id);
      seen.add(row.entry.subscription.id);
      return !ordered || first;
    });
  };
  const held = (row: MemoryRow | undefined, owner: string): row is MemoryRow =>
    row !== undefined && row.state === "pending" && row.owner === owner;
  const copy = (entry: InboxEntry): InboxEntry => ({
    ...entry,
    subscription: { ...entry.subscription },
    headers: { ...entry.headers },
    body: entry.body.slice(),
  });
  return {
    add(entry, limits) {
      if (rows.size + 1 > limits.maxCount || bytes + entry.body.byteLength > limits.maxBytes) return Promise.resolve(false);
      rows.set(entry.id, { entry: copy(entry), seq: ++seq, state: "pending", attempts: 0, dueAtMs: now(), untilMs: 0 });
      bytes += entry.body.byteLength;
      return Promise.resolve(true);
    },
    claim(owner, leaseMs, ordered) {
      const at = now();
      for (const row of candidates(ordered)) {
        if (row.dueAtMs > at || row.untilMs > at) continue;
        row.owner = owner;
        row.untilMs = at + leaseMs;
        row.attempts++;
        return Promise.resolve({ ...copy(row.entry), attempt: row.attempts });
      }
      return Promise.resolve(undefined);
    },
    extend(id, owner, leaseMs) {
      const row = rows.get(id);
      if (!held(row, owner) || row.untilMs <= now()) return Promise.resolve(false);
      row.untilMs = now() + leaseMs;
      return Promise.resolve(true);
    },
    done(id, owner) {
      const row = rows.get(id);
      if (!held(row, owner)) return Promise.resolve(false);
      rows.delete(id);
      bytes -= row.entry.body.byteLength;
      return Promise.resolve(true);
    },
    retry(id, owner, delayMs, error) {
      const row = rows.get(id);
      if (!held(row, owner)) return Promise.resolve(false);
      Object.assign(row, { owner: undefined, untilMs: 0, dueAtMs: now() + delayMs, lastError: error });
      return Promise.resolve(true);
    },
    fail(id, owner, error) {
      const row = rows.get(id);
      if (!held(row, owner)) return Promise.resolve(false);
      Object.assign(row, { owner: undefined, untilMs: 0, state: "failed", lastError: error });
      return Promise.resolve(true);
    },
    nextDueInMs(ordered) {
      const times = candidates(ordered).map((r) => Math.max(r.dueAtMs, r.untilMs));
      return Promise.resolve(times.length === 0 ? undefined : Math.max(0, Math.min(...times) - now()));
    },
    stats() {
      const failed = [...rows.values()].filter((r) => r.state === "failed").length;
      return Promise.resolve({ pending: rows.size - failed, failed, bytes });
    },
    list() {
      const at = now();
      return Promise.resolve(
        [...rows.values()].sort((a, b) => a.seq - b.seq).map((r) => ({
          id: r.entry.id,
          subscriptionId: r.entry.subscription.id,
          topic: r.entry.subscription.topic,
          state: r.state === "failed" ? "failed" : r.untilMs > at ? "processing" : "pending",
          attempts: r.attempts,
          bytes: r.entry.body.byteLength,
          receivedAtMs: r.entry.receivedAtMs,
          ...(r.state === "pending" ? { nextAttemptAtMs: Math.max(r.dueAtMs, r.untilMs) } : {}),
          ...(r.lastError === undefined ? {} : { lastError: r.lastError }),
        })),
      );
    },
    requeue(id) {
      const row = rows.get(id);
      if (row?.state !== "failed") return Promise.resolve(false);
      Object.assign(row, { state: "pending", attempts: 0, dueAtMs: now() });
      return Promise.resolve(true);
    },
    drop(id) {
      const row = rows.get(id);
      if (row?.state !== "failed") return Promise.resolve(false);
      rows.delete(id);
      bytes -= row.entry.body.byteLength;
      return Promise.resolve(true);
    },
  };
}
