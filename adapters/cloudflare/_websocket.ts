/**
 * The app's WebSockets on Cloudflare Workers: the upgrade the app asked for (`upgradeWebSocket`'s marked
 * `501`) made with a `WebSocketPair`, its server end driven by the policy core
 * (src/policy/websocket.ts). What Cloudflare Workers' WebSocket offers, measured on local workerd, and what the
 * platform owns instead, is in docs/policy.md#cloudflare-workers-workerd.
 */
import { jsonResponse } from "../../src/policy/respond.ts";
import type { SocketDriver, SocketEvents, Upgrade, WebSockets } from "../../src/policy/websocket.ts";

/** Cloudflare Workers' server-side WebSocket, as far as the adapter uses it (the project has no @cloudflare/workers-types). */
export interface WorkersWebSocket extends EventTarget {
  accept(): void;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  binaryType: string;
  readonly bufferedAmount: number;
  readonly readyState: number;
  readonly protocol: string | null;
}

/** How workerd words a WebSocket protocol error (its own close): the code and the reason sent. */
const PROTOCOL_ERROR = /protocolError\.statusCode = (\d+); protocolError\.description = (.*)$/;
/** How workerd words a connection lost without a close frame, just before its close event (1006). */
const LOST = /Network connection lost/;
/** How long a socket that errored gets for its close event before the error stands for it. */
const CLOSE_EVENT_WAIT_MS = 1_000;

type WebSocketPairClass = new () => { 0: WorkersWebSocket; 1: WorkersWebSocket };

/**
 * The app's WebSocket, as Cloudflare Workers makes one: a `WebSocketPair`, whose server end is accepted here
 * and handed to the policy, and a `101` carrying the client end. Undefined where there is no
 * `WebSocketPair` (a worker run outside workerd): the app's `501` is the answer then.
 */
export function upgraded(websockets: WebSockets, upgrade: Upgrade): Response | undefined {
  const Pair = (globalThis as { WebSocketPair?: WebSocketPairClass }).WebSocketPair;
  if (!Pair) return undefined;
  // workerd answers a handshake it cannot complete itself (426, 400), after the worker's 101: the
  // app's socket would open and never close. Refused here first, as workerd would.
  const refused = badHandshake(upgrade.request);
  if (refused) return refused;
  const { 0: client, 1: server } = new Pair();
  server.accept();
  attach(websockets, upgrade, server);
  return new Response(null, { status: 101, webSocket: client } as ResponseInit);
}

/**
 * Hands `socket`, accepted, to the policy: its driver, and its events reported to the policy.
 * What Cloudflare Workers' WebSocket lacks (docs/policy.md#cloudflare-workers-workerd): no ping (workerd
 * answers a client's pings itself and sends none), and no way to drop a connection.
 */
export function attach(websockets: WebSockets, upgrade: Upgrade, socket: WorkersWebSocket): SocketEvents {
  // Binary messages as ArrayBuffer, as on every engine (workerd's default is Blob from this compatibility date).
  socket.binaryType = "arraybuffer";
  let closed = false;
  const reportClose = (code: number, reason: string) => {
    if (closed) return;
    closed = true;
    events.close(code, reason);
  };
  const driver: SocketDriver = {
    send: (data) => socket.send(data),
    close(code, reason) {
      if (socket.readyState >= 2) return;
      socket.close(code, reason);
    },
    // Cloudflare Workers cannot drop a connection: the socket is given up as closed (1006), and the platform
    // ends the connection once the client or the network does.
    terminate: () => reportClose(1006, ""),
    ping: undefined,
    get bufferedAmount() {
      return socket.bufferedAmount;
    },
    get readyState() {
      return socket.readyState as SocketDriver["readyState"];
    },
    raw: socket,
    protocol: socket.protocol,
  };
  const events = websockets.accept(upgrade, driver);
  socket.addEventListener("message", (event) => {
    const data = (event as MessageEvent<string | ArrayBuffer>).data;
    events.message(data, typeof data === "string" ? utf8Length(data) : data.byteLength);
  });
  socket.addEventListener("close", (event) => {
    const { code, reason } = event as CloseEvent;
    reportClose(code, reason);
  });
  socket.addEventListener("error", (event) => {
    // workerd reports a lost connection after its close event too: the socket is the policy's no longer.
    if (closed) return;
    const error = (event as ErrorEvent).error ?? new Error((event as ErrorEvent).message);
    const message = String((error as Error | undefined)?.message);
    // A client gone without a close frame: the close event that follows says so (1006), as on
    // every engine, and it is no error of the app's.
    if (!LOST.test(message)) events.error(error);
    // workerd's own message limit (32 MiB) closes the socket with 1009 and reports only this error.
    const protocol = PROTOCOL_ERROR.exec(message);
    if (protocol) reportClose(Number(protocol[1]), protocol[2]!);
    // Any other: the close event follows (a lost connection: 1006), or, should none, this stands for it.
    else setTimeout(() => socket.readyState === 3 && reportClose(1006, ""), CLOSE_EVENT_WAIT_MS);
  });
  events.open();
  return events;
}

/** What workerd would answer, after the worker, to an upgrade request it cannot complete; undefined for a good one. */
function badHandshake(request: Request): Response | undefined {
  if (request.headers.get("sec-websocket-version") !== "13") {
    const body = { error: "upgrade_required", message: "This server speaks WebSocket version 13: send Sec-WebSocket-Version: 13" };
    return jsonResponse(body, 426, { "sec-websocket-version": "13" });
  }
  if (!request.headers.get("sec-websocket-key")) {
    return jsonResponse({ error: "bad_request", message: "A WebSocket upgrade needs a Sec-WebSocket-Key header" }, 400);
  }
  return undefined;
}

/** The size of `text` in UTF-8, without encoding it. */
function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      // A surrogate pair: two UTF-16 units, four bytes.
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 2;
        i++;
        continue;
      }
    }
    if (code >= 0x800) bytes += 2;
    else if (code >= 0x80) bytes += 1;
  }
  return bytes;
}
