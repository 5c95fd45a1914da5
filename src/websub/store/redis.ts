/**
 * Subscriptions in Redis, shared by the workers of several hosts: one hash (`<prefix>subscriptions`,
 * field id, value the subscription as JSON) and one key per lock (`<prefix>lock:<name>`) that
 * expires on the Redis server's clock, so hosts need not agree on the time. The client is ioredis,
 * on one connection, speaking RESP2; its errors are turned into sentences that name the server
 * (never its password) and the command.
 */
import { MaxRetriesPerRequestError, Redis } from "ioredis";
import { redisInbox } from "./_redis_inbox.ts";
import { parseRedisUrl } from "./_redis_url.ts";
import type { Subscription, SubscriptionStore } from "./types.ts";

/** Options for {@link redisStore}. */
export interface RedisStoreOptions {
  /** Put before every key, so several apps can share one database. @default "websub:" */
  keyPrefix?: string;
  /** How long opening the connection may take, AUTH and SELECT included. @default 5_000 */
  connectTimeoutMs?: number;
  /** How long a command may wait for its reply, connecting included; then it rejects. @default 5_000 */
  commandTimeoutMs?: number;
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

/** Reconnection after a lost connection: 50 ms, doubling, at most 1 s apart. */
const retryDelayMs = (attempt: number) => Math.min(25 * 2 ** attempt, 1_000);

function parse(reply: string | null, id: string): Subscription | undefined {
  if (reply === null) return undefined;
  if (typeof reply !== "string") throw new Error(`Redis returned ${JSON.stringify(reply)} for subscription "${id}", not JSON text`);
  return JSON.parse(reply) as Subscription;
}

/** The command a Redis error reply answered (ioredis sets it, its arguments redacted), if any. */
function repliedTo(error: unknown): string | undefined {
  if (!(error instanceof Error) || error.name !== "ReplyError") return undefined;
  const command = (error as { command?: { name?: unknown } }).command;
  return typeof command?.name === "string" ? command.name.toUpperCase() : undefined;
}

/** Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`) as a subscription store. */
export async function redisStore(url: string, options: RedisStoreOptions = {}): Promise<SubscriptionStore> {
  const { keyPrefix = "websub:", connectTimeoutMs = 5_000, commandTimeoutMs = 5_000 } = options;
  const { host, port, db, username, password, description } = parseRedisUrl(url);
  const client = new Redis({
    host,
    port,
    db,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    // The handshake is AUTH and SELECT, nothing else: RESP2 (no HELLO), no INFO ready check, no
    // CLIENT SETINFO, so that "connecting" means what connectTimeoutMs says.
    protocol: 2,
    enableReadyCheck: false,
    disableClientInfo: true,
    maintNotifications: "disabled",
    lazyConnect: true,
    connectTimeout: connectTimeoutMs,
    commandTimeout: commandTimeoutMs,
    // A lost connection fails what was sent or waiting on it at once (no command is sent twice); one
    // made while it is being opened again waits for that attempt.
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    retryStrategy: retryDelayMs,
  });

  let closing: Promise<void> | undefined;
  /** The last error since the last connection was made: the reason given when it is lost. */
  let lastError: Error | undefined;
  /** A connection has been ready since the last loss was reported. */
  let connected = false;
  /** ioredis fails every command of one loss with one error: all of them get one sentence. */
  let lastLoss: { error: Error; message: string } | undefined;

  client.on("connect", () => (lastError = undefined));
  client.on("ready", () => (connected = repliedTo(lastError) === undefined));
  client.on("error", (error: Error) => {
    lastError = error;
    // ioredis reports a refused SELECT and goes on in database 0: dropping the connection instead
    // fails the commands waiting for it, with the server's reason (see explain()).
    if (repliedTo(error) === "SELECT") client.disconnect(true);
  });

  const closedError = () => new Error(`Redis client for ${description} is closed`);

  function explain(error: Error, name: string): Error {
    if (closing !== undefined) return closedError();
    if (error instanceof MaxRetriesPerRequestError) {
      if (lastLoss?.error !== error) {
        const refused = repliedTo(lastError);
        const reason = lastError?.message ?? "closed by the server";
        lastLoss = {
          error,
          message: refused !== undefined
            ? `Redis at ${description} refused ${refused}: ${reason}`
            : connected
            ? `Connection to Redis at ${description} was lost: ${reason}`
            : `Redis at ${description} is unreachable: ${reason}`,
        };
        connected = false;
      }
      return new Error(lastLoss.message);
    }
    if (error.message === "Command timed out") {
      return new Error(`Redis at ${description} did not answer ${name} within ${commandTimeoutMs}ms`);
    }
    // A refused AUTH fails every command waiting for the connection with the server's words.
    const refused = repliedTo(error);
    if (refused === "AUTH" && name !== "AUTH") return new Error(`Redis at ${description} refused AUTH: ${error.message}`);
    return error;
  }

  /** Sends one command through `send`; its errors say which server and which command. */
  async function command<T>(name: string, send: () => Promise<T>): Promise<T> {
    if (closing !== undefined) throw closedError();
    try {
      return await send();
    } catch (error) {
      throw explain(error as Error, name);
    }
  }

  // Connecting (AUTH and SELECT included) has connectTimeoutMs; the PING after it, commandTimeoutMs
  // from now, as every command has.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tooLong = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Redis at ${description} is unreachable: connecting took longer than ${connectTimeoutMs}ms`)),
      connectTimeoutMs,
    );
  });
  // A connection that fails before it is ready fails the PING too, which says why.
  client.connect().then(() => clearTimeout(timer), () => {});
  const ping = command("PING", () => client.ping());
  try {
    const pong = await Promise.race([ping, tooLong]);
    if (pong !== "PONG") throw new Error(`Redis at ${description} answered PING with ${JSON.stringify(pong)}`);
  } catch (error) {
    ping.catch(() => {});
    client.disconnect();
    // The server's own words (NOAUTH ...) do not say which server.
    if (repliedTo(error) === "PING") throw new Error(`Redis at ${description} refused PING: ${(error as Error).message}`);
    throw error;
  } finally {
    clearTimeout(timer);
  }

  const hash = `${keyPrefix}subscriptions`;
  return {
    description,
    inbox: redisInbox(client, keyPrefix, command),
    get: async (id) => parse(await command("HGET", () => client.hget(hash, id)), id),
    async put(s) {
      await command("HSET", () => client.hset(hash, s.id, JSON.stringify(s)));
    },
    async delete(id) {
      await command("HDEL", () => client.hdel(hash, id));
    },
    async list() {
      // HSCAN may return a field twice across pages; the map keeps one.
      const found = new Map<string, Subscription>();
      let cursor = "0";
      do {
        const [next, fields] = await command("HSCAN", () => client.hscan(hash, cursor, "COUNT", SCAN_COUNT));
        cursor = next;
        for (let i = 0; i < fields.length; i += 2) found.set(fields[i]!, parse(fields[i + 1]!, fields[i]!)!);
      } while (cursor !== "0");
      return [...found.values()];
    },
    async claim(name, owner, ttlMs) {
      if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`Lock ttl "${ttlMs}" is not a positive number of milliseconds`);
      // PX takes whole milliseconds; rounded up so a lock never ends early.
      return await command("EVAL", () => client.eval(CLAIM_SCRIPT, 1, `${keyPrefix}lock:${name}`, owner, Math.ceil(ttlMs))) === 1;
    },
    async release(name, owner) {
      await command("EVAL", () => client.eval(RELEASE_SCRIPT, 1, `${keyPrefix}lock:${name}`, owner));
    },
    // QUIT comes after the commands already sent, so their replies are read; then no reconnection.
    close: () =>
      closing ??= (async () => {
        if (client.status === "ready") await client.quit().catch(() => {});
        client.disconnect();
      })(),
  };
}
