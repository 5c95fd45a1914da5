/**
 * WebSockets on the per-connection engine (docs/runtimes.md#deno-websockets-on-the-per-connection-engine).
 *
 * `Deno.upgradeWebSocket` works on a connection served by `serveHttpOnConnection`, but the socket
 * is force-closed as soon as that connection's server finishes, which it does right after the 101:
 * Deno's `serveHttpOn` then calls `op_http_close(rid, false)`, which closes every WebSocket
 * upgraded through that server. Closing the connection's `"http"` resource ourselves when the
 * socket opens makes that call fail (BadResource, which Deno swallows), and the socket lives.
 * That needs Deno's internal core (`resources()`, `tryClose()`, `internalRidSymbol`), feature-
 * detected here: without it the engine answers an upgrade with the marker's 501.
 */
import { jsonResponse } from "../../src/policy/respond.ts";
import type { SocketDriver, SocketEvents } from "../../src/policy/websocket.ts";

/** What of `Deno[Deno.internal].core` keeping an upgraded socket alive needs. */
export interface DenoCore {
  resources(): Record<string, string>;
  tryClose(rid: number): void;
  readonly internalRidSymbol: symbol;
}

let core: DenoCore | null | undefined;

/** Deno's internal core, or null when this Deno does not expose what the keep-alive needs. */
export function findCore(): DenoCore | null {
  if (core !== undefined) return core;
  const internal = (Deno as unknown as Record<symbol, { core?: Partial<DenoCore> } | undefined>)[
    (Deno as unknown as { internal: symbol }).internal
  ];
  const found = internal?.core;
  core = found && typeof found.resources === "function" && typeof found.tryClose === "function" &&
      typeof found.internalRidSymbol === "symbol"
    ? found as DenoCore
    : null;
  return core;
}

/** The resource id of an accepted connection, or -1 where Deno does not say. */
export function ridOf(conn: Deno.Conn, found: DenoCore | null): number {
  const rid = found ? (conn as unknown as Record<symbol, unknown>)[found.internalRidSymbol] : undefined;
  return typeof rid === "number" ? rid : -1;
}

/**
 * Closes the `"http"` resource `serveHttpOnConnection` made for the connection `connRid`: the first
 * one after it and before `beforeRid` (the next connection accepted). Connections are accepted one
 * at a time and each is served as soon as it is accepted, so exactly that resource lies between the
 * two; none there means it is already gone (and the socket with it), and nothing is closed.
 */
export function releaseHttp(found: DenoCore, connRid: number, beforeRid: number): boolean {
  if (connRid < 0) return false;
  let rid = Infinity;
  for (const [key, name] of Object.entries(found.resources())) {
    const n = Number(key);
    if (name === "http" && n > connRid && n < beforeRid && n < rid) rid = n;
  }
  if (rid === Infinity) return false;
  found.tryClose(rid);
  return true;
}

/** The close Deno sends, and reports, when a pinged client answers nothing within idleTimeout. */
export const PING_TIMEOUT_REASON = "No response from ping frame.";

/**
 * Deno's `idleTimeout` (seconds) for a ping interval: Deno pings after half of it without a frame and
 * closes after the whole. Like the policy's sweep, a twentieth of an interval early, so that a
 * silent client is gone within two intervals, never after: a ping at 0.975, a close at 1.95.
 */
export function idleTimeoutOf(pingIntervalMs: number): number {
  if (pingIntervalMs === 0) return 0;
  return (2 * pingIntervalMs - Math.max(Math.floor(pingIntervalMs / 20), 10)) / 1000;
}

/** The socket's resource id: Deno keeps it under a private symbol named `[[rid]]`. */
function socketRid(socket: WebSocket): number | undefined {
  for (const symbol of Object.getOwnPropertySymbols(socket)) {
    if (symbol.description === "[[rid]]") {
      const rid = (socket as unknown as Record<symbol, unknown>)[symbol];
      return typeof rid === "number" ? rid : undefined;
    }
  }
  return undefined;
}

/** Sockets the engine dropped: Deno reports their close as 1005, a close without a code received. */
const dropped = new WeakSet<WebSocket>();

/**
 * The driver of a Deno server socket. Deno has no ping() (it pings by itself, `idleTimeout`) and
 * no terminate(): dropping the socket's resource closes the TCP connection without a close frame
 * (the client sees 1006); where that resource cannot be found, a close frame 1001 is all it can do.
 */
export function denoDriver(socket: WebSocket): SocketDriver {
  return {
    send: (data) => socket.send(data),
    close(code, reason) {
      if (socket.readyState < WebSocket.CLOSING) socket.close(code, reason);
    },
    terminate() {
      if (socket.readyState === WebSocket.CLOSED) return;
      const rid = socketRid(socket);
      const found = findCore();
      if (rid !== undefined && found) {
        dropped.add(socket);
        found.tryClose(rid);
      } else if (socket.readyState < WebSocket.CLOSING) socket.close(1001, "");
    },
    ping: undefined,
    get bufferedAmount() {
      return socket.bufferedAmount;
    },
    get readyState() {
      return socket.readyState as 0 | 1 | 2 | 3;
    },
    raw: socket,
    get protocol() {
      return socket.protocol;
    },
  };
}

/** Reports `socket`'s events to the policy's `events`; `opened` runs first on open, `closed` last on close. */
export function reportEvents(socket: WebSocket, events: SocketEvents, opened: () => void, closed: () => void): void {
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    opened();
    events.open();
  });
  socket.addEventListener("message", (event) => {
    const data = event.data as string | ArrayBuffer;
    events.message(data, typeof data === "string" ? utf8Length(data) : data.byteLength);
  });
  // Deno fires `error` just before the `close` of a connection that ended without a closing
  // handshake: "Unexpected EOF" for a client's FIN, "Connection reset by peer" for its RST, "No
  // response from ping frame." for its own ping timeout. Those are the close itself (the client
  // left; unresponsive), as the other runtimes report them: only an error that does not come with
  // such a close is the app's onError (and the policy's `error`).
  let pending: unknown;
  socket.addEventListener("error", (event) => {
    const message = (event as ErrorEvent).message;
    const error = (event as ErrorEvent).error ?? new Error(message);
    if (socket.readyState === WebSocket.CLOSED || message === PING_TIMEOUT_REASON) pending = error;
    else events.error(error);
  });
  socket.addEventListener("close", (event) => {
    closed();
    const abnormal = event.code === 0 || event.code === 1006;
    const pingTimeout = event.code === 1001 && event.reason === PING_TIMEOUT_REASON;
    if (pending !== undefined && !abnormal && !pingTimeout) events.error(pending);
    // A connection that ended without a closing handshake (the client's FIN or RST, which Deno
    // reports as code 0, or our drop) is 1006, as the other runtimes and the standard say.
    events.close(abnormal || dropped.has(socket) ? 1006 : event.code, event.reason);
  });
}

/** An upgrade Deno refused (a request that is not a valid WebSocket handshake). */
export function badUpgrade(error: unknown): Response {
  return jsonResponse({ error: "bad_request", message: `Not a WebSocket upgrade: ${(error as Error)?.message ?? error}` }, 400, {
    connection: "close",
  });
}

/** The UTF-8 size of a text message, as it came on the wire. */
function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c <= 0xdbff) {
      // A surrogate pair: two code units, four bytes.
      bytes += 2;
      i++;
    } else bytes += 2;
  }
  return bytes;
}
