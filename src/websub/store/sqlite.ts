/**
 * Subscriptions in one SQLite file through `node:sqlite` (Node 22.13+, Bun, Deno), shared by the
 * worker processes of one host: WAL journal so readers never wait for a writer, a busy timeout so
 * two writers queue instead of failing with SQLITE_BUSY.
 */
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import process from "node:process";
import type { DatabaseSync, StatementSync } from "node:sqlite";
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
export const SQLITE_SCHEMA_VERSION = 1;

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
    // Later versions: `if (version < 2) db.exec(SCHEMA_V2_CHANGES);` and so on, in order.
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
  try {
    // First, so that switching to WAL and the migration wait for a worker that is doing the same.
    db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    const { journal_mode: mode } = db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode: string };
    // WAL needs shared memory between processes, which network file systems do not offer.
    if (path !== ":memory:" && mode !== "wal") {
      throw new Error(`SQLite database "${path}" cannot use WAL journal mode (it stays "${mode}"): put it on a local disk`);
    }
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
  } catch (error) {
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

  return {
    description: path,
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
        db.close();
      }),
  };
}
