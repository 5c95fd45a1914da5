/**
 * Subscriptions in one SQLite file through `node:sqlite` (Node 22.13+, Bun, Deno), shared by the
 * worker processes of one host: WAL journal so readers never wait for a writer, a busy timeout so
 * two writers queue instead of failing with SQLITE_BUSY.
 */
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import process from "node:process";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { setImmediate } from "node:timers";
import type { ClaimedEntry, DeliveredTo, Inbox, InboxEntry, InboxLimits, InboxSummary } from "./inbox.ts";
import type { Subscription, SubscriptionStore } from "./types.ts";

/** Options for {@link sqliteStore}. */
export interface SqliteStoreOptions {
  /**
   * How long a write waits for another connection's lock before it fails. node:sqlite is
   * synchronous, so the wait blocks this process's event loop; transactions here are one
   * statement each, so a lock is held for microseconds unless another process misbehaves.
   * @default 5_000
   */
  busyTimeoutMs?: number;
  /** The clock `claim()` compares lock expiry with, in epoch ms. @default Date.now */
  now?: () => number;
}

/** The schema this code writes, kept in `PRAGMA user_version`; a later one adds a migration step. */
export const SQLITE_SCHEMA_VERSION = 2;

const SCHEMA_V1 = `
  CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    topic TEXT NOT NULL,
    state TEXT NOT NULL,
    next_attempt_at_ms INTEGER,
    -- The whole subscription as JSON; the columns above are copies for queries and indexes.
    data TEXT NOT NULL
  ) STRICT;
  CREATE INDEX subscriptions_topic ON subscriptions (topic);
  CREATE INDEX subscriptions_state ON subscriptions (state);
  CREATE INDEX subscriptions_next_attempt ON subscriptions (next_attempt_at_ms) WHERE next_attempt_at_ms IS NOT NULL;
  CREATE TABLE locks (
    name TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    until_ms INTEGER NOT NULL
  ) STRICT;
`;

// The inbox (docs/websub.md#delivered): one row per delivery, `seq` its arrival order. The totals
// row is kept by triggers, so that the limit check on each delivery reads one row, not the table.
const SCHEMA_V2 = `
  CREATE TABLE inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    subscription_id TEXT NOT NULL,
    -- 'pending' (waiting, claimed, or waiting for a retry) or 'failed' (a dead letter).
    state TEXT NOT NULL,
    -- 1 for the oldest pending delivery of its subscription, what an ordered claim takes; kept by
    -- the triggers below, so that no query looks through a subscription's backlog for it.
    is_head INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at_ms INTEGER NOT NULL,
    owner TEXT,
    -- The claim's lease: another process may take it from then on.
    until_ms INTEGER NOT NULL DEFAULT 0,
    -- When it may be claimed, the later of the two above: set by every statement that sets either.
    ready_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    -- JSON: what it was delivered to, and the hub's headers.
    meta TEXT NOT NULL,
    body BLOB NOT NULL,
    last_error TEXT
  ) STRICT;
  CREATE INDEX inbox_subscription ON inbox (subscription_id, state, seq);
  CREATE INDEX inbox_ready ON inbox (state, ready_at_ms);
  CREATE INDEX inbox_heads ON inbox (ready_at_ms) WHERE is_head = 1;
  CREATE TABLE inbox_totals (one INTEGER PRIMARY KEY CHECK (one = 1), count INTEGER NOT NULL, bytes INTEGER NOT NULL) STRICT;
  INSERT INTO inbox_totals VALUES (1, 0, 0);
  CREATE TRIGGER inbox_added AFTER INSERT ON inbox BEGIN
    UPDATE inbox_totals SET count = count + 1, bytes = bytes + NEW.bytes;
    UPDATE inbox SET is_head = 1 WHERE seq = NEW.seq AND NOT EXISTS
      (SELECT 1 FROM inbox WHERE subscription_id = NEW.subscription_id AND state = 'pending' AND seq < NEW.seq);
  END;
  CREATE TRIGGER inbox_removed AFTER DELETE ON inbox BEGIN
    UPDATE inbox_totals SET count = count - 1, bytes = bytes - OLD.bytes;
    UPDATE inbox SET is_head = 1 WHERE OLD.is_head = 1 AND seq =
      (SELECT min(seq) FROM inbox WHERE subscription_id = OLD.subscription_id AND state = 'pending');
  END;
  CREATE TRIGGER inbox_failed AFTER UPDATE OF state ON inbox WHEN NEW.state = 'failed' AND OLD.state = 'pending' BEGIN
    UPDATE inbox SET is_head = 0 WHERE seq = NEW.seq;
    UPDATE inbox SET is_head = 1 WHERE OLD.is_head = 1 AND seq =
      (SELECT min(seq) FROM inbox WHERE subscription_id = NEW.subscription_id AND state = 'pending');
  END;
  -- A dead letter retried goes back to its place, which may be before the subscription's head.
  CREATE TRIGGER inbox_requeued AFTER UPDATE OF state ON inbox WHEN NEW.state = 'pending' AND OLD.state = 'failed' BEGIN
    UPDATE inbox SET is_head = (seq = (SELECT min(seq) FROM inbox WHERE subscription_id = NEW.subscription_id AND state = 'pending'))
      WHERE subscription_id = NEW.subscription_id AND state = 'pending';
  END;
`;

let sqlite: Promise<typeof import("node:sqlite")> | undefined;

/**
 * Loads node:sqlite once. Node 22 emits "ExperimentalWarning: SQLite is an experimental feature"
 * when the module loads (Node 24 and later, Bun and Deno do not): that one warning is dropped
 * while the import runs, through process.emitWarning, which Node's emitExperimentalWarning calls;
 * every other warning still reaches stderr. A static import would emit it before any code here runs.
 */
function loadSqlite(): Promise<typeof import("node:sqlite")> {
  sqlite ??= (async () => {
    const emitWarning = process.emitWarning;
    process.emitWarning = function (this: unknown, warning: string | Error, ...rest: unknown[]) {
      const type = typeof rest[0] === "string" ? rest[0] : (rest[0] as { type?: string } | undefined)?.type;
      const message = typeof warning === "string" ? warning : warning.message;
      const experimental = type === "ExperimentalWarning" || (warning instanceof Error && warning.name === "ExperimentalWarning");
      if (experimental && message.startsWith("SQLite is an experimental feature")) return;
      return (emitWarning as (...args: unknown[]) => void).call(this, warning, ...rest);
    } as typeof process.emitWarning;
    try {
      return await import("node:sqlite");
    } catch (error) {
      throw new Error(`The SQLite store needs node:sqlite (Node 22.13 or later, Bun, Deno): ${(error as Error).message}`, { cause: error });
    } finally {
      process.emitWarning = emitWarning;
    }
  })();
  return sqlite;
}

// Creates the file before SQLite does so it is 0600 from the first byte: it holds hub secrets.
// SQLite gives the -wal and -shm files the database file's mode (unix VFS, findCreateFileMode).
function createPrivateFile(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    writeFileSync(path, "", { flag: "wx", mode: 0o600 });
  } catch (error) {
    // An existing file keeps the mode its owner gave it.
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return;
    throw error;
  }
  // The umask may only clear bits, but an odd one could leave the file unreadable to its owner.
  chmodSync(path, 0o600);
}

function migrate(db: DatabaseSync, path: string): void {
  // IMMEDIATE takes the write lock at once, so two workers opening a new file do not both create the schema.
  db.exec("BEGIN IMMEDIATE");
  try {
    const { user_version: version } = db.prepare("PRAGMA user_version").get() as { user_version: number };
    if (version > SQLITE_SCHEMA_VERSION) {
      throw new Error(
        `SQLite database "${path}" has schema version ${version}: this code knows up to ${SQLITE_SCHEMA_VERSION}, upgrade it`,
      );
    }
    if (version < 1) db.exec(SCHEMA_V1);
    if (version < 2) db.exec(SCHEMA_V2);
    // Later versions: `if (version < 3) db.exec(SCHEMA_V3_CHANGES);` and so on, in order.
    db.exec(`PRAGMA user_version = ${SQLITE_SCHEMA_VERSION}`);
    db.exec("COMMIT");
  } catch (error) {
    db.exec("ROLLBACK");
    throw error;
  }
}

// node:sqlite is synchronous: its errors become rejections, as callers of an async store expect.
function attempt<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}

function openError(path: string, error: unknown): Error {
  const message = (error as Error).message;
  return message.includes(path) ? error as Error : new Error(`SQLite database "${path}" cannot be used: ${message}`, { cause: error });
}

function checkTtl(ttlMs: number): void {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`Lock ttl "${ttlMs}" is not a positive number of milliseconds`);
}

/**
 * Opens (creating it and its folder when missing) the SQLite database at `path` as a subscription
 * store; several processes of one host may open the same file.
 */
export async function sqliteStore(path: string, options: SqliteStoreOptions = {}): Promise<SubscriptionStore> {
  const { busyTimeoutMs = 5_000, now = Date.now } = options;
  if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new RangeError(`busyTimeoutMs "${busyTimeoutMs}" is not a whole number of milliseconds`);
  }
  const { DatabaseSync } = await loadSqlite();
  if (path !== ":memory:") createPrivateFile(path);
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (error) {
    throw openError(path, error);
  }
  let statements: Record<"get" | "put" | "delete" | "list" | "claim" | "release", StatementSync>;
  let inbox: Record<InboxStatement, StatementSync>;
  let processing: DatabaseSync | undefined;
  try {
    // First, so that switching to WAL and the migration wait for a worker that is doing the same.
    db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    const { journal_mode: mode } = db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode: string };
    // WAL needs shared memory between processes, which network file systems do not offer.
    if (path !== ":memory:" && mode !== "wal") {
      throw new Error(`SQLite database "${path}" cannot use WAL journal mode (it stays "${mode}"): put it on a local disk`);
    }
    // Each commit is synced to the WAL before it returns, so a delivery acknowledged after its
    // insert survives a power cut too (the runtimes' builds default to it; said here so it holds).
    db.exec("PRAGMA synchronous = FULL");
    migrate(db, path);
    statements = {
      get: db.prepare("SELECT data FROM subscriptions WHERE id = ?"),
      put: db.prepare(
        `INSERT INTO subscriptions (id, topic, state, next_attempt_at_ms, data) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET topic = excluded.topic, state = excluded.state,
           next_attempt_at_ms = excluded.next_attempt_at_ms, data = excluded.data`,
      ),
      delete: db.prepare("DELETE FROM subscriptions WHERE id = ?"),
      list: db.prepare("SELECT data FROM subscriptions"),
      // One statement, so taking a free or expired lock and extending one's own cannot race:
      // a row comes back only when `owner` holds the lock afterwards.
      claim: db.prepare(
        `INSERT INTO locks (name, owner, until_ms) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms
         WHERE locks.owner = excluded.owner OR locks.until_ms <= ?
         RETURNING owner`,
      ),
      release: db.prepare("DELETE FROM locks WHERE name = ? AND owner = ?"),
    };
    // What processing writes (claims, removals, retries) goes through a connection of its own that
    // does not sync each commit: losing one of those to a power cut only runs a delivery again, and
    // the next delivery's synced commit (or a checkpoint) syncs the WAL they were appended to. One
    // sync per delivery instead of three; the number is in bench/README.md.
    processing = path === ":memory:" ? db : new DatabaseSync(path);
    processing.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    if (processing !== db) processing.exec("PRAGMA synchronous = NORMAL");
    inbox = { ...prepareInbox(processing), add: prepareInbox(db).add };
  } catch (error) {
    if (processing !== undefined && processing !== db) processing.close();
    db.close();
    throw openError(path, error);
  }

  let closed = false;
  const open = () => {
    if (closed) throw new Error(`SQLite store "${path}" is closed`);
    return statements;
  };
  const parse = (row: Record<string, unknown> | undefined): Subscription | undefined => {
    if (row === undefined) return undefined;
    return JSON.parse(row.data as string) as Subscription;
  };

  const inboxOpen = () => (open(), inbox);
  const ms = (delayMs: number) => Math.ceil(now() + delayMs);
  const claimed = (row: Record<string, unknown> | undefined): ClaimedEntry | undefined => {
    if (row === undefined) return undefined;
    const meta = JSON.parse(row.meta as string) as { subscription: DeliveredTo; headers: Record<string, string> };
    return {
      id: row.id as string,
      subscription: meta.subscription,
      headers: meta.headers,
      body: row.body as Uint8Array,
      receivedAtMs: row.received_at_ms as number,
      attempt: row.attempts as number,
    };
  };
  const changed = (result: { changes: number | bigint }) => Number(result.changes) > 0;
  // Group commit: the deliveries that arrive in one turn of the event loop are inserted in one
  // transaction, after that turn, so that they share one synced commit (what an insert costs most).
  // Each is answered only once the commit returned; if it fails, all of them are refused.
  type Waiting = { entry: InboxEntry; limits: InboxLimits; resolve(stored: boolean): void; reject(error: unknown): void };
  let waiting: Waiting[] = [];
  const commit = () => {
    const batch = waiting;
    waiting = [];
    const results: Array<{ stored: boolean } | { error: unknown }> = [];
    try {
      const { add } = inboxOpen();
      db.exec("BEGIN IMMEDIATE");
      for (const { entry, limits } of batch) {
        const meta = JSON.stringify({ subscription: entry.subscription, headers: entry.headers });
        try {
          const result = add.run(
            entry.id,
            entry.subscription.id,
            now(),
            entry.receivedAtMs,
            entry.body.byteLength,
            meta,
            entry.body,
            limits.maxCount,
            limits.maxBytes,
          );
          results.push({ stored: changed(result) });
        } catch (error) {
          // This insert alone is undone (SQLite rolls back a failed statement, not the transaction).
          results.push({ error });
        }
      }
      db.exec("COMMIT");
    } catch (error) {
      // Gone already when SQLite rolled it back itself (a full disk may), or when BEGIN failed.
      try {
        db.exec("ROLLBACK");
      } catch {
        // No transaction left to roll back.
      }
      for (const { reject } of batch) reject(error);
      return;
    }
    batch.forEach(({ resolve, reject }, i) => {
      const result = results[i]!;
      if ("error" in result) reject(result.error);
      else resolve(result.stored);
    });
  };
  const sqliteInbox: Inbox = {
    add: (entry, limits) =>
      new Promise<boolean>((resolve, reject) => {
        if (waiting.length === 0) setImmediate(commit);
        waiting.push({ entry, limits, resolve, reject });
      }),
    claim: (owner, leaseMs, ordered) =>
      attempt(() => {
        const at = now();
        return claimed(inboxOpen()[ordered ? "claimOrdered" : "claimAny"].get(owner, ms(leaseMs), at));
      }),
    extend: (id, owner, leaseMs) => attempt(() => changed(inboxOpen().extend.run(ms(leaseMs), id, owner, now()))),
    done: (id, owner) => attempt(() => changed(inboxOpen().done.run(id, owner))),
    retry: (id, owner, delayMs, error) => attempt(() => changed(inboxOpen().retry.run(ms(delayMs), error, id, owner))),
    fail: (id, owner, error) => attempt(() => changed(inboxOpen().fail.run(error, id, owner))),
    nextDueInMs: (ordered) =>
      attempt(() => {
        const { at } = inboxOpen()[ordered ? "dueOrdered" : "dueAny"].get() as { at: number | null };
        return at === null ? undefined : Math.max(0, at - now());
      }),
    stats: () =>
      attempt(() => {
        const row = inboxOpen().stats.get() as { pending: number | null; failed: number | null; bytes: number | null };
        return { pending: row.pending ?? 0, failed: row.failed ?? 0, bytes: row.bytes ?? 0 };
      }),
    list: () =>
      attempt(() => {
        const at = now();
        return inboxOpen().list.all().map((row): InboxSummary => {
          const meta = JSON.parse(row.meta as string) as { subscription: DeliveredTo };
          const failed = row.state === "failed";
          const until = row.until_ms as number;
          return {
            id: row.id as string,
            subscriptionId: row.subscription_id as string,
            topic: meta.subscription.topic,
            state: failed ? "failed" : until > at ? "processing" : "pending",
            attempts: row.attempts as number,
            bytes: row.bytes as number,
            receivedAtMs: row.received_at_ms as number,
            ...(failed ? {} : { nextAttemptAtMs: Math.max(row.due_at_ms as number, until) }),
            ...(row.last_error === null ? {} : { lastError: row.last_error as string }),
          };
        });
      }),
    requeue: (id) => attempt(() => changed(inboxOpen().requeue.run(now(), id))),
    drop: (id) => attempt(() => changed(inboxOpen().drop.run(id))),
  };

  return {
    description: path,
    inbox: sqliteInbox,
    get: (id) => attempt(() => parse(open().get.get(id))),
    put: (s) =>
      attempt(() => {
        // The column is for "what is due" queries, so whole milliseconds are enough; the JSON keeps the exact value.
        const nextAttemptAtMs = s.nextAttemptAtMs === undefined ? null : Math.floor(s.nextAttemptAtMs);
        open().put.run(s.id, s.topic, s.state, nextAttemptAtMs, JSON.stringify(s));
      }),
    delete: (id) => attempt(() => void open().delete.run(id)),
    list: () => attempt(() => open().list.all().map((row) => parse(row)!)),
    claim: (name, owner, ttlMs) =>
      attempt(() => {
        checkTtl(ttlMs);
        const at = now();
        // Rounded up: the STRICT column takes whole milliseconds, and a lock must not end early.
        return open().claim.get(name, owner, Math.ceil(at + ttlMs), at) !== undefined;
      }),
    release: (name, owner) => attempt(() => void open().release.run(name, owner)),
    close: () =>
      attempt(() => {
        if (closed) return;
        closed = true;
        if (processing !== db) processing!.close();
        db.close();
      }),
  };
}

type InboxStatement =
  | "add"
  | "claimOrdered"
  | "claimAny"
  | "extend"
  | "done"
  | "retry"
  | "fail"
  | "dueOrdered"
  | "dueAny"
  | "stats"
  | "list"
  | "requeue"
  | "drop";

/** The inbox's statements: each one statement, so each is atomic without a transaction of ours. */
function prepareInbox(db: DatabaseSync): Record<InboxStatement, StatementSync> {
  // Claims the candidate that has been ready longest (the oldest first among equals), counting the attempt.
  const claim = (candidates: string) =>
    db.prepare(
      `UPDATE inbox SET owner = ?1, until_ms = ?2, ready_at_ms = ?2, attempts = attempts + 1
       WHERE seq = (SELECT seq FROM inbox WHERE ${candidates} AND ready_at_ms <= ?3 ORDER BY ready_at_ms, seq LIMIT 1)
       RETURNING id, attempts, received_at_ms, meta, body`,
    );
  const due = (candidates: string) => db.prepare(`SELECT min(ready_at_ms) AS at FROM inbox WHERE ${candidates}`);
  // A claimed delivery changes only while its owner holds it: pending, and `owner` its claimant.
  const held = "id = ? AND owner = ? AND state = 'pending'";
  // Ordered: only the head of each subscription (an index of one row per subscription); else any pending one.
  const heads = "is_head = 1";
  const pending = "state = 'pending'";
  return {
    // Inserted only while the totals stay within both limits (?8 deliveries, ?9 bytes).
    add: db.prepare(
      `INSERT INTO inbox (id, subscription_id, state, due_at_ms, ready_at_ms, received_at_ms, bytes, meta, body)
       SELECT ?1, ?2, 'pending', ?3, ?3, ?4, ?5, ?6, ?7 FROM inbox_totals WHERE count + 1 <= ?8 AND bytes + ?5 <= ?9`,
    ),
    claimOrdered: claim(heads),
    claimAny: claim(pending),
    extend: db.prepare(
      "UPDATE inbox SET until_ms = ?1, ready_at_ms = ?1 WHERE id = ?2 AND owner = ?3 AND state = 'pending' AND until_ms > ?4",
    ),
    done: db.prepare(`DELETE FROM inbox WHERE ${held}`),
    retry: db.prepare(
      `UPDATE inbox SET owner = NULL, until_ms = 0, due_at_ms = ?1, ready_at_ms = ?1, last_error = ?2 WHERE id = ?3 AND owner = ?4 AND state = 'pending'`,
    ),
    fail: db.prepare(`UPDATE inbox SET owner = NULL, until_ms = 0, state = 'failed', last_error = ? WHERE ${held}`),
    dueOrdered: due(heads),
    dueAny: due(pending),
    stats: db.prepare(
      `SELECT count - (SELECT count(*) FROM inbox WHERE state = 'failed') AS pending,
         (SELECT count(*) FROM inbox WHERE state = 'failed') AS failed, bytes FROM inbox_totals`,
    ),
    list: db.prepare(
      "SELECT id, subscription_id, state, attempts, due_at_ms, until_ms, received_at_ms, bytes, meta, last_error FROM inbox ORDER BY seq",
    ),
    requeue: db.prepare(
      "UPDATE inbox SET state = 'pending', attempts = 0, due_at_ms = ?1, ready_at_ms = ?1 WHERE id = ?2 AND state = 'failed'",
    ),
    drop: db.prepare("DELETE FROM inbox WHERE id = ? AND state = 'failed'"),
  };
}
