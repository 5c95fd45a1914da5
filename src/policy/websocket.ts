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
import type { CloserGroup, LongLived } from "./long_lived.ts";
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

/** A runtime socket with the WHATWG WebSocket's state fields (Deno's `WebSocket`, `ws`'s). */
interface StandardSocket {
  readonly bufferedAmount: number;
  readonly readyState: number;
  readonly protocol: string;
}

/**
 * The state half of a driver over such a socket, read straight from it (on the prototype: nothing
 * per socket but `raw`); sending, closing and pinging are each engine's (its class `implements SocketDriver`).
 */
export abstract class StandardSocketDriver<S extends StandardSocket> {
  readonly raw: S;
  constructor(raw: S) {
    this.raw = raw;
  }

  get bufferedAmount(): number {
    return this.raw.bufferedAmount;
  }

  get readyState(): WSReadyState {
    return this.raw.readyState as WSReadyState;
  }

  get protocol(): string {
    return this.raw.protocol;
  }
}

/** What the engine reports of a socket it made for an upgrade. */
export interface SocketEvents {
  open(): void;
  /** A whole message; `bytes` its size on the wire, or 0 where the runtime refused a larger one itself (its limit set to ours). */
  message(data: string | ArrayBuffer, bytes: number): void;
  pong(): void;
  /** The runtime refused a message over its own limit (set to ours) and is closing with 1009: the policy's close. */
  tooBig(): void;
  /** The socket closed, with the code and reason of the close (the client's, the runtime's or ours). */
  close(code: number, reason: string): void;
  error(error: unknown): void;
  /** The app sent on the runtime's socket itself (not through its WSContext): what waits is checked as after `ws.send`. */
  sent(): void;
}

/**
 * WSContext's prototype without its constructor: Hono's constructor keeps a `new URL` and an init
 * object of closures on every socket, for the socket's life. `PolicyWSContext` extends it (so it
 * is a WSContext, `instanceof` included) and overrides everything that constructor sets up, keeping
 * one field: the socket's session.
 */
const WSContextPrototype = function () {} as unknown as typeof WSContext;
WSContextPrototype.prototype = WSContext.prototype;

/** What the app's WSContext reads of its socket. */
interface ContextSession {
  readonly driver: SocketDriver;
  readonly href: string;
  send(data: string | ArrayBuffer | Uint8Array, options: SendOptions | undefined): void;
}

/** `ws` in the app's handlers: Hono's WSContext, with what waits for the client. */
export class PolicyWSContext extends WSContextPrototype<unknown> {
  declare readonly raw: unknown;
  declare readonly url: URL | null;
  declare readonly protocol: string | null;
  declare binaryType: BinaryType;
  readonly #session: ContextSession;
  #url: URL | null | undefined;

  constructor(session: ContextSession) {
    super(undefined as never);
    this.#session = session;
  }

  override send(source: string | ArrayBuffer | Uint8Array, options?: SendOptions): void {
    this.#session.send(source, options);
  }

  override close(code?: number, reason?: string): void {
    this.#session.driver.close(code ?? 1000, reason ?? "");
  }

  override get readyState(): WSReadyState {
    return this.#session.driver.readyState;
  }

  /** Bytes queued for the client and not yet sent: WEBSOCKET_MAX_BUFFERED closes the socket above it. */
  get bufferedAmount(): number {
    return this.#session.driver.bufferedAmount;
  }

  static {
    // Accessors where WSContext has fields (TypeScript allows no accessor over a field): the URL
    // is made the first time it is asked for, not for every socket.
    Object.defineProperties(this.prototype, {
      raw: {
        get(this: PolicyWSContext) {
          return this.#session.driver.raw;
        },
      },
      url: {
        get(this: PolicyWSContext) {
          if (this.#url === undefined) this.#url = this.#session.href ? new URL(this.#session.href) : null;
          return this.#url;
        },
      },
      protocol: {
        get(this: PolicyWSContext) {
          return this.#session.driver.protocol ?? null;
        },
      },
      binaryType: { value: "arraybuffer", writable: true },
    });
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

/**
 * One socket: the policy's state, and what the engine reports to (SocketEvents). Nothing per socket
 * but this, its WSContext and the app's events: no closure, no timer until the policy closes it,
 * no reference to the upgrade's request (only its URL, as a string).
 */
class Session implements SocketEvents, ContextSession {
  readonly ctx: PolicyWSContext;
  readonly driver: SocketDriver;
  readonly href: string;
  readonly #owner: WebSockets;
  readonly #events: WSEvents<unknown>;
  /** When the sweep last saw the client active (or the socket open). */
  #lastSeen: number;
  /** Whether anything came from the client since the sweep last looked: a flag, not a clock read per message. */
  #seen = false;
  /** When the sweep pinged it, 0 if it has not since the client was last seen. */
  #pingedAt = 0;
  #reason: CloseReason | undefined;
  #closed = false;
  #grace: ReturnType<typeof setTimeout> | undefined;

  constructor(owner: WebSockets, upgrade: Upgrade, driver: SocketDriver) {
    this.#owner = owner;
    this.driver = driver;
    this.#events = upgrade.events;
    this.href = upgrade.request.url;
    this.#lastSeen = Date.now();
    this.ctx = new PolicyWSContext(this);
  }

  /** The app's `ws.send`: nothing once closing; a send that leaves too much waiting closes the socket (1008). */
  send(data: string | ArrayBuffer | Uint8Array, options: SendOptions | undefined): void {
    if (this.#closed || this.#reason) return;
    const driver = this.driver;
    driver.send(data, options);
    this.sent();
  }

  /** A message went to the runtime's socket: too much waiting for the client closes it (1008). */
  sent(): void {
    if (this.driver.bufferedAmount > this.#owner.policy.maxBufferedBytes) this.end("slow_reader", true);
  }

  /** Closes the socket for the policy's `reason` (logged and counted); `drop` drops it at once. */
  end(reason: keyof typeof POLICY_CLOSES, drop = false): void {
    if (this.#closed || this.#reason) return;
    this.#reason = reason;
    const [code, text] = POLICY_CLOSES[reason];
    if (reason !== "shutdown") this.#logged(reason, code);
    this.driver.close(code, text);
    if (drop) this.driver.terminate();
    else this.#grace = setTimeout(terminate, CLOSE_GRACE_MS, this.driver);
  }

  cut(): void {
    this.driver.terminate();
  }

  /** The `websocket_closed` event of a close the policy made. */
  #logged(reason: CloseReason, code: number): void {
    this.#owner.logger.info("websocket_closed", { reason, code, path: pathOf(this.href) });
  }

  open(): void {
    this.#owner.track(this);
    this.#events.onOpen?.(new Event("open"), this.ctx);
  }

  message(data: string | ArrayBuffer, bytes: number): void {
    this.#seen = true;
    // Where the runtime's own limit is not ours (Deno's is fixed), the message is refused here.
    if (bytes > this.#owner.policy.maxMessageBytes) return this.end("too_big");
    this.#events.onMessage?.(new WSMessageEvent(data) as unknown as MessageEvent, this.ctx);
  }

  pong(): void {
    this.#seen = true;
  }

  tooBig(): void {
    this.end("too_big");
  }

  close(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#grace);
    this.#owner.untrack(this);
    const why = this.#reason ?? this.#owner.reasonOf(code, reason);
    // A close the runtime made for the policy (its own message limit, Deno's ping timeout) is
    // logged as the policy's own are; a client's is only counted.
    if (this.#reason === undefined && why !== "client") this.#logged(why, code);
    this.#owner.closed(why);
    this.#events.onClose?.(closeEvent(code, reason), this.ctx);
  }

  error(error: unknown): void {
    this.#reason ??= "error";
    this.#events.onError?.(errorEvent(error), this.ctx);
  }

  /**
   * One sweep: a ping after an interval of quiet, a close after another without an answer. What
   * came since the last sweep counts as seen at this one: at most a sweep period late, which the
   * sweep's early margin covers.
   */
  sweep(now: number, pingAfterMs: number): void {
    if (this.#seen) {
      this.#seen = false;
      this.#lastSeen = now;
      this.#pingedAt = 0;
      return;
    }
    if (this.#pingedAt === 0) {
      if (now - this.#lastSeen < pingAfterMs) return;
      this.#pingedAt = now;
      this.driver.ping?.();
    } else if (now - this.#pingedAt >= pingAfterMs) this.end("unresponsive");
  }
}

const terminate = (driver: SocketDriver) => driver.terminate();

/**
 * The WebSockets of one server: the policy, the sweep that pings them, their gauge and close
 * counter, and their part in shutdown (through the server's LongLived).
 */
export class WebSockets implements CloserGroup {
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
    longLived.addGroup(this);
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
  track(session: Session): void {
    this.#open.add(session);
    if (this.#longLived.closing) session.end("shutdown");
    this.#startSweep();
  }

  /** @internal A socket closed: no longer tracked. */
  untrack(session: Session): void {
    if (!this.#open.delete(session)) return;
    if (this.#open.size === 0) this.#stopSweep();
    this.#longLived.left();
  }

  /** Step 5 of shutdown (LongLived): 1001 to every socket. */
  closeAll(): void {
    for (const session of [...this.#open]) session.end("shutdown");
  }

  /** SHUTDOWN_TIMEOUT is over (LongLived): drops every socket; returns how many. */
  cutAll(): number {
    const open = [...this.#open];
    for (const session of open) session.cut();
    return open.length;
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

/**
 * A `CloseEvent`, where the runtime has the class (Bun, Deno, Node 23+); on Node 22, which has
 * neither `CloseEvent` nor `ErrorEvent`, an `Event` with the same fields.
 */
/**
 * The `MessageEvent` an app's `onMessage` gets: a real `Event` of type `message` whose prototype
 * chain holds `MessageEvent.prototype` (so `instanceof MessageEvent` holds) with `data` its own, and
 * `origin`, `lastEventId`, `source` and `ports` as a server socket's message has them. Node's
 * `new MessageEvent("message", { data })` converts its init through WebIDL: 685 ns a message
 * against 101 ns for this (Bun: 492 against 233 ns; Deno: 106 either way; a loop of a million),
 * a share of the echo gap with a bare server (bench/README.md#websockets).
 */
class WSMessageEvent extends Event {
  // A class field is defined on the instance (ES2022), so the getter `MessageEvent.prototype.data` does not stand in its way.
  readonly data: string | ArrayBuffer;
  constructor(data: string | ArrayBuffer) {
    super("message");
    this.data = data;
  }
}
Object.setPrototypeOf(WSMessageEvent.prototype, MessageEvent.prototype);
Object.defineProperties(WSMessageEvent.prototype, {
  origin: { get: () => "" },
  lastEventId: { get: () => "" },
  source: { get: () => null },
  ports: { get: () => [] },
});

function closeEvent(code: number, reason: string): CloseEvent {
  const wasClean = code !== 1006;
  if (typeof globalThis.CloseEvent === "function") return new CloseEvent("close", { code, reason, wasClean });
  return Object.assign(new Event("close"), { code, reason, wasClean }) as CloseEvent;
}

/** An `ErrorEvent` where the runtime has the class, else an `Event` with its `error` and `message`. */
function errorEvent(error: unknown): ErrorEvent {
  if (typeof globalThis.ErrorEvent === "function") return new ErrorEvent("error", { error });
  return Object.assign(new Event("error"), { error, message: error instanceof Error ? error.message : String(error) }) as ErrorEvent;
}
