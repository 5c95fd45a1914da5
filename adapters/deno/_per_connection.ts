/**
 * Per-connection serving for Deno: what Deno.serve lacks (idle and head deadlines, a request
 * signal that means "the client left", graceful close per connection), built on Deno's internal
 * `serveHttpOnConnection`, which serves one accepted connection under its own AbortSignal.
 *
 * Internal API (docs/runtimes.md#deno-servehttponconnection-internal-api); upstream has no public idle timeout
 * (denoland/deno#32497). It is feature-detected and adapters/deno/mod.ts falls back to node:http.
 */
import { bodyLimits, overBodyLimit } from "../../src/policy/body.ts";
import type { Config } from "../../src/policy/config.ts";
import { errorResponse } from "../../src/policy/errors.ts";
import { reportClientGone } from "../../src/policy/lifecycle.ts";
import type { Logger } from "../../src/policy/log.ts";
import type { FetchHandler } from "../../src/policy/types.ts";
import { type SocketEvents, type Upgrade, upgradeOf, type WebSockets } from "../../src/policy/websocket.ts";
import { acceptFailures, connectionLimit, refusals } from "../_connection_limit.ts";
import { type DisconnectWatch, watchDisconnects } from "../_disconnect_watch.ts";
import { guardBody, releaseBody } from "../_request_body.ts";
import { fromConnection } from "../_request_url.ts";
import { displayUrl, type EngineServer } from "../_types.ts";
import {
  appUpgradeOf,
  badUpgrade,
  type DenoCore,
  denoDriver,
  findCore,
  followAppUpgrades,
  idleTimeoutOf,
  releaseHttp,
  reportEvents,
  serveTracked,
} from "./_websocket.ts";

/** What `serveHttpOnConnection` passes as the handler's second argument. */
export interface ConnectionInfo {
  readonly remoteAddr: Deno.NetAddr;
  /** Settles when the response is done, whether it was delivered or cut off. */
  readonly completed: Promise<void>;
}

/**
 * How many microtask turns an app's answer is waited for inside the dispatch that runs it, to know
 * whether an upgrade came within it (see Connection#upgradeIfAsked).
 */
const DISPATCH_TURNS = 32;

/** How long a response handed over to Deno gets to reach the socket before a hard close. */
const FLUSH_BEFORE_ABORT_MS = 50;

type Handler = (request: Request, info: ConnectionInfo) => Response | Promise<Response>;

interface ServedConnection {
  /** Resolves when the connection closes; rejects on a reset (an unhandled rejection kills Deno). */
  readonly finished: Promise<void>;
  /** Lets in-flight responses finish, then closes; closes an idle connection at once. */
  shutdown(): Promise<void>;
}

/**
 * What Deno does with the signal it is given: `addEventListener("abort", cancel, { once: true })`,
 * nothing else (Deno's ext/http/00_serve.ts, CallbackContext).
 */
interface CancelSignal {
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
}

type ServeHttpOnConnection = (
  conn: Deno.Conn,
  signal: CancelSignal,
  handler: Handler,
  onError: (error: unknown) => Response | Promise<Response>,
  onListen: (scheme: string) => void,
) => ServedConnection;

/** Deno's internal per-connection server, or undefined when this Deno does not have it. */
export function findServeHttpOnConnection(): ServeHttpOnConnection | undefined {
  const internal = (Deno as unknown as Record<symbol, Record<string, unknown> | undefined>)[
    (Deno as unknown as { internal: symbol }).internal
  ];
  const fn = internal?.serveHttpOnConnection;
  return typeof fn === "function" ? (fn as ServeHttpOnConnection) : undefined;
}

export interface ConnectionsOptions {
  /** Take the URL's scheme from X-Forwarded-Proto. */
  trustProxy: boolean;
  /** The body limit of a request, by its URL. */
  bodyLimitOf(request: Request): number;
  /** Close a connection with no request in flight after this long; 0 disables. */
  idleTimeoutMs: number;
  /** Close a new connection that has not completed its first request head within this long; 0 disables. */
  headersTimeoutMs: number;
  /** A request body must have arrived this long after its head; 0 disables. */
  requestTimeoutMs: number;
  /** Watches the signals of requests still at work, for a client that leaves. */
  disconnects: DisconnectWatch;
  /** Called when a connection is closed for being idle, or for a head that missed its deadline. */
  onTimeout(kind: "idle_timeout" | "headers_timeout" | "request_timeout", remote: Deno.NetAddr): void;
  /** Called with an error the handler threw past the app's own error handling; returns the response. */
  onError(error: unknown): Response;
  /** The most connections open at once; more are closed as soon as they are accepted. */
  maxConnections: number | null;
  /** Called for each connection closed at the limit. */
  onRefused(): void;
  /** Called when accepting fails (EMFILE when out of descriptors); the loop waits a little and goes on. */
  onAcceptError(error: unknown): void;
  /**
   * Where an upgrade the app asked for (`upgradeOf`) goes, and the ping interval (Deno's
   * idleTimeout is twice it); without it, or without Deno's internal core, an upgrade is answered 501.
   */
  websockets?: { sockets: WebSockets; pingIntervalMs: number };
}

/** How long to wait after a failed accept before the next: at EMFILE, a retry at once fails again. */
const ACCEPT_RETRY_MS = 100;

/** A listener served connection by connection. */
export interface ConnectionsServer {
  /** Requests whose response is not done yet. */
  inFlight(): number;
  /** Open connections. */
  openConnections(): number;
  /** Stops accepting, closes idle connections now and busy ones after their response; resolves when all are closed. */
  drain(): Promise<void>;
  /** Closes every connection at once; returns how many requests were in flight. */
  cut(): number;
}

/** Serves every connection `listener` accepts with `handler` under the idle and head deadlines. */
export function serveConnections(
  listener: Deno.Listener,
  handler: (request: Request, info: ConnectionInfo) => Response | Promise<Response>,
  options: ConnectionsOptions,
): ConnectionsServer {
  const serveOne = findServeHttpOnConnection();
  if (!serveOne) throw new Error("Deno[Deno.internal].serveHttpOnConnection is not available in this Deno");
  const open = new Set<Connection>();
  let closed: (() => void) | undefined;
  const core = options.websockets ? findCore() : null;
  const idleTimeout = idleTimeoutOf(options.websockets?.pingIntervalMs ?? 0);
  const server: Server = {
    serveOne,
    handler,
    options,
    core,
    websockets: core ? options.websockets : undefined,
    idleTimeout,
    // Deno's own, while an app that calls it itself (hono/deno) gets its socket carried too.
    upgradeWebSocket: core && options.websockets ? followAppUpgrades(idleTimeout) : Deno.upgradeWebSocket,
    // One of each per server rather than per connection: an idle connection's memory is what
    // this engine costs on top of Deno.serve (see Connection).
    onError: (error) => options.onError(error),
    onListen: () => {},
    gone(connection) {
      open.delete(connection);
      if (open.size === 0) closed?.();
    },
  };

  void (async () => {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        // listener.close() ends the loop with BadResource. Anything else (EMFILE when the process
        // is out of descriptors) used to end the loop and the process with it: the incident.
        if (error instanceof Deno.errors.BadResource) return;
        options.onAcceptError(error);
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
        continue;
      }
      if (options.maxConnections !== null && open.size >= options.maxConnections) {
        conn.close();
        options.onRefused();
        continue;
      }
      open.add(new Connection(conn, server));
    }
  })();

  return {
    inFlight() {
      let n = 0;
      for (const connection of open) n += connection.inFlight;
      return n;
    },
    openConnections: () => open.size,
    drain() {
      listener.close();
      const done = new Promise<void>((resolve) => (closed = resolve));
      if (open.size === 0) return Promise.resolve();
      for (const connection of open) connection.close();
      return done;
    },
    cut() {
      let n = 0;
      for (const connection of open) {
        n += connection.inFlight;
        connection.abort();
      }
      return n;
    },
  };
}

/** What every connection of one server shares. */
interface Server {
  serveOne: ServeHttpOnConnection;
  handler: Handler;
  options: ConnectionsOptions;
  onError(error: unknown): Response;
  onListen(): void;
  /** Called once when `connection` has closed. */
  gone(connection: Connection): void;
  /** Deno's internal core, where upgrades are carried (null: answered 501). */
  core: DenoCore | null;
  websockets: ConnectionsOptions["websockets"];
  /** Deno's idleTimeout for an upgraded socket, in seconds (0: no pings). */
  idleTimeout: number;
  /** Deno's own `upgradeWebSocket` (see followAppUpgrades). */
  upgradeWebSocket: typeof Deno.upgradeWebSocket;
}

/**
 * One accepted connection: its deadlines, its in-flight requests and their signals.
 *
 * An idle connection costs about twice what it costs Deno.serve, most of it Deno's own:
 * serveHttpOnConnection builds a server per connection (bench/README.md, Deno memory). What is
 * ours is kept small: the connection is its own cancel signal (no AbortController), shares its
 * callbacks with the server's other connections, listens once for its end, and makes its request
 * set on first use.
 */
class Connection implements CancelSignal {
  inFlight = 0;
  #server: Server;
  #served: ServedConnection;
  /** Deno's cancel for this connection's server: what aborting its signal would call. */
  #cancel: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the last response was done (Date.now()), for the idle timer. */
  #idleSince = 0;
  #requestsSeen = 0;
  #closing = false;
  /** close() came while a request was in flight: shut down once none is. */
  #shutdownWhenDone = false;
  #gone = false;
  #requests: Set<Request> | undefined;
  #remote: Deno.NetAddr;
  /** The id of the "http" resource Deno serves this connection under (-1: unknown, no upgrades). */
  readonly #httpRid: number = -1;
  /** The socket this connection was upgraded to, until it closes: it holds the connection open. */
  #socket: WebSocket | undefined;

  constructor(conn: Deno.Conn, server: Server) {
    this.#server = server;
    this.#remote = conn.remoteAddr as Deno.NetAddr;
    const serve = () => server.serveOne(conn, this, (request, info) => this.#handle(request, info), server.onError, server.onListen);
    if (server.core && server.websockets) ({ served: this.#served, httpRid: this.#httpRid } = serveTracked(server.core, serve));
    else this.#served = serve();
    // A reset rejects `finished`; either way the connection is gone, and so is every request on it.
    const gone = () => this.#goneNow();
    this.#served.finished.then(gone, gone);
    const { headersTimeoutMs, idleTimeoutMs } = server.options;
    // The first head is due HEADERS_TIMEOUT after the connection opens; an idle connection is
    // due to close at IDLE_TIMEOUT, whichever comes first.
    if (headersTimeoutMs > 0 && (idleTimeoutMs === 0 || headersTimeoutMs < idleTimeoutMs)) {
      this.#arm("headers_timeout", headersTimeoutMs);
    } else if (idleTimeoutMs > 0) {
      this.#arm("idle_timeout", idleTimeoutMs);
    }
  }

  /** Deno registers its cancel here, as it would on an AbortSignal. */
  addEventListener(_type: "abort", listener: () => void): void {
    this.#cancel = listener;
  }

  /** Closes gracefully: idle now, busy after the response in flight. */
  close(): void {
    // An upgraded connection is the WebSocket's: the policy closes it (1001) at shutdown.
    if (this.#closing || this.#socket) return;
    this.#closing = true;
    clearTimeout(this.#timer);
    // Deno's shutdown() fails a request body still arriving (the app reads "Cannot read request
    // body as underlying resource unavailable"), so a connection with a request in flight is shut
    // down once it is done (docs/runtimes.md#deno-servehttponconnection-internal-api).
    if (this.inFlight > 0) this.#shutdownWhenDone = true;
    else this.#served.shutdown().catch(() => {});
  }

  /** Closes at once, cutting any response in flight. */
  abort(): void {
    if (this.#socket) denoDriver(this.#socket).terminate();
    this.#closing = true;
    clearTimeout(this.#timer);
    const cancel = this.#cancel;
    this.#cancel = undefined;
    try {
      cancel?.();
    } catch (error) {
      // After shutdown() has begun, Deno's cancel finds the resource already closing.
      if (!(error instanceof Deno.errors.BadResource)) throw error;
    }
  }

  /**
   * One timer per connection, not one per request: a request only notes when the connection went
   * idle (#idleSince), and the timer, when it fires early, waits out the rest. Timers per request
   * cost a visible share of throughput on a busy keep-alive connection.
   */
  #arm(kind: "idle_timeout" | "headers_timeout", ms: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closing || this.inFlight > 0 || this.#socket) return; // the last response will arm it again
      if (this.#requestsSeen > 0) {
        // The head arrived in time; from here only the idle policy may close the connection.
        if (this.#server.options.idleTimeoutMs === 0) return;
        const left = this.#server.options.idleTimeoutMs - (Date.now() - this.#idleSince);
        if (left > 0) return this.#arm("idle_timeout", left);
        kind = "idle_timeout";
      }
      this.#server.options.onTimeout(kind, this.#remote);
      this.close();
      // shutdown() lets Deno finish what it is reading first; a connection closed for idleness or
      // a late head has nothing worth waiting for, so it does not get to linger.
      setTimeout(() => {
        if (!this.#gone) this.abort();
      }, FLUSH_BEFORE_ABORT_MS);
    }, ms);
  }

  #handle(arrived: Request, info: ConnectionInfo): Response | Promise<Response> {
    const original = fromConnection(arrived, this.#server.options.trustProxy);
    this.#requestsSeen += 1;
    // Deno keeps reading a body that missed its deadline after the 408 went out: close hard once
    // the 408 has had time to reach the socket (`completed` settles when it is handed over, before
    // it is written), as Node does after its own 408.
    let expired = false;
    const options = this.#server.options;
    const request = original.body === null ? original : guardBody(original, {
      timeoutMs: options.requestTimeoutMs,
      limitBytes: options.bodyLimitOf(original),
      onExpire: () => {
        expired = true;
        options.onTimeout("request_timeout", this.#remote);
      },
    });
    this.inFlight += 1;
    // Deno's request.signal (legacy abort off in deno.json) aborts when the client leaves while a
    // handler works, but not for a reset during a streaming response: the connection's end covers
    // that, and the lifecycle's tracked body (cancel()) does too.
    (this.#requests ??= new Set()).add(request);
    let watched = false;
    const done = () => {
      // Deno's server reads what is left of a body before the next request, and waits for it, until
      // the deadline or forever without one (docs/runtimes.md#deno-get-body-on-a-per-connection-server):
      // the rest is drained within the deadline and the limit, and the connection kept for the next
      // request; one that cannot be (late, or over the limit: the 408 or 413 said `Connection:
      // close`) is closed once the response has had time to reach the socket.
      const rest = request === original ? undefined : releaseBody(request);
      const close = () => setTimeout(() => this.abort(), FLUSH_BEFORE_ABORT_MS);
      if (expired || (rest && overBodyLimit(request))) close();
      else rest?.then((drained) => drained || close());
      if (watched) this.#server.options.disconnects.stop(request);
      this.#requests?.delete(request);
      this.inFlight -= 1;
      // An upgraded connection is no longer HTTP's: no graceful close, no idle deadline.
      if (this.#socket) return;
      if (this.inFlight === 0 && this.#shutdownWhenDone) {
        this.#shutdownWhenDone = false;
        this.#served.shutdown().catch(() => {});
      }
      if (this.inFlight === 0 && !this.#closing && this.#server.options.idleTimeoutMs > 0) {
        this.#idleSince = Date.now();
        if (this.#timer === undefined) this.#arm("idle_timeout", this.#server.options.idleTimeoutMs);
      }
    };
    info.completed.then(done, done);
    const result = this.#server.handler(request, info);
    // Only a handler still at work has a signal worth watching (see _disconnect_watch.ts).
    if (result instanceof Promise) {
      watched = true;
      this.#server.options.disconnects.start(request, arrived);
      if (!this.#server.websockets) return result;
      if (arrived.method !== "GET") return result.then((response) => this.#upgradeIfAsked(arrived, response, false));
      // Whether the app answers within the dispatch Deno runs it in (see #upgradeIfAsked): a chain
      // of microtasks keeps that dispatch's microtask checkpoint running until the answer comes, or
      // for DISPATCH_TURNS turns at most (1-3 µs for a GET that waits on I/O; only a GET upgrades).
      let answered = false;
      let inDispatch = true;
      let turns = DISPATCH_TURNS;
      const turn = () => {
        if (answered || --turns === 0) inDispatch = false;
        else queueMicrotask(turn);
      };
      queueMicrotask(turn);
      return result.then((response) => {
        answered = true;
        return this.#upgradeIfAsked(arrived, response, inDispatch);
      });
    }
    // No Keep-Alive header: adding one to a response from JavaScript, however the response is made,
    // costs Deno's server a tenth to a quarter of a small response's throughput
    // (docs/runtimes.md#deno-serve-sends-no-keep-alive-header).
    return result.status === 501 || result.status === 101 ? this.#upgradeIfAsked(arrived, result, true) : result;
  }

  /**
   * The app's upgrade (a marked 501) made a WebSocket on the request Deno handed in (a copy made
   * for its URL cannot be upgraded), kept alive past the per-connection server's end, and handed to
   * the policy; any other response as it is, and the 501 itself where this Deno cannot keep it.
   */
  #upgradeIfAsked(arrived: Request, response: Response, inDispatch: boolean): Response {
    const websockets = this.#server.websockets;
    const core = this.#server.core;
    if (response.status === 101) {
      // The app upgraded with Deno's own call (Hono's hono/deno helper): its handlers become its
      // events, and what it sends on the socket itself is checked as after ws.send.
      const app = appUpgradeOf(response);
      if (!app) return response;
      if (!websockets || !core || this.#httpRid < 0) return app.release(), response;
      const events = this.#carry(app.socket, { events: app.events, request: arrived }, inDispatch);
      const send = app.socket.send;
      app.socket.send = function (this: WebSocket, data) {
        send.call(this, data);
        events.sent();
      };
      return response;
    }
    if (!websockets || !core || this.#httpRid < 0) return response;
    if (response.status !== 501) return response;
    const upgrade = upgradeOf(response);
    if (!upgrade) return response;
    let pair: { socket: WebSocket; response: Response };
    try {
      pair = this.#server.upgradeWebSocket(arrived, { idleTimeout: this.#server.idleTimeout });
    } catch (error) {
      return badUpgrade(error);
    }
    this.#carry(pair.socket, upgrade, inDispatch);
    return pair.response;
  }

  /** Keeps `socket` (upgraded on this connection) alive past the connection's server, under the policy. */
  #carry(socket: WebSocket, upgrade: Upgrade, inDispatch: boolean): SocketEvents {
    const websockets = this.#server.websockets!;
    const core = this.#server.core!;
    this.#socket = socket;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const events = websockets.sockets.accept(upgrade, denoDriver(socket));
    // The per-connection server closes every socket upgraded on it once it ends, unless its "http"
    // resource is gone by then; closing that resource cancels the connection, unless Deno writes
    // the 101 in the same poll of the connection's task. It does when the app answers within the
    // dispatch Deno calls it in: then the resource is closed now. An answer that came later (after
    // an await on I/O or a timer) is only safe to release once the socket opens, which under a
    // burst of handshakes can come after the server's end (docs/runtimes.md).
    let released = inDispatch && releaseHttp(core, this.#httpRid);
    reportEvents(
      socket,
      events,
      () => {
        if (!released) released = releaseHttp(core, this.#httpRid);
      },
      () => {
        this.#socket = undefined;
        if (this.#gone) this.#server.gone(this);
      },
    );
    return events;
  }

  #goneNow(): void {
    this.#gone = true;
    this.#closing = true;
    clearTimeout(this.#timer);
    // Upgraded, the HTTP connection ends once the socket opens (its request answered 101), and
    // the connection is open until the socket closes.
    if (this.#requests && !this.#socket) { for (const request of this.#requests) reportClientGone(request); }
    this.#requests = undefined;
    if (!this.#socket) this.#server.gone(this);
  }
}

/**
 * A request whose response is not done yet, and its `signal`. Deno's own request.signal aborts
 * after every successful response (legacy abort) and, with --unstable-no-legacy-abort, misses a
 * reset during a streaming response; this one aborts exactly when the client leaves before the
 * response is done. It is made only when someone reads it: an AbortController and a listener
 * per request cost a noticeable share of throughput.
 */

/** Serves `fetch` one connection at a time with this module's deadlines, under the options' limits. */
export function servePerConnection(fetch: FetchHandler, config: Config, logger: Logger, websockets?: WebSockets): Promise<EngineServer> {
  const listener = Deno.listen({ hostname: config.host, port: config.port, reusePort: config.reusePort });
  const limit = connectionLimit(config);
  const server = serveConnections(listener, fetch, {
    maxConnections: limit?.max ?? null,
    bodyLimitOf: bodyLimits(config.bodyLimitBytes, config.bodyLimitByPath),
    trustProxy: config.trustProxy,
    onRefused: limit ? refusals(logger, limit) : () => {},
    onAcceptError: acceptFailures(logger),
    idleTimeoutMs: config.idleTimeoutMs,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    disconnects: watchDisconnects(),
    onTimeout: (kind, remote) => logger.info(kind, { remoteAddress: remote.hostname, remotePort: remote.port }),
    // What escapes the lifecycle's own answer (an error in Deno's handling around it).
    onError: (error) => errorResponse(error, undefined, logger),
    websockets: websockets && { sockets: websockets, pingIntervalMs: config.websocketPingIntervalMs },
  });
  return Promise.resolve({ url: displayUrl(config.host, (listener.addr as Deno.NetAddr).port), limit, ...server });
}
