/**
 * Subscriptions in Redis, shared by the workers of several hosts: one hash (`<prefix>subscriptions`,
 * field id, value the subscription as JSON) and one key per lock (`<prefix>lock:<name>`) that
 * expires on the Redis server's clock, so hosts need not agree on the time.
 */
import { connectResp, type RespClientOptions, type RespReply } from "./_resp.ts";
import type { Subscription, SubscriptionStore } from "./types.ts";

/** Options for {@link redisStore}. */
export interface RedisStoreOptions extends RespClientOptions {
  /** Put before every key, so several apps can share one database. @default "websub:" */
  keyPrefix?: string;
}

// Atomic on the server: take the lock when it is free (or has expired, which Redis does by
// itself), extend it when `owner` already holds it, refuse otherwise.
const CLAIM_SCRIPT = `
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`;

// Deletes the lock only while `owner` holds it: one that expired and was taken by another stays.
const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
`;

/** How many hash fields one HSCAN asks for: small replies, and no long command that blocks Redis. */
const SCAN_COUNT = 500;

function parse(reply: RespReply, id: string): Subscription | undefined {
  if (reply === null) return undefined;
  if (typeof reply !== "string") throw new Error(`Redis returned ${JSON.stringify(reply)} for subscription "${id}", not JSON text`);
  return JSON.parse(reply) as Subscription;
}

/** Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`) as a subscription store. */
export async function redisStore(url: string, options: RedisStoreOptions = {}): Promise<SubscriptionStore> {
  const { keyPrefix = "websub:", ...clientOptions } = options;
  const client = await connectResp(url, clientOptions);
  const hash = `${keyPrefix}subscriptions`;
  return {
    description: client.target.description,
    get: async (id) => parse(await client.command(["HGET", hash, id]), id),
    async put(s) {
      await client.command(["HSET", hash, s.id, JSON.stringify(s)]);
    },
    async delete(id) {
      await client.command(["HDEL", hash, id]);
    },
    async list() {
      // HSCAN may return a field twice across pages; the map keeps one.
      const found = new Map<string, Subscription>();
      let cursor = "0";
      do {
        const reply = await client.command(["HSCAN", hash, cursor, "COUNT", SCAN_COUNT]) as [string, string[]];
        cursor = reply[0];
        const fields = reply[1];
        for (let i = 0; i < fields.length; i += 2) found.set(fields[i]!, parse(fields[i + 1]!, fields[i]!)!);
      } while (cursor !== "0");
      return [...found.values()];
    },
    async claim(name, owner, ttlMs) {
      if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`Lock ttl "${ttlMs}" is not a positive number of milliseconds`);
      // PX takes whole milliseconds; rounded up so a lock never ends early.
      return await client.command(["EVAL", CLAIM_SCRIPT, 1, `${keyPrefix}lock:${name}`, owner, Math.ceil(ttlMs)]) === 1;
    },
    async release(name, owner) {
      await client.command(["EVAL", RELEASE_SCRIPT, 1, `${keyPrefix}lock:${name}`, owner]);
    },
    close: () => client.close(),
  };
}
