/**
 * WebSockets on the per-connection engine (docs/runtimes.md#deno-websockets-on-the-per-connection-engine).
 *
 * `Deno.upgradeWebSocket` works on a connection served by `serveHttpOnConnection`, but the socket
 * is force-closed as soon as that connection's server finishes, which it does right after the 101:
 * Deno's `serveHttpOn` then calls `op_http_close(rid, false)`, which closes every WebSocket
 * upgraded through that server. Closing the connection's `"http"` resource ourselves first makes
 * that call fail (BadResource, which Deno swallows), and the socket lives. That needs Deno's
 * internal core (`resources()`, `tryClose()`, `createCancelHandle()`), feature-detected here:
 * without it the engine answers an upgrade with the marker's 501.
 */
import type { WSEvents } from "hono/ws";
import { jsonResponse } from "../../src/policy/respond.ts";
import { originalOf } from "../_request_url.ts";
import { type SocketDriver, type SocketEvents, StandardSocketDriver } from "../../src/policy/websocket.ts";

/** What of `Deno[Deno.internal].core` keeping an upgraded socket alive needs. */
export interface DenoCore {
  resources(): Record<string, string>;
  tryClose(rid: number): void;
  /** Adds a resource (a cancel handle) and returns its id: the next id of the resource table. */
  createCancelHandle(): number;
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
      typeof found.createCancelHandle === "function"
    ? found as DenoCore
    : null;
  return core;
}

/** Whether `serveHttpOnConnection` was seen to add its "http" resource where `serveTracked` expects it. */
let layoutChecked: boolean | undefined;

/**
 * Serves one connection with `serve` (a call of `serveHttpOnConnection`) and returns the id of the
 * `"http"` resource it made, or -1 where that cannot be told. Resource ids only grow, and
 * `serveHttpOnConnection` adds that resource synchronously, first: it is the id right after a
 * probe added just before. Checked once by name against `resources()` (which lists every open
 * resource, too much to read per upgrade with thousands open: docs/runtimes.md).
 */
export function serveTracked<T>(found: DenoCore, serve: () => T): { served: T; httpRid: number } {
  if (layoutChecked === false) return { served: serve(), httpRid: -1 };
  const probe = found.createCancelHandle();
  let served: T;
  try {
    served = serve();
  } finally {
    found.tryClose(probe);
  }
  const httpRid = probe + 1;
  if (layoutChecked === undefined) layoutChecked = found.resources()[String(httpRid)] === "http";
  return { served, httpRid: layoutChecked ? httpRid : -1 };
}

/**
 * Closes the connection's `"http"` resource (`serveTracked`), so that the per-connection server's
 * end no longer closes the socket upgraded on it; false where there is none to close.
 */
export function releaseHttp(found: DenoCore, httpRid: number): boolean {
  if (httpRid < 0) return false;
  found.tryClose(httpRid);
  return true;
}

/** A socket the app made itself with `Deno.upgradeWebSocket`, and the handlers it set on it. */
export interface AppUpgrade {
  readonly socket: WebSocket;
  /** The handlers the app set on the socket (`onopen`, ...), for the policy to run as an app's events. */
  readonly events: WSEvents<unknown>;
  /** Gives the socket its handlers back, for Deno to run: the engine does not carry it. */
  release(): void;
}

/** The handler properties Hono's `hono/deno` helper sets on the socket. */
const HANDLERS = ["onopen", "onmessage", "onclose", "onerror"] as const;
type Handlers = Partial<Record<(typeof HANDLERS)[number], ((event: Event) => void) | null>>;

/** Sockets the app made itself, by the 101 it answered with. */
const appUpgrades = new WeakMap<Response, AppUpgrade>();
/** Deno's own `upgradeWebSocket`, once `followAppUpgrades` has put its own in its place. */
let nativeUpgrade: typeof Deno.upgradeWebSocket | undefined;
/** The idleTimeout (s) a socket the app makes gets unless it sets one: the policy's pings. */
let appIdleTimeout = 0;

/**
 * Lets a plain Hono app for Deno keep its own import: Hono's `upgradeWebSocket` from `hono/deno`
 * calls `Deno.upgradeWebSocket` itself, sets `onopen`, `onmessage`, `onclose` and `onerror` on the
 * socket, and answers with its 101. In its place (once per process) goes one that calls Deno's
 * with the policy's `idleTimeout` (unless the app set one), and keeps those four handlers for the
 * policy to run as the app's events, so that the per-connection engine carries the socket like its
 * own (`appUpgradeOf`): the app hears each close once and as on the other engines, where Deno's
 * own events would give it two after its ping timeout (1001, then 1005) and 0 for a client that
 * left (docs/runtimes.md#deno-websockets-on-the-per-connection-engine). Returns Deno's own.
 */
export function followAppUpgrades(idleTimeout: number): typeof Deno.upgradeWebSocket {
  appIdleTimeout = idleTimeout;
  if (nativeUpgrade) return nativeUpgrade;
  const native = nativeUpgrade = Deno.upgradeWebSocket;
  Deno.upgradeWebSocket = function upgradeWebSocket(request, options) {
    const pair = native(originalOf(request), { idleTimeout: appIdleTimeout, ...options });
    const socket = pair.socket;
    const handlers: Handlers = {};
    for (const name of HANDLERS) {
      Object.defineProperty(socket, name, {
        configurable: true,
        get: () => handlers[name] ?? null,
        set: (handler: Handlers[typeof name]) => void (handlers[name] = handler),
      });
    }
    const events: WSEvents<unknown> = {
      onOpen: (event) => handlers.onopen?.call(socket, event),
      onMessage: (event) => handlers.onmessage?.call(socket, event),
      onClose: (event) => handlers.onclose?.call(socket, event),
      onError: (event) => handlers.onerror?.call(socket, event),
    };
    const release = () => {
      for (const name of HANDLERS) {
        delete (socket as unknown as Handlers)[name];
        socket[name] = handlers[name] as never;
      }
    };
    appUpgrades.set(pair.response, { socket, events, release });
    return pair;
  };
  return native;
}

/** What the app made itself for `response` (its 101), if it did. */
export function appUpgradeOf(response: Response): AppUpgrade | undefined {
  return appUpgrades.get(response);
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
  return new DenoSocket(socket);
}

/** Methods on the prototype, one field: no closure per socket. */
class DenoSocket extends StandardSocketDriver<WebSocket> implements SocketDriver {
  readonly ping = undefined;

  send(data: string | ArrayBuffer | Uint8Array): void {
    this.raw.send(data);
  }

  close(code: number, reason: string): void {
    if (this.raw.readyState < WebSocket.CLOSING) this.raw.close(code, reason);
  }

  terminate(): void {
    const socket = this.raw;
    if (socket.readyState === WebSocket.CLOSED) return;
    const rid = socketRid(socket);
    const found = findCore();
    if (rid !== undefined && found) {
      dropped.add(socket);
      found.tryClose(rid);
    } else if (socket.readyState < WebSocket.CLOSING) socket.close(1001, "");
  }
}

/** Reports `socket`'s events to the policy's `events`; `opened` runs first on open, `closed` last on close. */
export function reportEvents(socket: WebSocket, events: SocketEvents, opened: () => void, closed: () => void): void {
  socket.binaryType = "arraybuffer";
  const listener = new SocketListener(socket, events, opened, closed);
  socket.addEventListener("open", listener);
  socket.addEventListener("message", listener);
  socket.addEventListener("error", listener);
  socket.addEventListener("close", listener);
}

/** One listener object for a socket's four events, rather than four closures. */
class SocketListener {
  readonly #socket: WebSocket;
  readonly #events: SocketEvents;
  readonly #opened: () => void;
  readonly #closed: () => void;
  /**
   * Deno fires `error` just before the `close` of a connection that ended without a closing
   * handshake: "Unexpected EOF" for a client's FIN, "Connection reset by peer" for its RST, "No
   * response from ping frame." for its own ping timeout. Those are the close itself (the client
   * left; unresponsive), as the other runtimes report them: only an error that does not come with
   * such a close is the app's onError (and the policy's `error`).
   */
  #pending: unknown;

  constructor(socket: WebSocket, events: SocketEvents, opened: () => void, closed: () => void) {
    this.#socket = socket;
    this.#events = events;
    this.#opened = opened;
    this.#closed = closed;
  }

  handleEvent(event: Event): void {
    switch (event.type) {
      case "message": {
        const data = (event as MessageEvent).data as string | ArrayBuffer;
        this.#events.message(data, typeof data === "string" ? utf8Length(data) : data.byteLength);
        return;
      }
      case "open":
        this.#opened();
        this.#events.open();
        return;
      case "error": {
        const message = (event as ErrorEvent).message;
        const error = (event as ErrorEvent).error ?? new Error(message);
        if (this.#socket.readyState === WebSocket.CLOSED || message === PING_TIMEOUT_REASON) this.#pending = error;
        else this.#events.error(error);
        return;
      }
      case "close": {
        const { code, reason } = event as CloseEvent;
        this.#closed();
        const abnormal = code === 0 || code === 1006;
        const pingTimeout = code === 1001 && reason === PING_TIMEOUT_REASON;
        if (this.#pending !== undefined && !abnormal && !pingTimeout) this.#events.error(this.#pending);
        // A connection that ended without a closing handshake (the client's FIN or RST, which Deno
        // reports as code 0, or our drop) is 1006, as the other runtimes and the standard say.
        this.#events.close(abnormal || dropped.has(this.#socket) ? 1006 : code, reason);
      }
    }
  }
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
