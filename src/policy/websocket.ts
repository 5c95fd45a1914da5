/**
 * WebSockets under one policy on every engine (docs/policy.md#websockets).
 *
 * `upgradeWebSocket` has Hono's signature and is the same import on every runtime: it answers an
 * upgrade request with a marked response, and the engine that carries the request performs the
 * upgrade its runtime's way (`ws` on node:http, Bun.serve's `server.upgrade`, `Deno.upgradeWebSocket`,
 * Cloudflare Workers' `WebSocketPair`) and hands the socket to `WebSockets.accept`, which holds the policy:
 * - WEBSOCKET_PING_INTERVAL: a socket quiet for an interval is pinged; one that answers nothing
 *   within another is closed (`unresponsive`), so a vanished client is gone within two intervals;
 * - WEBSOCKET_MAX_MESSAGE: a larger message closes it with 1009 (`too_big`), before it is buffered
 *   whole where the runtime can tell (its own limit is set to ours);
 * - WEBSOCKET_MAX_BUFFERED: once that much waits for a client that does not read, it is closed
 *   with 1008 (`slow_reader`) instead of growing the server's memory;
 * - shutdown: 1001 `server shutting down` to every socket at step 5, dropped at SHUTDOWN_TIMEOUT;
 *   an upgrade after the signal gets 503.
 */
import type { Context } from "hono";
import { defineWebSocketHelper, type SendOptions, WSContext, type WSEvents, type WSReadyState } from "hono/ws";
import type { Logger } from "./log.ts";
import { markUpgrade, type Upgrade, UPGRADE_STATUS } from "./upgrade.ts";

export { type Upgrade, upgradeOf } from "./upgrade.ts";
import { requestLongLived } from "./lifecycle.ts";
import type { LongLived } from "./long_lived.ts";
import type { Counter, Registry } from "./metrics.ts";
import { jsonResponse } from "./respond.ts";
import { pathOf } from "./url.ts";

/** Why a WebSocket closed, as `websocket_closed_total{reason}` counts it. */
export type CloseReason = "client" | "unresponsive" | "too_big" | "slow_reader" | "shutdown" | "error";

/** Hono's `upgradeWebSocket`, the same on every runtime: `app.get("/ws", upgradeWebSocket((c) => ({ onMessage... })))`. */
export const upgradeWebSocket = defineWebSocketHelper<unknown>((c: Context, events: WSEvents<unknown>) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") return;
  const request = c.req.raw;
  if (requestLongLived(request)?.closing) {
    return jsonResponse({ error: "shutting_down", message: "The server is shutting down: reconnect to another instance" }, 503, {
      connection: "close",
      "retry-after": "1",
    });
  }
  const response = jsonResponse(
    { error: "websocket_unsupported", message: `This server's engine cannot upgrade ${pathOf(request.url)} to a WebSocket` },
    UPGRADE_STATUS,
  );
  markUpgrade(response, { events, request });
  return response;
});

/** One upgraded socket as its engine drives it. */
export interface SocketDriver {
  send(data: string | ArrayBuffer | Uint8Array, options?: SendOptions): void;
  /** Sends a close frame. */
  close(code: number, reason: string): void;
  /** Drops the connection at once. */
  terminate(): void;
  /** Sends a ping frame; undefined where the runtime pings by itself (Deno's `idleTimeout`). */
  readonly ping: (() => void) | undefined;
  /** Bytes queued for the client and not yet written to the kernel. */
  readonly bufferedAmount: number;
  readonly readyState: WSReadyState;
  /** The runtime's own socket, as `ws.raw`. */
  readonly raw: unknown;
  readonly protocol?: string | null;
}

/** What the engine reports of a socket it made for an upgrade. */
export interface SocketEvents {
  open(): void;
  /** A whole message; `bytes` its size on the wire. */
  message(data: string | ArrayBuffer, bytes: number): void;
  pong(): void;
  /** The runtime refused a message over its own limit (set to ours) and is closing with 1009: the policy's close. */
  tooBig(): void;
  /** The socket closed, with the code and reason of the close (the client's, the runtime's or ours). */
  close(code: number, reason: string): void;
  error(error: unknown): void;
}

/** `ws` in the app's handlers: Hono's WSContext, with what waits for the client. */
export class PolicyWSContext extends WSContext<unknown> {
  readonly #driver: SocketDriver;
  constructor(driver: SocketDriver, url: string, send: (data: string | ArrayBuffer | Uint8Array, options: SendOptions) => void) {
    super({
      send,
      close: (code, reason) => driver.close(code ?? 1000, reason ?? ""),
      raw: driver.raw,
      get readyState() {
        return driver.readyState;
      },
      url,
      protocol: driver.protocol ?? null,
    });
    this.#driver = driver;
  }

  /** Bytes queued for the client and not yet sent: WEBSOCKET_MAX_BUFFERED closes the socket above it. */
  get bufferedAmount(): number {
    return this.#driver.bufferedAmount;
  }
}

/** How long a socket closed by the policy gets to finish its closing handshake before it is dropped. */
const CLOSE_GRACE_MS = 1_000;

/** Close codes the policy sends, and the reasons that go with them. */
const POLICY_CLOSES = {
  unresponsive: [1001, "no answer to ping"],
  too_big: [1009, "message too big"],
  slow_reader: [1008, "client not reading"],
  shutdown: [1001, "server shutting down"],
} as const satisfies Partial<Record<CloseReason, readonly [number, string]>>;

class Session implements SocketEvents {
  readonly ctx: PolicyWSContext;
  lastSeen = Date.now();
  pingedAt: number | undefined;
  #reason: CloseReason | undefined;
  #closed = false;
  #grace: ReturnType<typeof setTimeout> | undefined;
  #forget: (() => void) | undefined;
  readonly #owner: WebSockets;
  readonly #driver: SocketDriver;
  readonly #events: WSEvents<unknown>;

  constructor(owner: WebSockets, upgrade: Upgrade, driver: SocketDriver) {
    this.#owner = owner;
    this.#driver = driver;
    this.#events = upgrade.events;
    const maxBuffered = owner.policy.maxBufferedBytes;
    this.ctx = new PolicyWSContext(driver, upgrade.request.url, (data, options) => {
      if (this.#closed || this.#reason) return;
      driver.send(data, options);
      if (driver.bufferedAmount > maxBuffered) this.end("slow_reader", true);
    });
  }

  /** Closes the socket for the policy's `reason` (logged and counted); `drop` drops it at once. */
  end(reason: keyof typeof POLICY_CLOSES, drop = false): void {
    if (this.#closed || this.#reason) return;
    this.#reason = reason;
    const [code, text] = POLICY_CLOSES[reason];
    if (reason !== "shutdown") this.#logged(reason, code);
    this.#driver.close(code, text);
    if (drop) this.#driver.terminate();
    else this.#grace = setTimeout(() => this.#driver.terminate(), CLOSE_GRACE_MS);
  }

  cut(): void {
    this.#driver.terminate();
  }

  /** The `websocket_closed` event of a close the policy made. */
  #logged(reason: CloseReason, code: number): void {
    this.#owner.logger.info("websocket_closed", { reason, code, path: pathOf(this.ctx.url?.href ?? "") });
  }

  open(): void {
    this.#forget = this.#owner.track(this);
    this.#events.onOpen?.(new Event("open"), this.ctx);
  }

  message(data: string | ArrayBuffer, bytes: number): void {
    this.lastSeen = Date.now();
    this.pingedAt = undefined;
    // Where the runtime's own limit is not ours (Deno's is fixed), the message is refused here.
    if (bytes > this.#owner.policy.maxMessageBytes) return this.end("too_big");
    this.#events.onMessage?.(new MessageEvent("message", { data }), this.ctx);
  }

  pong(): void {
    this.lastSeen = Date.now();
    this.pingedAt = undefined;
  }

  tooBig(): void {
    this.end("too_big");
  }

  close(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#grace);
    this.#forget?.();
    const why = this.#reason ?? this.#owner.reasonOf(code, reason);
    // A close the runtime made for the policy (its own message limit, Deno's ping timeout) is
    // logged as the policy's own are; a client's is only counted.
    if (this.#reason === undefined && why !== "client") this.#logged(why, code);
    this.#owner.closed(why);
    this.#events.onClose?.(new CloseEvent("close", { code, reason, wasClean: code !== 1006 }), this.ctx);
  }

  error(error: unknown): void {
    this.#reason ??= "error";
    this.#events.onError?.(new ErrorEvent("error", { error }), this.ctx);
  }

  /** One sweep: a ping after an interval of quiet, a close after another without an answer. */
  sweep(now: number, pingAfterMs: number): void {
    if (this.pingedAt === undefined) {
      if (now - this.lastSeen < pingAfterMs) return;
      this.pingedAt = now;
      this.#driver.ping?.();
    } else if (now - this.pingedAt >= pingAfterMs) this.end("unresponsive");
  }
}

/**
 * The WebSockets of one server: the policy, the sweep that pings them, their gauge and close
 * counter, and their part in shutdown (through the server's LongLived).
 */
export class WebSockets {
  readonly policy: LongLived["policy"];
  readonly logger: Logger;
  readonly #longLived: LongLived;
  readonly #open = new Set<Session>();
  readonly #closes: Counter;
  /** Whether the runtime pings by itself (Deno), so the sweep only watches. */
  readonly #runtimePings: boolean;
  #sweep: ReturnType<typeof setInterval> | undefined;

  constructor(longLived: LongLived, logger: Logger, registry: Registry, options: { runtimePings?: boolean } = {}) {
    this.#longLived = longLived;
    this.policy = longLived.policy;
    this.logger = logger;
    this.#runtimePings = options.runtimePings ?? false;
    registry.collect("websocket_connections_open", "Open WebSocket connections.", "gauge", () => [{ value: this.#open.size }]);
    this.#closes = registry.counter("websocket_closed_total", "WebSocket connections closed, by why.", ["reason"]);
  }

  /** How many are open. */
  get size(): number {
    return this.#open.size;
  }

  /** The events for a socket the engine made for `upgrade`; the engine reports to them. */
  accept(upgrade: Upgrade, driver: SocketDriver): SocketEvents {
    return new Session(this, upgrade, driver);
  }

  /** Why a socket closed that the policy did not close: the runtime's own limit, or the client. */
  reasonOf(code: number, reason: string): CloseReason {
    if (code === 1009) return "too_big";
    // Deno's own ping timeout, where the runtime pings (docs/runtimes.md#deno-websockets-on-the-per-connection-engine).
    if (this.#runtimePings && code === 1001 && reason === "No response from ping frame.") return "unresponsive";
    return "client";
  }

  /** @internal A socket opened: tracked for the sweep and for shutdown. */
  track(session: Session): () => void {
    this.#open.add(session);
    const forget = this.#longLived.add({ close: () => session.end("shutdown"), cut: () => session.cut() });
    if (this.#longLived.closing) session.end("shutdown");
    this.#startSweep();
    return () => {
      this.#open.delete(session);
      forget();
      if (this.#open.size === 0) this.#stopSweep();
    };
  }

  /** @internal A socket closed, for `reason`. */
  closed(reason: CloseReason): void {
    this.#closes.inc({ reason });
  }

  #startSweep(): void {
    const interval = this.policy.pingIntervalMs;
    if (this.#sweep || interval === 0 || this.#runtimePings) return;
    // Twenty sweeps an interval; ping and close a twentieth early at most, so that a silent client
    // is gone within two intervals, never after.
    const period = Math.max(Math.floor(interval / 20), 10);
    const after = interval - period;
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const session of this.#open) session.sweep(now, after);
    }, period);
    (this.#sweep as { unref?: () => void }).unref?.();
  }

  #stopSweep(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }
}
