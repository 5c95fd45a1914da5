import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ROOT, spawnFollowed } from "../../harness/process.ts";
import { redisMissing, type RedisServer, startRedis, type StartRedisOptions } from "../../harness/redis.ts";
import { using, within } from "../../harness/wait.ts";
import { Redis } from "ioredis";
import { parseRedisUrl } from "../../src/websub/store/_redis_url.ts";
import { openStore, parseStoreSpec } from "../../src/websub/store/open.ts";
import { redisStore } from "../../src/websub/store/redis.ts";
import { SQLITE_SCHEMA_VERSION, sqliteStore } from "../../src/websub/store/sqlite.ts";
import { memoryStore, type Subscription, type SubscriptionStore } from "../../src/websub/store/types.ts";

const TIMEOUT_MS = 15_000;
const REDIS_MISSING = redisMissing();

type Defer = (cleanup: () => unknown) => void;

function scratch(defer: Defer): string {
  const dir = mkdtempSync(join(tmpdir(), "websub-store-"));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function redis(defer: Defer, options?: StartRedisOptions): Promise<RedisServer> {
  const server = await startRedis(options);
  if (server === undefined) throw new Error(REDIS_MISSING);
  defer(() => server.close());
  return server;
}

/** A subscription with every field set. */
function full(id: string): Subscription {
  return {
    id,
    source: `https://example.com/feed/${id}?as=configured`,
    origin: "manual",
    unsubscribe: true,
    topic: `https://example.com/feed/${id}`,
    hub: "https://hub.example.com/",
    callbackUrl: `https://app.example.com/websub/${id}`,
    secret: `secret-${id}-ünïcødé`,
    state: "active",
    pending: "subscribe",
    leaseSeconds: 86_400,
    expiresAtMs: 1_900_000_000_000,
    nextAttemptAtMs: 1_899_999_000_000.5,
    failures: 3,
    updatedAtMs: 1_800_000_000_000,
  };
}

/** A subscription with only the required fields. */
function minimal(id: string): Subscription {
  return {
    id,
    source: `https://example.com/feed/${id}`,
    origin: "config",
    topic: `https://example.com/feed/${id}`,
    hub: "https://hub.example.com/",
    callbackUrl: `https://app.example.com/websub/${id}`,
    state: "pending",
    updatedAtMs: 1_800_000_000_001,
  };
}

const byId = (list: Subscription[]) => list.sort((a, b) => a.id.localeCompare(b.id));
const sleepUntil = (atMs: number) => Bun.sleep(Math.max(0, atMs - performance.now()));
const failure = (promise: Promise<unknown>) => promise.then(() => new Error("it resolved"), (error: Error) => error);

interface Backend {
  name: string;
  /** Why the backend cannot run here. */
  skip?: string;
  /** Keeps data across instances (not memory). */
  durable: boolean;
  /** A fresh, empty store, and a way to open another one on the same data. */
  open(defer: Defer): Promise<{ store: SubscriptionStore; reopen(): Promise<SubscriptionStore> }>;
}

const backends: Backend[] = [
  {
    name: "memory",
    durable: false,
    open: () => {
      const store = memoryStore();
      return Promise.resolve({ store, reopen: () => Promise.resolve(memoryStore()) });
    },
  },
  {
    name: "sqlite",
    durable: true,
    async open(defer) {
      const path = join(scratch(defer), "data", "subscriptions.db");
      const open = async () => {
        const store = await sqliteStore(path);
        defer(() => store.close());
        return store;
      };
      return { store: await open(), reopen: open };
    },
  },
  {
    name: "redis",
    skip: REDIS_MISSING,
    durable: true,
    async open(defer) {
      const server = await redis(defer);
      const open = async () => {
        const store = await redisStore(server.url);
        defer(() => store.close());
        return store;
      };
      return { store: await open(), reopen: open };
    },
  },
];

for (const backend of backends) {
  describe.skipIf(backend.skip !== undefined)(`${backend.name} store${backend.skip ? ` (skipped: ${backend.skip})` : ""}`, () => {
    test("put, get, list and delete round-trip every field, and absent optional fields stay absent", () =>
      using(async (defer) => {
        const { store } = await backend.open(defer);
        await store.put(full("a"));
        await store.put(minimal("b"));
        expect(await store.get("a")).toStrictEqual(full("a"));
        const b = await store.get("b");
        expect(b).toStrictEqual(minimal("b"));
        expect(Object.keys(b!).sort()).toEqual(Object.keys(minimal("b")).sort());
        expect(await store.get("missing")).toBeUndefined();
        expect(byId(await store.list())).toStrictEqual([full("a"), minimal("b")]);
        await store.delete("a");
        await store.delete("never-there");
        expect(await store.get("a")).toBeUndefined();
        expect(await store.list()).toStrictEqual([minimal("b")]);
      }), TIMEOUT_MS);

    test("put replaces the whole subscription with the same id, not a merge", () =>
      using(async (defer) => {
        const { store } = await backend.open(defer);
        await store.put(full("a"));
        await store.put({ ...minimal("a"), state: "expired" });
        expect(await store.get("a")).toStrictEqual({ ...minimal("a"), state: "expired" });
        expect(await store.list()).toHaveLength(1);
      }), TIMEOUT_MS);

    test("what goes in and comes out are copies: changing them changes nothing stored", () =>
      using(async (defer) => {
        const { store } = await backend.open(defer);
        const put = full("a");
        await store.put(put);
        put.state = "failed";
        delete put.secret;
        const got = (await store.get("a"))!;
        got.topic = "https://changed.example/";
        const listed = await store.list();
        listed[0]!.state = "denied";
        expect(await store.get("a")).toStrictEqual(full("a"));
      }), TIMEOUT_MS);

    test("claim: a second owner is refused while the lock is held, and the holder extends it", () =>
      using(async (defer) => {
        const { store } = await backend.open(defer);
        const startMs = performance.now();
        expect(await store.claim("renewer", "a", 400)).toBe(true);
        expect(await store.claim("renewer", "b", 400)).toBe(false);
        expect(await store.claim("other-lock", "b", 400)).toBe(true);
        // The checks below prove the extension only if the first claims ended well before 400 ms.
        expect(performance.now() - startMs).toBeLessThan(100);
        await sleepUntil(startMs + 300);
        expect(await store.claim("renewer", "a", 400)).toBe(true);
        // Past the first claim's end (<= 500 ms), inside the extension (>= 700 ms).
        await sleepUntil(startMs + 550);
        expect(await store.claim("renewer", "b", 400)).toBe(false);
        expect(performance.now() - startMs).toBeLessThan(700);
      }), TIMEOUT_MS);

    test("release: only the holder gives a lock up, and another owner takes it at once", () =>
      using(async (defer) => {
        const { store } = await backend.open(defer);
        expect(await store.claim("renewer", "a", 60_000)).toBe(true);
        await store.release("renewer", "b");
        expect(await store.claim("renewer", "b", 60_000)).toBe(false);
        await store.release("renewer", "a");
        expect(await store.claim("renewer", "b", 60_000)).toBe(true);
        expect(await store.claim("renewer", "a", 60_000)).toBe(false);
      }), TIMEOUT_MS);

    test("claim: another owner takes the lock once its ttl has passed, not before", () =>
      using(async (defer) => {
        const { store } = await backend.open(defer);
        const startMs = performance.now();
        expect(await store.claim("renewer", "a", 300)).toBe(true);
        const claimedMs = performance.now();
        await sleepUntil(startMs + 150);
        expect(await store.claim("renewer", "b", 300)).toBe(false);
        // The refusal above counts only if it came while the lock was surely held.
        expect(performance.now() - startMs).toBeLessThan(300);
        await sleepUntil(claimedMs + 300 + 20);
        expect(await store.claim("renewer", "b", 300)).toBe(true);
        expect(await store.claim("renewer", "a", 300)).toBe(false);
      }), TIMEOUT_MS);

    if (backend.durable) {
      test("subscriptions and locks survive close and reopen", () =>
        using(async (defer) => {
          const { store, reopen } = await backend.open(defer);
          await store.put(full("a"));
          expect(await store.claim("renewer", "a", 10_000)).toBe(true);
          await store.close();
          const again = await reopen();
          expect(await again.list()).toStrictEqual([full("a")]);
          expect(await again.claim("renewer", "b", 10_000)).toBe(false);
          expect(await again.claim("renewer", "a", 10_000)).toBe(true);
        }), TIMEOUT_MS);

      test("a closed store rejects calls, and a ttl that is not positive is refused", () =>
        using(async (defer) => {
          const { store, reopen } = await backend.open(defer);
          expect((await failure(store.claim("renewer", "a", 0))).message).toBe('Lock ttl "0" is not a positive number of milliseconds');
          expect((await failure(store.claim("renewer", "a", Number.NaN))).message).toContain('"NaN"');
          await store.close();
          await store.close();
          expect((await failure(store.get("a"))).message).toMatch(/closed/);
          expect((await failure(store.put(full("a")))).message).toMatch(/closed/);
          expect(await (await reopen()).get("a")).toBeUndefined();
        }), TIMEOUT_MS);
    }
  });
}

const mode = (path: string) => (statSync(path).mode & 0o777).toString(8);

/** Runs a child to its end, its output followed line by line; killed in cleanup if it outlives the test. */
function run(defer: Defer, cmd: string[], onLine: (line: string) => void = () => {}) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const child = spawnFollowed(cmd, { env: process.env, stdin: "ignore" }, (line) => {
    stdout.push(line);
    onLine(line);
  }, (line) => stderr.push(line));
  defer(() => {
    if (child.proc.exitCode === null && child.proc.signalCode === null) process.kill(-child.proc.pid, "SIGKILL");
  });
  return { stdout, stderr, done: within(child.done, 30_000, `exit of ${cmd.join(" ")}`) };
}

describe("sqlite store", () => {
  test(
    "creates its folder (0700) and a 0600 file, whose -wal and -shm files are 0600 too, in WAL mode at schema version 2",
    () =>
      using(async (defer) => {
        const path = join(scratch(defer), "data", "nested", "subscriptions.db");
        const store = await sqliteStore(path);
        defer(() => store.close());
        expect(store.description).toBe(path);
        await store.put(full("a"));
        expect(mode(join(path, ".."))).toBe("700");
        for (const file of [path, `${path}-wal`, `${path}-shm`]) expect({ file, mode: mode(file) }).toEqual({ file, mode: "600" });
        const db = new DatabaseSync(path);
        defer(() => db.close());
        expect(db.prepare("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
        expect(db.prepare("PRAGMA user_version").get()).toEqual({ user_version: SQLITE_SCHEMA_VERSION });
        expect(SQLITE_SCHEMA_VERSION).toBe(2);
        expect(db.prepare("SELECT id, topic, state, next_attempt_at_ms FROM subscriptions").all()).toEqual([
          { id: "a", topic: full("a").topic, state: "active", next_attempt_at_ms: 1_899_999_000_000 },
        ]);
      }),
    TIMEOUT_MS,
  );

  test("two stores on one file see each other's writes, and only one of them holds a lock", () =>
    using(async (defer) => {
      const path = join(scratch(defer), "subscriptions.db");
      const one = await sqliteStore(path);
      defer(() => one.close());
      const two = await sqliteStore(path);
      defer(() => two.close());
      await one.put(full("a"));
      expect(await two.get("a")).toStrictEqual(full("a"));
      await two.put({ ...full("a"), state: "unsubscribing" });
      await two.put(minimal("b"));
      expect(byId(await one.list())).toStrictEqual([{ ...full("a"), state: "unsubscribing" }, minimal("b")]);
      await one.delete("b");
      expect(await two.get("b")).toBeUndefined();
      expect(await one.claim("renewer", "worker-1", 10_000)).toBe(true);
      expect(await two.claim("renewer", "worker-2", 10_000)).toBe(false);
    }), TIMEOUT_MS);

  test("a file with a newer schema version is refused, naming the file and both versions", () =>
    using(async (defer) => {
      const path = join(scratch(defer), "subscriptions.db");
      await (await sqliteStore(path)).close();
      const db = new DatabaseSync(path);
      db.exec("PRAGMA user_version = 7");
      db.close();
      expect((await failure(sqliteStore(path))).message).toBe(
        `SQLite database "${path}" has schema version 7: this code knows up to 2, upgrade it`,
      );
    }), TIMEOUT_MS);

  test(
    "a write waits for another process's lock up to busyTimeoutMs: a short timeout fails, a long one succeeds once it is released",
    () =>
      using(async (defer) => {
        const path = join(scratch(defer), "subscriptions.db");
        const impatient = await sqliteStore(path, { busyTimeoutMs: 100 });
        defer(() => impatient.close());
        const patient = await sqliteStore(path, { busyTimeoutMs: 5_000 });
        defer(() => patient.close());
        const HOLD_MS = 800;
        let held!: () => void;
        const sawHeld = new Promise<void>((resolve) => (held = resolve));
        const holder = run(defer, [process.execPath, "test/websub/_sqlite_probe.ts", "hold", path, String(HOLD_MS)], (line) => {
          if (line === '{"held":true}') held();
        });
        await within(Promise.race([sawHeld, holder.done.then(() => Promise.reject(new Error(holder.stderr.join("\n"))))]), 15_000, "lock");
        const heldMs = performance.now();
        const error = await failure(impatient.put(full("a")));
        const failedMs = performance.now();
        expect(error.message).toMatch(/locked|busy/i);
        expect(failedMs - heldMs).toBeGreaterThanOrEqual(95);
        expect(failedMs - heldMs).toBeLessThan(HOLD_MS - 100);
        await patient.put(full("b"));
        const wroteMs = performance.now();
        // The child may have printed up to a follow interval (10 ms) before it was read.
        expect(wroteMs - heldMs).toBeGreaterThanOrEqual(HOLD_MS - 50);
        expect(wroteMs - heldMs).toBeLessThan(HOLD_MS + 1_000);
        expect(await holder.done).toBe(0);
        expect(await impatient.list()).toStrictEqual([full("b")]);
      }),
    TIMEOUT_MS,
  );

  test("Node, Bun and Deno each read the others' writes on one file, and none prints a warning", () =>
    using(async (defer) => {
      const path = join(scratch(defer), "data", "subscriptions.db");
      const probe = "test/websub/_sqlite_probe.ts";
      const runtimes: Array<[string, string[]]> = [
        ["node", [join(ROOT, "node_modules/.bin/node"), probe]],
        ["bun", [process.execPath, probe]],
        ["deno", [join(ROOT, "node_modules/.bin/deno"), "run", "--allow-all", probe]],
      ];
      const seen: string[] = [];
      for (const [runtime, cmd] of runtimes) {
        const child = run(defer, [...cmd, "put", path, runtime]);
        const code = await child.done;
        expect({ runtime, code, stderr: child.stderr }).toEqual({ runtime, code: 0, stderr: [] });
        const out = JSON.parse(child.stdout[0]!);
        seen.push(runtime);
        expect(out.runtime).toBe(runtime);
        expect(out.ids).toEqual([...seen].sort());
        expect(out.got).toStrictEqual({ ...full(runtime), ...probeFields(runtime) });
      }
      const store = await sqliteStore(path);
      defer(() => store.close());
      expect((await store.list()).map((s) => s.id).sort()).toEqual(["bun", "deno", "node"]);
      expect(mode(path)).toBe("600");
    }), 60_000);
});

/** What _sqlite_probe.ts writes where it differs from full(). */
function probeFields(id: string): Partial<Subscription> {
  return {
    topic: `https://example.com/${id}`,
    secret: `secret-${id}`,
    expiresAtMs: 1_900_000_000_000,
    nextAttemptAtMs: 1_899_000_000_000,
    failures: 2,
    updatedAtMs: 1_800_000_000_000,
  };
}

describe.skipIf(REDIS_MISSING !== undefined)(`redis store${REDIS_MISSING ? ` (skipped: ${REDIS_MISSING})` : ""}`, () => {
  test(
    "AUTH uses the URL's password (with or without a user); a wrong or missing one is refused with the server's reason, never the password",
    () =>
      using(async (defer) => {
        const server = await redis(defer, { password: "s3cret-pass" });
        const base = `127.0.0.1:${server.port}`;
        const store = await redisStore(`redis://:s3cret-pass@${base}/0`);
        defer(() => store.close());
        expect(store.description).toBe(`redis://:***@${base}/0`);
        await store.put(full("a"));
        const asUser = await redisStore(`redis://default:s3cret-pass@${base}`);
        defer(() => asUser.close());
        expect(asUser.description).toBe(`redis://default:***@${base}/0`);
        expect(await asUser.get("a")).toStrictEqual(full("a"));

        const wrong = await failure(redisStore(`redis://:wrong-pass@${base}/0`));
        expect(wrong.message).toStartWith(`Redis at redis://:***@${base}/0 refused AUTH: WRONGPASS`);
        const missing = await failure(redisStore(`redis://${base}/0`));
        expect(missing.message).toStartWith(`Redis at redis://${base}/0 refused PING: NOAUTH`);
        for (const error of [wrong, missing]) {
          expect(String(error)).not.toContain("wrong-pass");
          expect(String(error)).not.toContain("s3cret-pass");
        }
      }),
    TIMEOUT_MS,
  );

  test("the URL's database is SELECTed, and the key prefix keeps stores apart", () =>
    using(async (defer) => {
      const server = await redis(defer);
      const db1 = await redisStore(`redis://127.0.0.1:${server.port}/1`);
      defer(() => db1.close());
      const db0 = await redisStore(server.url);
      defer(() => db0.close());
      const other = await redisStore(server.url, { keyPrefix: "other-app:" });
      defer(() => other.close());
      await db1.put(full("a"));
      await other.put(full("b"));
      expect(db1.description).toBe(`redis://127.0.0.1:${server.port}/1`);
      expect(await db0.list()).toEqual([]);
      expect(await db1.list()).toStrictEqual([full("a")]);
      expect(await other.list()).toStrictEqual([full("b")]);
      const client = new Redis(server.url);
      defer(() => client.quit());
      expect(await client.hlen("other-app:subscriptions")).toBe(1);
      expect(await client.exists("websub:subscriptions")).toBe(0);
    }), TIMEOUT_MS);

  test(
    "concurrent commands get their own replies, a list of large subscriptions comes back whole, and an error rejects only its own command",
    () =>
      using(async (defer) => {
        const server = await redis(defer);
        const store = await redisStore(server.url);
        defer(() => store.close());
        // About 1.2 MB of JSON: the list spans several HSCAN pages, each reply far larger than a socket read.
        const many = Array.from({ length: 1_200 }, (_, i) => ({ ...full(`s${i}`), secret: `välue ${i} ✓ ${"x".repeat(i * 2)}` }));
        await Promise.all(many.map((s) => store.put(s)));
        expect(await Promise.all(many.map((s) => store.get(s.id)))).toStrictEqual(many);
        expect(byId(await store.list())).toStrictEqual(byId([...many]));
        const client = new Redis(server.url);
        defer(() => client.quit());
        await client.set("broken:subscriptions", "not a hash");
        const broken = await redisStore(server.url, { keyPrefix: "broken:" });
        defer(() => broken.close());
        const [wrong, right] = await Promise.allSettled([broken.get("a"), store.get("s7")]);
        expect((wrong as PromiseRejectedResult).reason.message).toStartWith("WRONGTYPE");
        expect(right).toEqual({ status: "fulfilled", value: many[7] });
      }),
    TIMEOUT_MS,
  );

  test(
    "after redis is killed a command rejects at once with a clear error, and the store works again once redis is back",
    () =>
      using(async (defer) => {
        const server = await redis(defer);
        const store = await redisStore(server.url, { commandTimeoutMs: 2_000, connectTimeoutMs: 2_000 });
        defer(() => store.close());
        await store.put(full("a"));
        await server.kill();
        const startMs = performance.now();
        const error = await failure(store.get("a"));
        // A refused connection, well before the command timeout.
        expect(performance.now() - startMs).toBeLessThan(1_000);
        expect(error.message).toMatch(new RegExp(`^(Redis at ${server.url} is unreachable|Connection to Redis at ${server.url} was lost)`));
        const again = await redis(defer, { port: server.port });
        expect(again.url).toBe(server.url);
        expect(await store.get("a")).toBeUndefined();
        await store.put(full("b"));
        expect(await store.list()).toStrictEqual([full("b")]);
      }),
    TIMEOUT_MS,
  );

  test(
    "a command to a stopped redis rejects after commandTimeoutMs, not before, and the next one after it resumes succeeds",
    () =>
      using(async (defer) => {
        const server = await redis(defer);
        const store = await redisStore(server.url, { commandTimeoutMs: 400 });
        defer(() => store.close());
        await store.put(full("a"));
        process.kill(server.pid, "SIGSTOP");
        defer(() => process.kill(server.pid, "SIGCONT"));
        const startMs = performance.now();
        const error = await failure(store.get("a"));
        const elapsedMs = performance.now() - startMs;
        expect(error.message).toBe(`Redis at ${server.url} did not answer HGET within 400ms`);
        expect(elapsedMs).toBeGreaterThanOrEqual(395);
        expect(elapsedMs).toBeLessThan(1_400);
        process.kill(server.pid, "SIGCONT");
        expect(await store.get("a")).toStrictEqual(full("a"));
      }),
    TIMEOUT_MS,
  );

  test("openStore opens a redis:// spec", () =>
    using(async (defer) => {
      const server = await redis(defer);
      const store = await openStore(server.url);
      defer(() => store.close());
      expect(store.description).toBe(server.url);
      await store.put(minimal("a"));
      expect(await store.get("a")).toStrictEqual(minimal("a"));
    }), TIMEOUT_MS);
});

/** What each runtime runs against the Redis store: round trips, the lock, and a command after CLIENT KILL. */
const REDIS_PROBE = `
const [runtime, url] = [process.env.PROBE_RUNTIME, process.env.PROBE_URL];
const { redisStore } = await import(${JSON.stringify(join(ROOT, "src/websub/store/redis.ts"))});
const { Redis } = await import("ioredis");
const store = await redisStore(url);
const subscription = { id: runtime, source: "s", origin: "config", topic: "t", hub: "h", callbackUrl: "c", state: "active", updatedAtMs: 1 };
await store.put(subscription);
const claimed = await store.claim("renewer", runtime, 60000);
const killer = new Redis(url);
const killed = await killer.client("KILL", "TYPE", "normal", "SKIPME", "yes");
await killer.quit();
// A command sent before the close is seen fails once; the client connects again by itself.
const errors = [];
let got;
for (;;) {
  try {
    got = await store.get(runtime);
    break;
  } catch (error) {
    errors.push(error.message);
    if (errors.length > 1) throw error;
  }
}
const ids = (await store.list()).map((s) => s.id).sort();
await store.release("renewer", runtime);
await store.close();
console.log(JSON.stringify({ runtime, claimed, killed, same: JSON.stringify(got) === JSON.stringify(subscription), ids, errors }));
`;

describe.skipIf(REDIS_MISSING !== undefined)("redis store on every runtime", () => {
  test("Node, Bun and Deno each put, claim, list and release through it, and go on after CLIENT KILL", () =>
    using(async (defer) => {
      const server = await redis(defer);
      const runtimes: Array<[string, string[]]> = [
        ["node", [join(ROOT, "node_modules/.bin/node"), "--input-type=module", "-e", REDIS_PROBE]],
        ["bun", [process.execPath, "-e", REDIS_PROBE]],
        ["deno", [join(ROOT, "node_modules/.bin/deno"), "eval", REDIS_PROBE]],
      ];
      const seen: string[] = [];
      for (const [runtime, cmd] of runtimes) {
        const stdout: string[] = [];
        const stderr: string[] = [];
        const child = spawnFollowed(
          cmd,
          { env: { ...process.env, PROBE_RUNTIME: runtime, PROBE_URL: server.url }, stdin: "ignore" },
          (line) => stdout.push(line),
          (line) => stderr.push(line),
        );
        defer(() => {
          if (child.proc.exitCode === null && child.proc.signalCode === null) process.kill(-child.proc.pid, "SIGKILL");
        });
        const code = await within(child.done, 30_000, `${runtime} redis probe`);
        expect({ runtime, code, stderr }).toEqual({ runtime, code: 0, stderr: [] });
        const out = JSON.parse(stdout[0]!);
        seen.push(runtime);
        expect(out).toMatchObject({ runtime, claimed: true, killed: 1, same: true, ids: [...seen].sort() });
        for (const error of out.errors) expect(error).toMatch(/^Connection to Redis at .* was lost: /);
      }
    }), 60_000);
});

describe("redis client against a server that never answers", () => {
  test(
    "connecting (AUTH) gives up after connectTimeoutMs and a command (PING) after commandTimeoutMs, neither before",
    () =>
      using(async (defer) => {
        const sockets = new Set<Socket>();
        const silent = createServer((socket) => void sockets.add(socket));
        await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
        defer(() => new Promise((resolve) => silent.close(resolve)));
        defer(() => sockets.forEach((socket) => socket.destroy()));
        const { port } = silent.address() as { port: number };

        let startMs = performance.now();
        const auth = await failure(
          redisStore(`redis://:pw-secret@127.0.0.1:${port}/0`, { connectTimeoutMs: 300, commandTimeoutMs: 5_000 }),
        );
        let elapsedMs = performance.now() - startMs;
        expect(auth.message).toBe(`Redis at redis://:***@127.0.0.1:${port}/0 is unreachable: connecting took longer than 300ms`);
        expect(elapsedMs).toBeGreaterThanOrEqual(295);
        expect(elapsedMs).toBeLessThan(1_300);

        startMs = performance.now();
        const ping = await failure(redisStore(`redis://127.0.0.1:${port}`, { connectTimeoutMs: 5_000, commandTimeoutMs: 300 }));
        elapsedMs = performance.now() - startMs;
        expect(ping.message).toBe(`Redis at redis://127.0.0.1:${port}/0 did not answer PING within 300ms`);
        expect(elapsedMs).toBeGreaterThanOrEqual(295);
        expect(elapsedMs).toBeLessThan(1_300);
      }),
    TIMEOUT_MS,
  );
});

describe("store specs", () => {
  test("parseRedisUrl reads host, port, database and credentials, and describes the URL without the password", () => {
    expect(parseRedisUrl("redis://127.0.0.1")).toEqual({ host: "127.0.0.1", port: 6379, db: 0, description: "redis://127.0.0.1:6379/0" });
    expect(parseRedisUrl("redis://user:p%40ss%3Aword@redis.internal:6380/3")).toEqual({
      host: "redis.internal",
      port: 6380,
      db: 3,
      username: "user",
      password: "p@ss:word",
      description: "redis://user:***@redis.internal:6380/3",
    });
    expect(parseRedisUrl("redis://:pw@[::1]:7000/").description).toBe("redis://:***@[::1]:7000/0");
    expect(parseRedisUrl("redis://:pw@[::1]:7000/").host).toBe("::1");
  });

  test("parseRedisUrl refuses TLS, bad databases, queries, a lone user and non-URLs, never quoting the password", () => {
    const cases: Array<[string, string]> = [
      ["rediss://u:topsecret@h/0", `"rediss://u:***@h:6379/0" asks for TLS, which this Redis client does not support`],
      ["redis://:topsecret@h/abc", `"redis://:***@h:6379/abc" has database "abc": use a number`],
      ["redis://:topsecret@h/0?tls=true", `"redis://:***@h:6379/0" has a query or fragment, which is not read`],
      ["redis://topsecret@h", `"redis://***@h:6379/0" has a user but no password`],
      ["redis://:top secret@[bad/0", `"redis://***@[bad/0" is not a Redis URL: use redis://[user:password@]host[:port][/db]`],
      ["http://:topsecret@h/", `"http://:***@h:6379/0" is not a Redis URL`],
    ];
    for (const [url, message] of cases) {
      let error: Error | undefined;
      try {
        parseRedisUrl(url);
      } catch (caught) {
        error = caught as Error;
      }
      expect({ url, message: error?.message.slice(0, message.length) }).toEqual({ url, message });
      expect(error?.message).not.toContain("secret");
    }
  });

  test("parseStoreSpec knows memory, redis:// and file paths (resolved against the current directory), and refuses the rest", () => {
    expect(parseStoreSpec("memory")).toEqual({ kind: "memory" });
    expect(parseStoreSpec("data/subscriptions.db")).toEqual({ kind: "sqlite", path: join(process.cwd(), "data/subscriptions.db") });
    expect(parseStoreSpec("/var/lib/app/subs.db")).toEqual({ kind: "sqlite", path: "/var/lib/app/subs.db" });
    expect(parseStoreSpec("redis://:pw@cache:6380/2")).toEqual({
      kind: "redis",
      url: "redis://:pw@cache:6380/2",
      description: "redis://:***@cache:6380/2",
    });
    expect(() => parseStoreSpec("rediss://:pw@cache")).toThrow(/asks for TLS/);
    expect(() => parseStoreSpec("redis://:pw@cache/x")).toThrow('"redis://:***@cache:6379/x" has database "x"');
    expect(() => parseStoreSpec("postgres://u:pw@db/app")).toThrow(
      '"postgres://..." is not a store: use memory, redis://[user:password@]host[:port][/db] or a file path for SQLite',
    );
    expect(() => parseStoreSpec(" ")).toThrow('" " is empty');
  });

  test("openStore opens memory and a SQLite file path, creating its folder", () =>
    using(async (defer) => {
      const memory = await openStore("memory");
      expect(memory.description).toBe("memory");
      const path = join(scratch(defer), "data", "subscriptions.db");
      const store = await openStore(path);
      defer(() => store.close());
      expect(store.description).toBe(path);
      await store.put(full("a"));
      expect(existsSync(path)).toBe(true);
      expect(await store.get("a")).toStrictEqual(full("a"));
    }), TIMEOUT_MS);
});
