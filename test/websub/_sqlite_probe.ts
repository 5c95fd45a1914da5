/**
 * Test fixture run as a child on Node, Bun and Deno (store.test.ts); prints one JSON line.
 * `put <file> <id>`: puts a subscription with every field, then prints the runtime and the ids the file holds.
 * `hold <file> <ms>`: holds the file's write lock for `ms`, printing `{"held":true}` once it has it.
 */
import process from "node:process";
import { sqliteStore } from "../../src/websub/store/sqlite.ts";

const [mode, path, arg] = process.argv.slice(2);
if (path === undefined || arg === undefined) {
  throw new Error(`Usage: _sqlite_probe.ts put|hold <file> <id|ms>, got "${process.argv.slice(2).join(" ")}"`);
}
const runtime = process.versions.bun !== undefined ? "bun" : process.versions.deno !== undefined ? "deno" : "node";
// Bun and Deno report the Node version they mimic in process.version.
const version = process.versions.bun ?? process.versions.deno ?? process.version;

if (mode === "put") {
  const store = await sqliteStore(path);
  try {
    await store.put({
      id: arg,
      source: `https://example.com/feed/${arg}?as=configured`,
      origin: "manual",
      unsubscribe: true,
      topic: `https://example.com/${arg}`,
      hub: "https://hub.example.com/",
      callbackUrl: `https://app.example.com/websub/${arg}`,
      secret: `secret-${arg}`,
      state: "active",
      pending: "subscribe",
      leaseSeconds: 86_400,
      expiresAtMs: 1_900_000_000_000,
      nextAttemptAtMs: 1_899_000_000_000,
      failures: 2,
      updatedAtMs: 1_800_000_000_000,
    });
    const ids = (await store.list()).map((s) => s.id).sort();
    console.log(JSON.stringify({ runtime, version, ids, got: await store.get(arg) }));
  } finally {
    await store.close();
  }
} else if (mode === "hold") {
  // Opened through the store first, so the file is in WAL mode as it is in use.
  await (await sqliteStore(path)).close();
  const { DatabaseSync } = await import("node:sqlite");
  const db = new DatabaseSync(path);
  db.exec("BEGIN IMMEDIATE");
  console.log(JSON.stringify({ held: true }));
  // Blocks this process, as a slow writer would; Atomics.wait is the one synchronous sleep on all three runtimes.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(arg));
  db.exec("COMMIT");
  db.close();
} else {
  throw new Error(`Unknown mode "${mode}": use put or hold`);
}
