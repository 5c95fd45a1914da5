/**
 * A WebSocket client over a raw TCP socket (node:net, so it runs under `bun test` as under Node),
 * for the behaviour a browser's or a library's client hides: whether it answers pings, whether it
 * reads at all, frames of any size or shape, and how it leaves (a close frame, FIN, or RST).
 * Everything it reads is recorded with its arrival time.
 */
import { createHash, randomBytes } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";

/** Frame opcodes (RFC 6455 §5.2). */
export const OP = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

/** The GUID the server hashes the key with (RFC 6455 §1.3). */
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** One frame read, with when it arrived. */
export interface Frame {
  readonly opcode: number;
  readonly fin: boolean;
  readonly payload: Buffer;
  readonly at: number;
}

/** One whole message read (fragments joined), with when its last fragment arrived. */
export interface Message {
  readonly type: "text" | "binary";
  readonly data: Buffer;
  readonly at: number;
  /** The first fragment's arrival, and how many frames it came in. */
  readonly firstAt: number;
  readonly frames: number;
}

/** The close frame the server sent: its code (1005 when it had none) and reason. */
export interface CloseFrame {
  readonly code: number;
  readonly reason: string;
  readonly at: number;
}

export interface WsOptions {
  /** Answer each ping with a pong carrying its payload, as any client must. @default true */
  answerPings?: boolean;
  /** Answer the server's close frame with one of our own (the closing handshake). @default true */
  answerClose?: boolean;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** How long the TCP connect and the handshake may take together. @default 5_000 */
  timeoutMs?: number;
}

/** The server's answer to an upgrade request: its status line, headers and whatever followed the head. */
export interface HandshakeAnswer {
  readonly status: number;
  readonly head: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** `n` bytes of a masked frame header: FIN, opcode, MASK, and the length in its shortest form. */
function frameHeader(opcode: number, length: number, fin: boolean, mask: Buffer): Buffer {
  const first = (fin ? 0x80 : 0) | opcode;
  let header: Buffer;
  if (length < 126) {
    header = Buffer.from([first, 0x80 | length]);
  } else if (length < 65_536) {
    header = Buffer.alloc(4);
    header[0] = first;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = first;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  return Buffer.concat([header, mask]);
}

/** `payload` masked with `mask` (a client's frames are always masked, RFC 6455 §5.3). */
function masked(payload: Buffer, mask: Buffer): Buffer {
  const out = Buffer.allocUnsafe(payload.length);
  for (let i = 0; i < payload.length; i++) out[i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

/** A close frame's payload: the code, then the reason in UTF-8. */
export function closePayload(code: number, reason = ""): Buffer {
  const out = Buffer.alloc(2 + Buffer.byteLength(reason));
  out.writeUInt16BE(code, 0);
  out.write(reason, 2);
  return out;
}

/**
 * One WebSocket connection, after a 101. `frames`, `messages`, `pings` and `close` hold what the
 * server sent, each with its arrival time; `ended` is when the TCP connection closed.
 */
export class WsClient {
  readonly socket: Socket;
  readonly handshake: HandshakeAnswer;
  /** When the 101 arrived. */
  readonly openedAt: number;
  readonly frames: Frame[] = [];
  readonly messages: Message[] = [];
  readonly pings: Frame[] = [];
  readonly pongs: Frame[] = [];
  close: CloseFrame | null = null;
  /** When this client sent its close frame (its own, or its answer to the server's). */
  closeSentAt: number | null = null;
  /** When the TCP connection closed (null while open). */
  endedAt: number | null = null;
  error: Error | null = null;
  /** Bytes of frame data read so far (heads included). */
  bytesRead = 0;
  answerPings: boolean;
  answerClose: boolean;
  readonly ended: Promise<number>;
  #buffer: Buffer;
  #fragments: Frame[] = [];
  #waiters = new Set<() => void>();

  constructor(socket: Socket, handshake: HandshakeAnswer, rest: Buffer, openedAt: number, options: WsOptions) {
    this.socket = socket;
    this.handshake = handshake;
    this.openedAt = openedAt;
    this.answerPings = options.answerPings ?? true;
    this.answerClose = options.answerClose ?? true;
    this.#buffer = rest;
    this.ended = new Promise((resolve) => {
      socket.on("close", () => {
        this.endedAt = Date.now();
        this.#wake();
        resolve(this.endedAt);
      });
    });
    socket.on("data", (chunk: Buffer) => {
      this.bytesRead += chunk.length;
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#parse();
    });
    socket.on("error", (error) => {
      this.error = error;
    });
    this.#parse();
  }

  #wake(): void {
    for (const wake of this.#waiters) wake();
  }

  #parse(): void {
    for (;;) {
      const buf = this.#buffer;
      if (buf.length < 2) break;
      const fin = (buf[0]! & 0x80) !== 0;
      const opcode = buf[0]! & 0x0f;
      const isMasked = (buf[1]! & 0x80) !== 0;
      let length = buf[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buf.length < 4) break;
        length = buf.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buf.length < 10) break;
        length = Number(buf.readBigUInt64BE(2));
        offset = 10;
      }
      const maskAt = offset;
      if (isMasked) offset += 4;
      if (buf.length < offset + length) break;
      let payload = buf.subarray(offset, offset + length);
      if (isMasked) payload = masked(payload, buf.subarray(maskAt, maskAt + 4));
      this.#buffer = buf.subarray(offset + length);
      this.#frame({ opcode, fin, payload: Buffer.from(payload), at: Date.now() });
    }
    this.#wake();
  }

  #frame(frame: Frame): void {
    this.frames.push(frame);
    switch (frame.opcode) {
      case OP.ping:
        this.pings.push(frame);
        if (this.answerPings && this.closeSentAt === null) this.sendFrame(OP.pong, frame.payload);
        return;
      case OP.pong:
        this.pongs.push(frame);
        return;
      case OP.close: {
        const code = frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005;
        this.close = { code, reason: frame.payload.subarray(2).toString("utf8"), at: frame.at };
        if (this.answerClose && this.closeSentAt === null) this.sendClose(code === 1005 ? 1000 : code);
        return;
      }
      default: {
        this.#fragments.push(frame);
        if (!frame.fin) return;
        const [first] = this.#fragments;
        this.messages.push({
          type: first!.opcode === OP.text ? "text" : "binary",
          data: Buffer.concat(this.#fragments.map((f) => f.payload)),
          at: frame.at,
          firstAt: first!.at,
          frames: this.#fragments.length,
        });
        this.#fragments = [];
      }
    }
  }

  /** Sends one masked frame; `declaredLength` announces more payload than is sent (the rest may follow with `write`). */
  sendFrame(opcode: number, payload: Buffer | string = Buffer.alloc(0), options: { fin?: boolean; declaredLength?: number } = {}): void {
    const data = typeof payload === "string" ? Buffer.from(payload) : payload;
    const mask = randomBytes(4);
    const header = frameHeader(opcode, options.declaredLength ?? data.length, options.fin ?? true, mask);
    this.socket.write(Buffer.concat([header, masked(data, mask)]));
  }

  /** Sends a whole message: a string as text, bytes as binary. */
  send(data: string | Buffer): void {
    this.sendFrame(typeof data === "string" ? OP.text : OP.binary, data);
  }

  /** Sends `data` as a message in `parts` fragments. */
  sendFragmented(data: string | Buffer, parts: number): void {
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    const size = Math.ceil(bytes.length / parts);
    for (let i = 0; i < parts; i++) {
      const opcode = i === 0 ? (typeof data === "string" ? OP.text : OP.binary) : OP.continuation;
      this.sendFrame(opcode, bytes.subarray(i * size, (i + 1) * size), { fin: i === parts - 1 });
    }
  }

  ping(payload: string | Buffer = ""): void {
    this.sendFrame(OP.ping, payload);
  }

  /** Starts the closing handshake (or answers the server's). */
  sendClose(code = 1000, reason = ""): void {
    this.closeSentAt = Date.now();
    this.sendFrame(OP.close, closePayload(code, reason));
  }

  /** Stops reading: the kernel's buffers fill up and the server's writes back up, as with a client that stalled. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Leaves without a close frame: FIN. */
  destroy(): void {
    this.socket.destroy();
  }

  /** Leaves with a TCP reset, as a crashed client or a load balancer would. */
  reset(): void {
    if (!this.socket.destroyed) this.socket.resetAndDestroy();
  }

  /** Resolves with the time `test` first held; rejects after `timeoutMs`, or once the connection closed without it. */
  waitFor(test: (client: this) => boolean, timeoutMs: number, what: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const check = () => {
        if (test(this)) {
          cleanup();
          resolve(Date.now());
        } else if (this.endedAt !== null) {
          cleanup();
          reject(new Error(`connection closed before ${what}; ${this.summary()}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${what} within ${timeoutMs}ms; ${this.summary()}`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  /** The `n`th message (1-based), once it has arrived. */
  async waitForMessage(n: number, timeoutMs: number): Promise<Message> {
    await this.waitFor((c) => c.messages.length >= n, timeoutMs, `message ${n}`);
    return this.messages[n - 1]!;
  }

  /** The server's close frame, once it has arrived (and before the connection ends). */
  async waitForCloseFrame(timeoutMs: number): Promise<CloseFrame> {
    await this.waitFor((c) => c.close !== null, timeoutMs, "a close frame");
    return this.close!;
  }

  /** Resolves with when the TCP connection closed; rejects if it is still open after `timeoutMs`. */
  waitForEnd(timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs}ms; ${this.summary()}`)), timeoutMs);
      void this.ended.then((at) => {
        clearTimeout(timer);
        resolve(at);
      });
    });
  }

  /** What was read so far, for failure messages. */
  summary(): string {
    const close = this.close ? `close ${this.close.code} ${JSON.stringify(this.close.reason)}` : "no close frame";
    return `read ${this.messages.length} messages, ${this.pings.length} pings, ${close}, ${this.bytesRead} bytes; ${
      this.endedAt === null ? "open" : "ended"
    }`;
  }
}

/** The request head of an upgrade to `path` with `key`. */
export function upgradeHead(path: string, key: string, headers: Record<string, string> = {}): string {
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;
}

/** The Sec-WebSocket-Accept a server must answer `key` with. */
export function acceptFor(key: string): string {
  return createHash("sha1").update(key + GUID).digest("base64");
}

/** Parses a response head (through its blank line). */
function parseHead(head: string): HandshakeAnswer {
  const [statusLine, ...lines] = head.split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? "")?.[1] ?? 0), head, headers };
}

/**
 * Sends an upgrade request to `path` and reads the answer's head. On a 101 with the right
 * Sec-WebSocket-Accept, resolves with the open connection; any other answer resolves with it and
 * the bytes read after its head (a refused upgrade's body), the socket closed.
 */
export function tryUpgrade(
  port: number,
  path: string,
  options: WsOptions = {},
): Promise<{ ws: WsClient; answer: HandshakeAnswer } | { ws: null; answer: HandshakeAnswer; body: string }> {
  const timeoutMs = options.timeoutMs ?? 5_000;
  const key = randomBytes(16).toString("base64");
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    let read = Buffer.alloc(0);
    let answer: HandshakeAnswer | undefined;
    const timer = setTimeout(
      () => fail(new Error(`no handshake answer from port ${port} within ${timeoutMs}ms; read: ${read.toString("latin1")}`)),
      timeoutMs,
    );
    const fail = (error: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      read = Buffer.concat([read, chunk]);
      if (answer) return;
      const end = read.indexOf("\r\n\r\n");
      if (end < 0) return;
      answer = parseHead(read.subarray(0, end).toString("latin1"));
      const rest = read.subarray(end + 4);
      if (answer.status !== 101) {
        // Read the refusal's body until the server closes, or briefly if it keeps the connection.
        const done = () => {
          clearTimeout(timer);
          clearTimeout(linger);
          socket.destroy();
          resolve({ ws: null, answer: answer!, body: read.subarray(end + 4).toString("utf8") });
        };
        const linger = setTimeout(done, 300);
        socket.once("close", done);
        return;
      }
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("error", failed);
      if (answer.headers["sec-websocket-accept"] !== acceptFor(key)) {
        socket.destroy();
        return reject(
          new Error(`Sec-WebSocket-Accept ${answer.headers["sec-websocket-accept"]} does not match the key; head: ${answer.head}`),
        );
      }
      resolve({ ws: new WsClient(socket, answer, Buffer.from(rest), Date.now(), options), answer });
    };
    // A reset or a broken pipe before the answer is a close before it, however the kernel says it.
    const failed = (error: Error) => fail(new Error(`connection closed before a handshake answer (${error.message})`));
    socket.on("data", onData);
    socket.once("error", failed);
    socket.once("close", () => {
      if (!answer) fail(new Error(`connection closed before a handshake answer; read: ${JSON.stringify(read.toString("latin1"))}`));
    });
    socket.once("connect", () => socket.write(upgradeHead(path, key, options.headers)));
  });
}

/** Opens a WebSocket to `path` on 127.0.0.1:`port`; rejects unless the server answers 101 with the right accept. */
export async function openWebSocket(port: number, path: string, options: WsOptions = {}): Promise<WsClient> {
  const result = await tryUpgrade(port, path, options);
  if (result.ws === null) {
    throw new Error(`upgrade to ${path} answered ${result.answer.status}: ${result.answer.head}\r\n\r\n${result.body}`);
  }
  return result.ws;
}
