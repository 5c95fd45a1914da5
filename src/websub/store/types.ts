/**
 * Where the subscriber keeps its subscriptions: the interface every store implements (memory,
 * SQLite, Redis), so that any worker, and the server after a restart, sees the same ones.
 */
import { type Inbox, memoryInbox } from "./inbox.ts";

/** Where a subscription stands with its hub. */
export type SubscriptionState =
  /** Wanted, not yet verified by the hub (requested, or about to be). */
  | "pending"
  /** Verified: deliveries are accepted until the lease ends. */
  | "active"
  /** An unsubscription was requested; deliveries are refused. */
  | "unsubscribing"
  /** The hub denied it (`hub.mode=denied`). */
  | "denied"
  /** The hub refused the request (4xx), or retries ran out. */
  | "failed"
  /** The lease ended before a renewal was verified. */
  | "expired";

/** One subscription; `id` is the path segment of its callback, /websub/:id. */
export interface Subscription {
  id: string;
  /** The topic URL as configured (WEBSUB_TOPIC) or given to `npm run websub -- subscribe`. */
  source: string;
  /** Who wants it: the configuration (unsubscribed once dropped from it) or an operator (kept until unsubscribed). */
  origin: "config" | "manual";
  /** The topic URL the hub knows (the `rel=self` found by discovery); `source` until discovered. */
  topic: string;
  /** The hub's URL; empty until discovered. */
  hub: string;
  /** The full callback URL sent to the hub; empty until first requested. */
  callbackUrl: string;
  /** Set when it is to be unsubscribed: the subscriber asks the hub, then deletes it once verified. */
  unsubscribe?: boolean;
  /** Shared secret for `X-Hub-Signature`; never logged. */
  secret?: string;
  /**
   * The secret the hub still signs with while a subscribe request made with another one (`secret`,
   * or none) waits for its verification: a request changes the hub's subscription only once verified
   * (WebSub 5.1). Content signed with it meanwhile is refused (401) rather than taken. Never logged.
   */
  previousSecret?: string;
  state: SubscriptionState;
  /** A request sent to the hub that a verification of intent may still confirm. */
  pending?: "subscribe" | "unsubscribe";
  /** What the hub granted, in seconds. */
  leaseSeconds?: number;
  /** Epoch ms when the lease ends; absent means no expiry known. */
  expiresAtMs?: number;
  /** Epoch ms when the lease manager next acts on it (renewal, retry); absent means nothing due. */
  nextAttemptAtMs?: number;
  /** Consecutive failed requests to the hub, for backoff. */
  failures?: number;
  /** Epoch ms of the last change. */
  updatedAtMs: number;
}

/** Where subscriptions live; async so a database can stand behind it. */
export interface SubscriptionStore {
  /** What `WEBSUB_STORE` named, without credentials: `memory`, the file's path, or `redis://host:port/db`. */
  readonly description: string;
  get(id: string): Promise<Subscription | undefined>;
  put(subscription: Subscription): Promise<void>;
  delete(id: string): Promise<void>;
  /** Every subscription, in no particular order. */
  list(): Promise<Subscription[]>;
  /**
   * Takes or extends the named lock for `ttlMs` on behalf of `owner`: true when `owner` holds it
   * now (it was free, had expired, or was already `owner`'s). Only one process renews leases.
   */
  claim(name: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Gives the named lock up if `owner` holds it, so that another process can take it at once. */
  release(name: string, owner: string): Promise<void>;
  /** The deliveries waiting for `handleContent`, in the same database. */
  readonly inbox: Inbox;
  /** Releases what the store holds (file handles, sockets). */
  close(): Promise<void>;
}

/** A process-local store; copies on the way in and out so callers cannot mutate it behind its back. */
export function memoryStore(now: () => number = Date.now): SubscriptionStore {
  const map = new Map<string, Subscription>();
  const locks = new Map<string, { owner: string; untilMs: number }>();
  return {
    description: "memory",
    get: (id) => Promise.resolve(map.has(id) ? { ...map.get(id)! } : undefined),
    put: (s) => Promise.resolve(void map.set(s.id, { ...s })),
    delete: (id) => Promise.resolve(void map.delete(id)),
    list: () => Promise.resolve([...map.values()].map((s) => ({ ...s }))),
    claim(name, owner, ttlMs) {
      const held = locks.get(name);
      if (held !== undefined && held.owner !== owner && held.untilMs > now()) return Promise.resolve(false);
      locks.set(name, { owner, untilMs: now() + ttlMs });
      return Promise.resolve(true);
    },
    release(name, owner) {
      if (locks.get(name)?.owner === owner) locks.delete(name);
      return Promise.resolve();
    },
    inbox: memoryInbox(now),
    close: () => Promise.resolve(),
  };
}
