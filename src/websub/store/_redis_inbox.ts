/**
 * The Redis store's inbox (docs/websub.md#delivered): each change one Lua script, so that it is
 * atomic on the server, and every time (lease ends, retries) on the Redis server's clock (`TIME`),
 * so that hosts need not agree on the time. Keys, under `<prefix>inbox:`:
 * - `e:<id>`: a hash per delivery (subscription, state, attempts, due, owner, until, received, bytes, meta, body, error, seq);
 * - `all`: every delivery by arrival (`seq`), dead letters included, for `list`;
 * - `sub:<subscription>`: a subscription's pending deliveries by arrival, its head the oldest;
 * - `due`: every pending delivery, scored by when it may be claimed (its retry time, or its lease's end);
 * - `ready`: the head of each subscription only, scored the same way: what an ordered claim takes;
 * - `failed`: the dead letters; `totals`: count and bytes, for the limits; `seq`: the arrival counter.
 */
import { Buffer } from "node:buffer";
import type { Redis } from "ioredis";
import type { ClaimedEntry, DeliveredTo, Inbox, InboxSummary } from "./inbox.ts";

const COMMON = `
local p = KEYS[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function e(id) return p .. 'e:' .. id end
-- The oldest pending delivery of subscription \`sub\` joins 'ready', scored by when it may be claimed.
local function head(sub)
  local ids = redis.call('ZRANGE', p .. 'sub:' .. sub, 0, 0)
  if #ids == 0 then return end
  local h = redis.call('HMGET', e(ids[1]), 'due', 'until')
  redis.call('ZADD', p .. 'ready', math.max(tonumber(h[1]), tonumber(h[2])), ids[1])
end
-- A claimed delivery changes only while \`owner\` holds it.
local function held(id, owner)
  local h = redis.call('HMGET', e(id), 'owner', 'state')
  return h[1] == owner and h[2] == 'pending'
end
-- Sets when it may be claimed next, in both sorted sets it is in.
local function rescore(id, at)
  redis.call('ZADD', p .. 'due', 'XX', at, id)
  redis.call('ZADD', p .. 'ready', 'XX', at, id)
end
local function removed(id, bytes)
  redis.call('HINCRBY', p .. 'totals', 'count', -1)
  redis.call('HINCRBY', p .. 'totals', 'bytes', -bytes)
end
`;

const SCRIPTS = {
  // ARGV: id, subscription, receivedAtMs, bytes, meta, body, maxCount, maxBytes. 1 stored, 0 full.
  inboxAdd: `
local t = redis.call('HMGET', p .. 'totals', 'count', 'bytes')
local count, bytes = tonumber(t[1] or '0'), tonumber(t[2] or '0')
if count + 1 > tonumber(ARGV[7]) or bytes + tonumber(ARGV[4]) > tonumber(ARGV[8]) then return 0 end
local id, sub, at = ARGV[1], ARGV[2], now()
local seq = redis.call('INCR', p .. 'seq')
redis.call('HSET', e(id), 'sub', sub, 'state', 'pending', 'attempts', 0, 'due', at, 'owner', '', 'until', 0,
  'recv', ARGV[3], 'bytes', ARGV[4], 'meta', ARGV[5], 'body', ARGV[6], 'seq', seq)
redis.call('ZADD', p .. 'sub:' .. sub, seq, id)
redis.call('ZADD', p .. 'all', seq, id)
redis.call('ZADD', p .. 'due', at, id)
redis.call('HINCRBY', p .. 'totals', 'count', 1)
redis.call('HINCRBY', p .. 'totals', 'bytes', ARGV[4])
head(sub)
return 1`,
  // ARGV: owner, leaseMs, ordered ('1' or '0'). The delivery claimed, or nil.
  inboxClaim: `
local at = now()
local ids = redis.call('ZRANGEBYSCORE', p .. (ARGV[3] == '1' and 'ready' or 'due'), '-inf', at, 'LIMIT', 0, 1)
if #ids == 0 then return false end
local id = ids[1]
local untilMs = at + tonumber(ARGV[2])
redis.call('HSET', e(id), 'owner', ARGV[1], 'until', untilMs)
local attempts = redis.call('HINCRBY', e(id), 'attempts', 1)
rescore(id, untilMs)
local h = redis.call('HMGET', e(id), 'recv', 'meta', 'body')
return {id, attempts, h[1], h[2], h[3]}`,
  // ARGV: id, owner, leaseMs.
  inboxExtend: `
local id = ARGV[1]
local at = now()
if not held(id, ARGV[2]) or tonumber(redis.call('HGET', e(id), 'until')) <= at then return 0 end
redis.call('HSET', e(id), 'until', at + tonumber(ARGV[3]))
rescore(id, at + tonumber(ARGV[3]))
return 1`,
  // ARGV: id, owner.
  inboxDone: `
local id = ARGV[1]
if not held(id, ARGV[2]) then return 0 end
local h = redis.call('HMGET', e(id), 'sub', 'bytes')
redis.call('DEL', e(id))
redis.call('ZREM', p .. 'sub:' .. h[1], id)
redis.call('ZREM', p .. 'all', id)
redis.call('ZREM', p .. 'due', id)
redis.call('ZREM', p .. 'ready', id)
removed(id, tonumber(h[2]))
head(h[1])
return 1`,
  // ARGV: id, owner, delayMs, error.
  inboxRetry: `
local id = ARGV[1]
if not held(id, ARGV[2]) then return 0 end
local due = now() + tonumber(ARGV[3])
redis.call('HSET', e(id), 'owner', '', 'until', 0, 'due', due, 'err', ARGV[4])
rescore(id, due)
return 1`,
  // ARGV: id, owner, error.
  inboxFail: `
local id = ARGV[1]
if not held(id, ARGV[2]) then return 0 end
local sub = redis.call('HGET', e(id), 'sub')
redis.call('HSET', e(id), 'owner', '', 'until', 0, 'state', 'failed', 'err', ARGV[3])
redis.call('ZREM', p .. 'sub:' .. sub, id)
redis.call('ZREM', p .. 'due', id)
redis.call('ZREM', p .. 'ready', id)
redis.call('SADD', p .. 'failed', id)
head(sub)
return 1`,
  // ARGV: ordered. Milliseconds until something may be claimed, or nil.
  inboxDue: `
local first = redis.call('ZRANGE', p .. (ARGV[1] == '1' and 'ready' or 'due'), 0, 0, 'WITHSCORES')
if #first == 0 then return false end
return math.max(0, tonumber(first[2]) - now())`,
  // pending, failed, bytes.
  inboxStats: `
local t = redis.call('HMGET', p .. 'totals', 'count', 'bytes')
local failed = redis.call('SCARD', p .. 'failed')
return {tonumber(t[1] or '0') - failed, failed, tonumber(t[2] or '0')}`,
  // The server's time, then every delivery without its body, oldest first.
  inboxList: `
local out = {now()}
for _, id in ipairs(redis.call('ZRANGE', p .. 'all', 0, -1)) do
  local h = redis.call('HMGET', e(id), 'sub', 'state', 'attempts', 'due', 'until', 'recv', 'bytes', 'meta', 'err')
  table.insert(out, {id, h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9] or ''})
end
return out`,
  // ARGV: id. A dead letter pending again, due now, at its place in its subscription's order.
  inboxRequeue: `
local id = ARGV[1]
if redis.call('HGET', e(id), 'state') ~= 'failed' then return 0 end
local at = now()
local h = redis.call('HMGET', e(id), 'sub', 'seq')
redis.call('HSET', e(id), 'state', 'pending', 'attempts', 0, 'due', at)
redis.call('SREM', p .. 'failed', id)
redis.call('ZADD', p .. 'sub:' .. h[1], tonumber(h[2]), id)
redis.call('ZADD', p .. 'due', at, id)
-- It may come before the subscription's head: only the oldest stays in 'ready'.
for _, other in ipairs(redis.call('ZRANGE', p .. 'sub:' .. h[1], 1, -1)) do redis.call('ZREM', p .. 'ready', other) end
head(h[1])
return 1`,
  // ARGV: id.
  inboxDrop: `
local id = ARGV[1]
if redis.call('HGET', e(id), 'state') ~= 'failed' then return 0 end
local bytes = tonumber(redis.call('HGET', e(id), 'bytes'))
redis.call('DEL', e(id))
redis.call('ZREM', p .. 'all', id)
redis.call('SREM', p .. 'failed', id)
removed(id, bytes)
return 1`,
} as const;

type ScriptName = keyof typeof SCRIPTS;
type Send = <T>(name: string, send: () => Promise<T>) => Promise<T>;

const decoder = new TextDecoder();
const text = (value: unknown) => (typeof value === "string" ? value : decoder.decode(value as Uint8Array));

/**
 * The inbox on `client`, keys under `keyPrefix`; `command` sends one command and turns its errors
 * into sentences naming the server (the store's own).
 */
export function redisInbox(client: Redis, keyPrefix: string, command: Send): Inbox {
  for (const [name, lua] of Object.entries(SCRIPTS)) client.defineCommand(name, { numberOfKeys: 1, lua: COMMON + lua });
  const prefix = `${keyPrefix}inbox:`;
  // defineCommand adds `name` (replies as strings) and `nameBuffer` (bulk replies as Buffers) to the client.
  const scripts = client as unknown as Record<string, (...args: Array<string | number | Uint8Array>) => Promise<unknown>>;
  const run = (name: ScriptName, ...args: Array<string | number | Uint8Array>) =>
    command(`EVALSHA (${name})`, () => scripts[name]!(prefix, ...args));
  const runBuffer = (name: ScriptName, ...args: Array<string | number>) =>
    command(`EVALSHA (${name})`, () => scripts[`${name}Buffer`]!(prefix, ...args));
  const yes = async (reply: Promise<unknown>) => (await reply) === 1;

  return {
    add: (entry, limits) =>
      yes(run(
        "inboxAdd",
        entry.id,
        entry.subscription.id,
        entry.receivedAtMs,
        entry.body.byteLength,
        JSON.stringify({ subscription: entry.subscription, headers: entry.headers }),
        // ioredis sends a Buffer's bytes as they are; a plain Uint8Array it would turn into text.
        Buffer.from(entry.body.buffer, entry.body.byteOffset, entry.body.byteLength),
        limits.maxCount,
        limits.maxBytes,
      )),
    async claim(owner, leaseMs, ordered) {
      const reply = await runBuffer("inboxClaim", owner, Math.ceil(leaseMs), ordered ? "1" : "0") as
        | [Uint8Array, number, Uint8Array, Uint8Array, Uint8Array]
        | null;
      if (reply === null) return undefined;
      const [id, attempt, received, meta, body] = reply;
      const { subscription, headers } = JSON.parse(text(meta)) as { subscription: DeliveredTo; headers: Record<string, string> };
      return {
        id: text(id),
        subscription,
        headers,
        body: new Uint8Array(body.buffer, body.byteOffset, body.byteLength),
        receivedAtMs: Number(text(received)),
        attempt,
      } satisfies ClaimedEntry;
    },
    extend: (id, owner, leaseMs) => yes(run("inboxExtend", id, owner, Math.ceil(leaseMs))),
    done: (id, owner) => yes(run("inboxDone", id, owner)),
    retry: (id, owner, delayMs, error) => yes(run("inboxRetry", id, owner, Math.ceil(delayMs), error)),
    fail: (id, owner, error) => yes(run("inboxFail", id, owner, error)),
    async nextDueInMs(ordered) {
      const reply = await run("inboxDue", ordered ? "1" : "0") as number | null;
      return reply === null ? undefined : reply;
    },
    async stats() {
      const [pending, failed, bytes] = await run("inboxStats") as [number, number, number];
      return { pending, failed, bytes };
    },
    async list() {
      const [at, ...rows] = await run("inboxList") as [number, ...string[][]];
      return rows.map(([id, sub, state, attempts, due, until, received, bytes, meta, error]): InboxSummary => {
        const failed = state === "failed";
        const untilMs = Number(until);
        return {
          id: id!,
          subscriptionId: sub!,
          topic: (JSON.parse(meta!) as { subscription: DeliveredTo }).subscription.topic,
          state: failed ? "failed" : untilMs > at ? "processing" : "pending",
          attempts: Number(attempts),
          bytes: Number(bytes),
          receivedAtMs: Number(received),
          ...(failed ? {} : { nextAttemptAtMs: Math.max(Number(due), untilMs) }),
          ...(error === "" ? {} : { lastError: error! }),
        };
      });
    },
    requeue: (id) => yes(run("inboxRequeue", id)),
    drop: (id) => yes(run("inboxDrop", id)),
  };
}
