/**
 * A minimal Redis client over node:net speaking RESP2 (https://redis.io/docs/latest/develop/reference/protocol-spec/):
 * enough for the subscription store, with no npm dependency. Commands are pipelined on one
 * connection and their replies matched in order; every command has a deadline; a lost connection
 * is opened again by the next command.
 */
import { connect as netConnect, type Socket } from "node:net";
import { Buffer } from "node:buffer";

/** One reply: a simple or bulk string, an integer, nil, or an array; an error inside an array stays an `Error`. */
export type RespReply = string | number | null | Error | RespReply[];

/** An error reply from the server; the message is the server's (`WRONGPASS invalid username-password pair ...`). */
export class RedisReplyError extends Error {
  override name = "RedisReplyError";
}

/** Where a `redis://` URL points, with its credentials kept apart from its printable form. */
export interface RedisTarget {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  /** The URL without the password: `redis://host:6379/0` or `redis://user:***@host:6379/0`. */
  description: string;
}

/** Options for {@link connectResp}. */
export interface RespClientOptions {
  /** How long opening a connection may take, AUTH and SELECT included. @default 5_000 */
  connectTimeoutMs?: number;
  /** How long a command may wait for its reply, connecting included; then it rejects and the connection is reset. @default 5_000 */
  commandTimeoutMs?: number;
}

const URL_FORM = "use redis://[user:password@]host[:port][/db]";

// For text that is not a URL: everything between the scheme and the last "@" may be a password.
function redactText(text: string): string {
  const scheme = text.indexOf("://");
  const at = text.lastIndexOf("@");
  return scheme >= 0 && at > scheme ? `${text.slice(0, scheme + 3)}***${text.slice(at)}` : text;
}

/** Parses `redis://[user:password@]host[:port][/db]`; throws a sentence that never contains the password. */
export function parseRedisUrl(url: string): RedisTarget {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`"${redactText(url)}" is not a Redis URL: ${URL_FORM}`);
  }
  const username = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = parsed.port === "" ? 6379 : Number(parsed.port);
  const dbText = parsed.pathname.replace(/^\//, "");
  const db = dbText === "" ? 0 : Number(dbText);
  // A lone user part may well be a password written as redis://secret@host, so it is hidden too.
  const auth = password !== "" ? `${username}:***@` : username !== "" ? "***@" : "";
  const description = `${parsed.protocol}//${auth}${parsed.host.replace(/:\d+$/, "")}:${port}/${dbText === "" ? 0 : dbText}`;
  if (parsed.protocol === "rediss:") {
    throw new Error(
      `"${description}" asks for TLS, which this Redis client does not support: use redis:// on a private network or through a TLS tunnel`,
    );
  }
  if (parsed.protocol !== "redis:") throw new Error(`"${description}" is not a Redis URL: ${URL_FORM}`);
  if (host === "") throw new Error(`"${description}" has no host: ${URL_FORM}`);
  if (!/^\d+$/.test(dbText) && dbText !== "") {
    throw new Error(`"${description}" has database "${dbText}": use a number, e.g. redis://host:6379/0`);
  }
  if (parsed.search !== "" || parsed.hash !== "") {
    throw new Error(`"${description}" has a query or fragment, which is not read: ${URL_FORM}`);
  }
  if (username !== "" && password === "") throw new Error(`"${description}" has a user but no password: ${URL_FORM}`);
  return {
    host,
    port,
    db,
    ...(username !== "" ? { username } : {}),
    ...(password !== "" ? { password } : {}),
    description: description,
  };
}

/** Encodes one command as a RESP array of bulk strings. */
export function encodeCommand(args: readonly (string | number)[]): string {
  let out = `*${args.length}\r\n`;
  for (const arg of args) {
    const text = String(arg);
    out += `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
  }
  return out;
}

const INCOMPLETE = Symbol("incomplete");

/** Cuts a byte stream into replies; `next()` returns INCOMPLETE until a whole reply has arrived. */
export class ReplyParser {
  #buffer: Buffer = Buffer.alloc(0);
  #offset = 0;

  push(chunk: Uint8Array): void {
    this.#buffer = this.#offset < this.#buffer.length ? Buffer.concat([this.#buffer.subarray(this.#offset), chunk]) : Buffer.from(chunk);
    this.#offset = 0;
  }

  /** The next whole reply, or INCOMPLETE; throws on bytes that are not RESP2. */
  next(): RespReply | typeof INCOMPLETE {
    const parsed = this.#parse(this.#offset);
    if (parsed === INCOMPLETE) return INCOMPLETE;
    this.#offset = parsed[1];
    return parsed[0];
  }

  // Replies here are small (the store reads the hash in HSCAN pages), so an incomplete one is
  // simply parsed again from its start when more bytes arrive.
  #parse(start: number): [RespReply, number] | typeof INCOMPLETE {
    const buffer = this.#buffer;
    const lineEnd = buffer.indexOf("\r\n", start);
    if (lineEnd < 0) return INCOMPLETE;
    const type = String.fromCharCode(buffer[start]!);
    const line = buffer.toString("utf8", start + 1, lineEnd);
    const after = lineEnd + 2;
    switch (type) {
      case "+":
        return [line, after];
      case "-":
        return [new RedisReplyError(line), after];
      case ":":
        return [Number(line), after];
      case "$": {
        const length = Number(line);
        if (length === -1) return [null, after];
        if (!Number.isInteger(length) || length < 0) throw new Error(`bulk string length "${line}" is not a length`);
        if (buffer.length < after + length + 2) return INCOMPLETE;
        return [buffer.toString("utf8", after, after + length), after + length + 2];
      }
      case "*": {
        const count = Number(line);
        if (count === -1) return [null, after];
        if (!Number.isInteger(count) || count < 0) throw new Error(`array length "${line}" is not a length`);
        const items: RespReply[] = [];
        let offset = after;
        for (let i = 0; i < count; i++) {
          const item = this.#parse(offset);
          if (item === INCOMPLETE) return INCOMPLETE;
          items.push(item[0]);
          offset = item[1];
        }
        return [items, offset];
      }
      default:
        throw new Error(`reply type "${type}" is unknown (only RESP2 is spoken here)`);
    }
  }
}

interface Pending {
  /** The command's name, for error messages; never its arguments, which may hold secrets. */
  name: string;
  payload: string;
  resolve(reply: RespReply): void;
  reject(error: Error): void;
  timer?: ReturnType<typeof setTimeout>;
}

/** A Redis connection that opens again on demand; see {@link connectResp}. */
export class RespClient {
  readonly target: RedisTarget;
  readonly #connectTimeoutMs: number;
  readonly #commandTimeoutMs: number;
  #socket: Socket | undefined;
  /** True once the socket is connected and AUTH and SELECT have succeeded. */
  #ready = false;
  /** Commands waiting for a connection, in order. */
  #waiting: Pending[] = [];
  /** Commands written to the socket, in the order their replies will come. */
  #inflight: Pending[] = [];
  #parser = new ReplyParser();
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(target: RedisTarget, options: RespClientOptions = {}) {
    this.target = target;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 5_000;
  }

  /** Sends one command; resolves with its reply, rejects with the server's error or when no reply comes in time. */
  command(args: readonly (string | number)[]): Promise<RespReply> {
    return this.pipeline([args])[0]!;
  }

  /** Sends several commands in one write, without waiting for replies in between; one promise per command, in order. */
  pipeline(commands: readonly (readonly (string | number)[])[]): Promise<RespReply>[] {
    const batch: Pending[] = [];
    const promises = commands.map((args) =>
      new Promise<RespReply>((resolve, reject) => {
        const name = String(args[0]).toUpperCase();
        if (this.#closed) return reject(new Error(`Redis client for ${this.target.description} is closed`));
        const pending: Pending = { name, payload: encodeCommand(args), resolve, reject };
        pending.timer = setTimeout(() => this.#expire(pending), this.#commandTimeoutMs);
        batch.push(pending);
      })
    );
    if (batch.length === 0) return promises;
    if (this.#ready) {
      this.#write(batch);
    } else {
      this.#waiting.push(...batch);
      this.#connect();
    }
    return promises;
  }

  /** Waits for commands already sent, then closes the connection; later commands reject. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      const error = new Error(`Redis client for ${this.target.description} is closed`);
      this.#fail(this.#waiting.splice(0), error);
      // Bounded: every command in flight has a timer that resets the connection.
      await Promise.allSettled(this.#inflight.map((pending) =>
        new Promise<void>((done) => {
          const { resolve, reject } = pending;
          pending.resolve = (reply) => (resolve(reply), done());
          pending.reject = (error) => (reject(error), done());
        })
      ));
      const socket = this.#socket;
      if (socket === undefined) return;
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      this.#lose(socket, error);
      await closed;
    })();
    return this.#closing;
  }

  #write(batch: Pending[]): void {
    this.#inflight.push(...batch);
    this.#socket!.write(batch.map((p) => p.payload).join(""));
  }

  #fail(pendings: Pending[], error: Error): void {
    for (const pending of pendings) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }

  /**
   * Gives up `socket` at once, failing what was sent on it or waited for it: done here rather than
   * on its "close" event, so that a command issued before that event opens a new connection.
   */
  #lose(socket: Socket, error: Error): void {
    if (socket !== this.#socket) return;
    this.#socket = undefined;
    this.#ready = false;
    this.#fail(this.#inflight.splice(0), error);
    this.#fail(this.#waiting.splice(0), error);
    socket.destroy();
  }

  #expire(pending: Pending): void {
    const { description } = this.target;
    const waiting = this.#waiting.indexOf(pending);
    const noAnswer = `${pending.name} got no reply within ${this.#commandTimeoutMs}ms`;
    pending.reject(new Error(`Redis at ${description} did not answer ${pending.name} within ${this.#commandTimeoutMs}ms`));
    if (waiting >= 0) {
      this.#waiting.splice(waiting, 1);
    } else if (this.#socket !== undefined) {
      // A late reply would be matched to the next command, so the connection cannot be used again.
      this.#lose(this.#socket, new Error(`Connection to Redis at ${description} was reset: ${noAnswer}`));
    }
  }

  #connect(): void {
    if (this.#socket !== undefined) return;
    const { host, port, db, username, password, description } = this.target;
    const socket = netConnect({ host, port });
    this.#socket = socket;
    this.#parser = new ReplyParser();
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    let lastError: Error | undefined;
    const timer = setTimeout(() => {
      this.#lose(socket, new Error(`Redis at ${description} is unreachable: connecting took longer than ${this.#connectTimeoutMs}ms`));
    }, this.#connectTimeoutMs);
    socket.on("error", (error) => (lastError = error));
    socket.on("data", (chunk: Buffer) => this.#onData(socket, chunk));
    socket.on("close", () => {
      clearTimeout(timer);
      const reason = lastError?.message ?? "closed by the server";
      this.#lose(
        socket,
        new Error(
          this.#ready ? `Connection to Redis at ${description} was lost: ${reason}` : `Redis at ${description} is unreachable: ${reason}`,
        ),
      );
    });
    socket.on("connect", () => {
      const handshake: (string | number)[][] = [];
      if (password !== undefined) handshake.push(username === undefined ? ["AUTH", password] : ["AUTH", username, password]);
      if (db !== 0) handshake.push(["SELECT", db]);
      let left = handshake.length;
      const ready = () => {
        clearTimeout(timer);
        this.#ready = true;
        const waiting = this.#waiting.splice(0);
        if (waiting.length > 0) this.#write(waiting);
      };
      if (left === 0) return ready();
      this.#write(handshake.map((args) => ({
        name: String(args[0]),
        payload: encodeCommand(args),
        resolve: () => {
          if (--left === 0) ready();
        },
        reject: (error) => {
          // Only the server's answer is a refusal; a lost connection fails the commands itself.
          if (error instanceof RedisReplyError) {
            this.#lose(socket, new Error(`Redis at ${description} refused ${args[0]}: ${error.message}`, { cause: error }));
          }
        },
      })));
    });
  }

  #onData(socket: Socket, chunk: Buffer): void {
    if (socket !== this.#socket) return;
    this.#parser.push(chunk);
    // A reply may have given up the socket (a refused AUTH): what follows it is not read.
    while (socket === this.#socket) {
      let reply: RespReply | typeof INCOMPLETE;
      try {
        reply = this.#parser.next();
      } catch (error) {
        this.#lose(socket, new Error(`Redis at ${this.target.description} sent bytes that are not RESP2: ${(error as Error).message}`));
        return;
      }
      if (reply === INCOMPLETE) return;
      const pending = this.#inflight.shift();
      if (pending === undefined) {
        this.#lose(socket, new Error(`Redis at ${this.target.description} sent a reply to no command`));
        return;
      }
      clearTimeout(pending.timer);
      if (reply instanceof RedisReplyError) pending.reject(reply);
      else pending.resolve(reply);
    }
  }
}

/** Connects to the Redis at `url` and checks it answers (PING); rejects with the reason, never with the password. */
export async function connectResp(url: string, options: RespClientOptions = {}): Promise<RespClient> {
  const client = new RespClient(parseRedisUrl(url), options);
  try {
    const pong = await client.command(["PING"]);
    if (pong !== "PONG") throw new Error(`Redis at ${client.target.description} answered PING with ${JSON.stringify(pong)}`);
  } catch (error) {
    await client.close();
    // The server's own words (NOAUTH ...) do not say which server.
    if (error instanceof RedisReplyError) {
      throw new Error(`Redis at ${client.target.description} refused PING: ${error.message}`, { cause: error });
    }
    throw error;
  }
  return client;
}
