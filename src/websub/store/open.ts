/**
 * Turns a store spec (`WEBSUB_STORE`) into a store: `memory`, `redis://...`, or a SQLite file path.
 * Only the chosen store's module is loaded, so a deployment on memory never loads node:sqlite.
 */
import { resolve } from "node:path";
import process from "node:process";
import { parseRedisUrl } from "./_redis_url.ts";
import { memoryStore, type SubscriptionStore } from "./types.ts";

/** A validated store spec: what {@link parseStoreSpec} returns and {@link openStore} opens. */
export type StoreSpec =
  | { kind: "memory" }
  /** `url` as given, credentials included; print `description` instead. */
  | { kind: "redis"; url: string; description: string }
  /** `path` is absolute, resolved against the current directory. */
  | { kind: "sqlite"; path: string };

const FORMS = "use memory, redis://[user:password@]host[:port][/db] or a file path for SQLite";

/**
 * Parses a store spec; throws a sentence naming what is allowed and never containing a password,
 * so it can be a valibot issue through `fromParser(parseStoreSpec)`.
 */
export function parseStoreSpec(spec: string): StoreSpec {
  const text = spec.trim();
  if (text === "") throw new Error(`"${spec}" is empty: ${FORMS}`);
  if (text === "memory") return { kind: "memory" };
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text)?.[1]?.toLowerCase();
  if (scheme === "redis" || scheme === "rediss") {
    // parseRedisUrl refuses rediss: with a sentence of its own.
    return { kind: "redis", url: text, description: parseRedisUrl(text).description };
  }
  if (scheme !== undefined) {
    // Other URLs may carry credentials too: only the scheme is quoted.
    throw new Error(`"${scheme}://..." is not a store: ${FORMS}`);
  }
  return { kind: "sqlite", path: resolve(process.cwd(), text) };
}

/** Opens the store a spec names (see {@link parseStoreSpec}); the SQLite and Redis modules load only when chosen. */
export async function openStore(spec: string | StoreSpec): Promise<SubscriptionStore> {
  const parsed = typeof spec === "string" ? parseStoreSpec(spec) : spec;
  switch (parsed.kind) {
    case "memory":
      return memoryStore();
    case "redis": {
      const { redisStore } = await import("./redis.ts");
      return redisStore(parsed.url);
    }
    case "sqlite": {
      const { sqliteStore } = await import("./sqlite.ts");
      return sqliteStore(parsed.path);
    }
  }
}
