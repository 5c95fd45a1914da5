import type { ServerWebSocket, WebSocketHandler } from "bun";
import type { Config } from "../../src/policy/config.ts";
import type { Logger } from "../../src/policy/log.ts";
import { pathOf } from "../../src/policy/url.ts";
import { honoBunUpgrade } from "../../src/policy/upgrade.ts";
import type { SocketDriver, SocketEvents, Upgrade, WebSockets } from "../../src/policy/websocket.ts";

/**
 * What an upgraded socket carries from `server.upgrade()` to Bun's handlers: the upgrade until the
 * socket opens (then let go, so its Request is not kept for the socket's life), its events after.
 */
export interface SocketData {
  upgrade: Upgrade | undefined;
  events: SocketEvents | undefined;
  /** The upgrade's URL, for the log of a handler's error. */
  url: string;
}

type Socket = ServerWebSocket<SocketData>;

/**
 * The reason Bun's `close` handler gets when its `maxPayloadLength` closed the socket: the client
 * gets a close frame with 1009, the handler 1006 with this reason.
 */
const TOO_BIG_REASON = "Received too big message";
/** The close code the client saw for that (RFC 6455: message too big). */
const TOO_BIG_CODE = 1009;
/** What a socket whose handler threw is closed with (RFC 6455: internal error). */
const INTERNAL_ERROR = 1011;

/** One Bun ServerWebSocket as the policy drives it. */
class BunSocket implements SocketDriver {
  readonly raw: Socket;
  /** Bun answers with the first subprotocol the client offers, and does not say which on the socket. */
  readonly protocol: string | null;
  /** Whether the last send may have left something queued: else bufferedAmount is 0 without asking Bun. */
  #queued = true;
  constructor(ws: Socket, protocol: string | null) {
    this.raw = ws;
    this.protocol = protocol;
  }

  ping(): void {
    this.raw.ping();
  }

  // Bun's send returns the bytes sent when the message went out whole with nothing queued, -1 once
  // it waits (backpressure) and 0 once it dropped it, which happens only when more than
  // backpressureLimit (= WEBSOCKET_MAX_BUFFERED) was already queued: the policy closes the socket
  // after the send that takes it over the limit, before that.
  send(data: string | ArrayBuffer | Uint8Array, options?: { compress?: boolean }): void {
    this.#queued = this.raw.send(data, options?.compress) <= 0;
  }

  close(code: number, reason: string): void {
    this.raw.close(code, reason);
  }

  terminate(): void {
    this.raw.terminate();
  }

  get bufferedAmount(): number {
    return this.#queued ? this.raw.getBufferedAmount() : 0;
  }

  get readyState(): 0 | 1 | 2 | 3 {
    return this.raw.readyState;
  }
}

const UNSUPPORTED = "a WebSocket upgraded by code other than upgradeWebSocket (src/policy/realtime.ts or hono/bun) has no events to run";

/**
 * What a plain Hono app for Bun writes, Hono's own `upgradeWebSocket` from `hono/bun`, calls Bun's
 * `server.upgrade` itself (the server is the app's `c.env` here) with the app's events in the
 * socket's data: it reaches the same handlers as ours and is put under the same policy.
 */
function fromHonoBun(data: SocketData): Upgrade | undefined {
  const url = (data as unknown as { url: unknown }).url;
  if (!(url instanceof URL)) return undefined;
  const protocol = (data as unknown as { protocol?: unknown }).protocol;
  const headers: Record<string, string> = typeof protocol === "string" && protocol ? { "sec-websocket-protocol": protocol } : {};
  const upgrade = honoBunUpgrade(data, new Request(url, { headers }));
  data.url = url.href;
  return upgrade;
}

/**
 * Bun.serve's `websocket` option: its own limits set so they do not fight the policy's, and its
 * events handed to `websockets`.
 * - idleTimeout 0 (and so no `sendPings`): the policy's sweep pings and closes a silent socket
 *   (Bun's own timer would close it at about twice its timeout, with 1006 and no close frame);
 * - maxPayloadLength WEBSOCKET_MAX_MESSAGE: Bun refuses a larger message with 1009 before it is
 *   buffered whole, and reports 1006 to the handler: the reason tells it apart (`too_big`);
 * - backpressureLimit WEBSOCKET_MAX_BUFFERED, closeOnBackpressureLimit false: Bun drops a send only
 *   when more than its limit is queued already, and the policy closes the socket (1008) as soon as
 *   a send takes it over ours, so no message is dropped silently.
 */
export function bunWebSocket(config: Config, websockets: WebSockets, logger: Logger): WebSocketHandler<SocketData> {
  return {
    idleTimeout: 0,
    sendPings: false,
    maxPayloadLength: config.websocketMaxMessageBytes,
    backpressureLimit: config.websocketMaxBufferedBytes,
    closeOnBackpressureLimit: false,
    open(ws) {
      // Binary messages reach the app as ArrayBuffer, as on the other runtimes.
      ws.binaryType = "arraybuffer";
      const data = ws.data;
      const upgrade = data.upgrade ?? fromHonoBun(data);
      if (!upgrade) {
        // Some other code called Bun's server.upgrade with data of its own: no events to run.
        data.events = undefined;
        logger.error("websocket_unsupported", { path: pathOf(String(data.url)), message: UNSUPPORTED });
        return ws.close(INTERNAL_ERROR, "upgrade not made by upgradeWebSocket");
      }
      data.upgrade = undefined;
      const protocol = upgrade.request.headers.get("sec-websocket-protocol")?.split(",")[0]?.trim() || null;
      const events = websockets.accept(upgrade, new BunSocket(ws, protocol));
      data.events = events;
      events.open();
    },
    message(ws, received) {
      // An ArrayBuffer when binary (binaryType, set at open), whatever the declared type says.
      // Bun refused a larger one already (maxPayloadLength): its size is not counted again.
      ws.data.events?.message(received as string | ArrayBuffer, 0);
    },
    pong(ws) {
      ws.data.events?.pong();
    },
    // A client's ping shows it is there as its pong would (Bun answers it by itself).
    ping(ws) {
      ws.data.events?.pong();
    },
    close(ws, code, reason) {
      const events = ws.data.events;
      if (!events) return;
      if (code === 1006 && reason === TOO_BIG_REASON) code = TOO_BIG_CODE;
      // Bun runs this handler inside `ws.close()` when the server closes: the policy hears of the
      // close once its own call has returned, as on the other runtimes.
      queueMicrotask(() => events.close(code, reason));
    },
    // One of the handlers above threw (the app's onOpen or onMessage): the app's onError hears of
    // it, and the socket, in a state nobody knows, is closed with 1011 (counted `error`).
    error(error, ws) {
      logger.error("handler_error", { path: pathOf(ws.data.url), error });
      try {
        ws.data.events?.error(error);
      } finally {
        ws.close(INTERNAL_ERROR, "internal error");
      }
    },
  };
}
