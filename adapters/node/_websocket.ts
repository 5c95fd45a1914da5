import { type IncomingMessage, type Server, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import { type RawData, type WebSocket, WebSocketServer } from "ws";
import type { Config } from "../../src/policy/config.ts";
import { INTERNAL_ERROR } from "../../src/policy/errors.ts";
import { isTrackedStream, reportClientGone } from "../../src/policy/lifecycle.ts";
import type { Logger } from "../../src/policy/log.ts";
import type { FetchHandler } from "../../src/policy/types.ts";
import type { SendOptions } from "hono/ws";
import { honoBunUpgrade } from "../../src/policy/upgrade.ts";
import { pathOf } from "../../src/policy/url.ts";
import {
  type SocketDriver,
  type SocketEvents,
  StandardSocketDriver,
  type Upgrade,
  upgradeOf,
  type WebSockets,
} from "../../src/policy/websocket.ts";

/**
 * WebSockets on node:http (Node's, Bun's and Deno's), with the `ws` package: an upgrade request
 * arrives on the server's 'upgrade' event with its raw socket, goes through the whole request path
 * (probes, lifecycle, app) as a Request, and if the app's route asked for a WebSocket
 * (`upgradeOf`), `ws` completes the handshake and the socket is handed to the policy
 * (`WebSockets.accept`); any other answer (404, 401, 503 after the shutdown signal) is written to
 * the socket as a complete HTTP/1.1 response that closes it.
 *
 * node:http forgets an upgraded socket: its idle, head and request deadlines no longer apply,
 * and neither closeIdleConnections() nor closeAllConnections() closes it. The policy closes it
 * (1001 at shutdown, dropped at SHUTDOWN_TIMEOUT); `taken` is what the engine's drain must leave
 * alone and its cut must drop.
 */
export interface NodeWebSockets {
  /** Sockets taken by an upgrade, from the 'upgrade' event until they close: answering, handshaking or a WebSocket. */
  readonly taken: ReadonlySet<Socket>;
  /** Upgrade requests whose answer is not decided yet (the request path is still running). */
  pending(): number;
  /** Drops every taken socket; returns how many upgrade requests it cut before their answer. */
  cut(): number;
}

/**
 * node:http's `shouldUpgradeCallback` for a server that will carry WebSockets (every runtime's
 * node:http has it: Node 22.23 and 24.9+, Bun, Deno): only an upgrade to a WebSocket leaves the
 * request path, and the server's 'upgrade' listener is added at the first one, not before:
 * node:http reads it only for upgrades. A bisect once put 7% of Node's `POST /echo` CPU on that
 * listener, which a later A/B of this change did not reproduce (1.001, 0.985-1.075:
 * bench/README.md#the-request-path-after-this-sessions-work-19-20-21).
 */
export function lazyUpgrades(): LazyUpgrades {
  let listen: (() => void) | undefined;
  return {
    shouldUpgrade(incoming) {
      if (!isWebSocketUpgrade(incoming)) return false;
      listen?.();
      listen = undefined;
      return true;
    },
    listen(server, listener) {
      listen = () => server.on("upgrade", listener);
    },
  };
}

export interface LazyUpgrades {
  /** node:http's `shouldUpgradeCallback`. */
  shouldUpgrade(incoming: IncomingMessage): boolean;
  /** The 'upgrade' listener of `server`, added at its first WebSocket upgrade. */
  listen(server: Server, listener: UpgradeListener): void;
}

type UpgradeListener = (incoming: IncomingMessage, socket: Socket, head: Buffer) => void;

/** Only an upgrade to a WebSocket is taken from the request path (node:http's `shouldUpgradeCallback`). */
const isWebSocketUpgrade = (incoming: IncomingMessage): boolean => incoming.headers.upgrade?.toLowerCase() === "websocket";

/** How long a socket answered without an upgrade may linger half-closed before it is destroyed. */
const ANSWER_LINGER_MS = 1_000;

/** Response headers that describe the connection, not the answer: the raw answer sets its own. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "content-length",
  "upgrade",
  "proxy-connection",
  "te",
  "trailer",
]);

const SLASH = 47;

/**
 * The Request for an upgrade, as @hono/node-server would build it for an ordinary request: the
 * target made trustworthy first (`target`: absolute form, TRUST_PROXY), the Host checked, every
 * header kept. An upgrade carries no body the request path could read.
 */
function upgradeRequest(incoming: IncomingMessage): Request {
  const target = incoming.url ?? "/";
  let url: string;
  if (target.charCodeAt(0) === SLASH) {
    const host = incoming.headers.host;
    if (!host) throw new Error("Missing host header");
    const backslash = target.indexOf("\\");
    if (backslash !== -1 && (target.indexOf("?") === -1 || backslash < target.indexOf("?"))) throw new Error("Backslash in request path");
    const parsed = new URL(`http://${host}${target}`);
    if (parsed.hostname !== (host.includes(":") ? host.replace(/:\d+$/, "") : host).toLowerCase()) throw new Error("Invalid host header");
    url = parsed.href;
  } else {
    url = new URL(target).href;
  }
  const headers = new Headers();
  const raw = incoming.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  return new Request(url, { method: incoming.method ?? "GET", headers });
}

/** A complete HTTP/1.1 head for `response`, closing the connection; `length` when the body's size is known. */
function rawHead(response: Response, length: number | undefined): string {
  const status = response.status;
  let head = `HTTP/1.1 ${status} ${response.statusText || STATUS_CODES[status] || ""}\r\n`;
  response.headers.forEach((value, name) => {
    if (!HOP_BY_HOP.has(name) && name !== "set-cookie") head += `${name}: ${value}\r\n`;
  });
  for (const cookie of response.headers.getSetCookie()) head += `set-cookie: ${cookie}\r\n`;
  if (length !== undefined) head += `content-length: ${length}\r\n`;
  return `${head}connection: close\r\n\r\n`;
}

/** Half-closes after the answer, and destroys a moment later: a client that keeps sending would otherwise hold it. */
function endSocket(socket: Socket, data?: string | Uint8Array): void {
  if (data === undefined) socket.end();
  else socket.end(data);
  setTimeout(() => socket.destroy(), ANSWER_LINGER_MS).unref();
}

/** Why a 101 the app made itself is refused on node:http (docs/policy.md#websockets). */
const UNSUPPORTED_101 =
  "the app upgraded with its runtime's own call, which this engine cannot carry: use upgradeWebSocket from src/policy/realtime.ts, which works on every engine";

/** A JSON answer of node:http's own kind, for an upgrade request the request path could not take. */
function rawJson(socket: Socket, status: number, body: object): void {
  const text = JSON.stringify(body);
  endSocket(
    socket,
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${
      Buffer.byteLength(text)
    }\r\nconnection: close\r\n\r\n${text}`,
  );
}

/** Writes the app's answer to an upgrade request it did not upgrade, as a whole response on the raw socket. */
async function writeAnswer(socket: Socket, response: Response, method: string | undefined): Promise<void> {
  const status = response.status;
  if (method === "HEAD" || status === 204 || status === 304 || response.body === null) {
    await response.body?.cancel();
    endSocket(socket, rawHead(response, method === "HEAD" || status === 204 || status === 304 ? undefined : 0));
    return;
  }
  if (!isTrackedStream(response)) {
    const body = new Uint8Array(await response.arrayBuffer());
    socket.write(rawHead(response, body.byteLength));
    endSocket(socket, body);
    return;
  }
  // A stream: delimited by the close, cancelled if the client leaves (the lifecycle hears it).
  const reader = response.body.getReader();
  const cancel = () => void reader.cancel().catch(() => {});
  socket.once("close", cancel);
  socket.write(rawHead(response, undefined));
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || socket.destroyed) break;
      if (!socket.write(value)) await new Promise((resolve) => socket.once("drain", resolve).once("close", resolve));
    }
  } finally {
    socket.off("close", cancel);
  }
  endSocket(socket);
}

/** `ws`'s send options when the app asks for no compression (a new object per send otherwise). */
const UNCOMPRESSED = { compress: false } as const;
const COMPRESSED = { compress: true } as const;

/** The policy's view of one `ws` socket: methods on the prototype, one field. */
class NodeSocket extends StandardSocketDriver<WebSocket> implements SocketDriver {
  send(data: string | ArrayBuffer | Uint8Array, options?: SendOptions): void {
    this.raw.send(data, options?.compress ? COMPRESSED : UNCOMPRESSED);
  }

  close(code: number, reason: string): void {
    this.raw.close(code, reason);
  }

  terminate(): void {
    this.raw.terminate();
  }

  ping(): void {
    this.raw.ping();
  }
}

/** A whole message as the app's handlers get it: text as a string, binary as an ArrayBuffer. */
function messageOf(data: RawData, isBinary: boolean): string | ArrayBuffer {
  const buffer = data as Buffer;
  if (!isBinary) return buffer.toString("utf8");
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer;
}

/** Where a `ws` socket keeps the policy's events: the listeners below are shared, not closures per socket. */
const EVENTS = Symbol("events");
type Attached = WebSocket & { [EVENTS]: SocketEvents };

function onMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  (this as Attached)[EVENTS].message(messageOf(data, isBinary), (data as Buffer).byteLength);
}

function onPong(this: WebSocket): void {
  (this as Attached)[EVENTS].pong();
}

function onError(this: WebSocket, error: Error & { code?: string }): void {
  // Over maxPayload: ws has sent 1009 and closes; the policy's close, not the app's error.
  if (error.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") (this as Attached)[EVENTS].tooBig();
  else (this as Attached)[EVENTS].error(error);
}

function onClose(this: WebSocket, code: number, reason: Buffer): void {
  (this as Attached)[EVENTS].close(code, reason.toString("utf8"));
}

/**
 * Carries WebSockets on `server`: its 'upgrade' requests go through `fetch`, and those the app
 * upgrades become policy WebSockets in `websockets`.
 */
export function carryWebSockets(
  server: Server,
  fetch: FetchHandler,
  config: Config,
  logger: Logger,
  websockets: WebSockets,
  target: (incoming: IncomingMessage) => void,
  upgrades: LazyUpgrades,
): NodeWebSockets {
  // ws refuses a larger message from its frame header, before buffering it: close 1009.
  const wss = new WebSocketServer({ noServer: true, clientTracking: false, maxPayload: config.websocketMaxMessageBytes });
  const taken = new Set<Socket>();
  /** Sockets whose upgrade request is not answered yet, with the request once it is made. */
  const answering = new Map<Socket, Request | undefined>();
  const ignore = () => {};
  // One listener for every taken socket, not a closure per socket: a closure made here would keep
  // the upgrade's IncomingMessage and Request (its scope) for the WebSocket's life.
  function onTakenClose(this: Socket): void {
    taken.delete(this);
    const request = answering.get(this);
    // Gone before the answer: the lifecycle hears it as from any client that leaves early.
    if (answering.delete(this) && request) reportClientGone(request);
  }

  const attach = (ws: WebSocket, upgrade: Upgrade) => {
    (ws as Attached)[EVENTS] = websockets.accept(upgrade, new NodeSocket(ws));
    ws.on("message", onMessage);
    ws.on("pong", onPong);
    ws.on("error", onError);
    ws.on("close", onClose);
    (ws as Attached)[EVENTS].open();
  };

  upgrades.listen(server, (incoming: IncomingMessage, socket: Socket, head: Buffer) => {
    // node:http took its listeners off the socket: an error (a reset) would otherwise be thrown.
    socket.on("error", ignore);
    taken.add(socket);
    answering.set(socket, undefined);
    socket.on("close", onTakenClose);
    let request: Request;
    try {
      target(incoming);
      request = upgradeRequest(incoming);
      answering.set(socket, request);
    } catch (error) {
      answering.delete(socket);
      rawJson(socket, 400, { error: "bad_request", message: `The upgrade request is not valid (${(error as Error).message})` });
      return;
    }
    const answered = request;
    let honoBun: Upgrade | undefined;
    void (async () => {
      let response: Response;
      try {
        response = await fetch(answered, {
          incoming,
          outgoing: undefined,
          // Bun.serve's `server.upgrade`, as Hono's own helper from hono/bun calls it on `c.env`:
          // an app written for Bun.serve keeps its import on the node:http engines too.
          upgrade(_request: Request, options?: { data?: unknown }) {
            honoBun = honoBunUpgrade(options?.data, answered);
            return honoBun !== undefined;
          },
        });
      } catch (error) {
        // The lifecycle answers every error itself; this is a bug in the path, still answered.
        logger.error("response_failed", { error });
        answering.delete(socket);
        if (!socket.destroyed) rawJson(socket, 500, INTERNAL_ERROR);
        return;
      }
      if (!answering.delete(socket) || socket.destroyed) {
        await response.body?.cancel().catch(() => {});
        return;
      }
      const upgrade = upgradeOf(response) ?? honoBun;
      if (!upgrade && response.status === 101) {
        // The app upgraded with a runtime's own call (hono/deno's Deno.upgradeWebSocket on
        // deno-node-http): a socket this engine cannot carry. Said, rather than a 101 and a close.
        await response.body?.cancel().catch(() => {});
        const path = pathOf(answered.url);
        logger.error("websocket_unsupported", { path, message: UNSUPPORTED_101 });
        rawJson(socket, 501, { error: "websocket_unsupported", message: `${path}: ${UNSUPPORTED_101}` });
        return;
      }
      if (!upgrade) {
        await writeAnswer(socket, response, incoming.method).catch((error: unknown) => {
          logger.error("response_failed", { error });
          socket.destroy();
        });
        return;
      }
      // ws answers a handshake it refuses (a bad Sec-WebSocket-Key or version) with 400 itself.
      wss.handleUpgrade(incoming, socket, head, (ws) => attach(ws, upgrade));
    })();
  });

  return {
    taken,
    pending: () => answering.size,
    cut() {
      const cut = answering.size;
      for (const socket of taken) socket.destroy();
      return cut;
    },
  };
}
