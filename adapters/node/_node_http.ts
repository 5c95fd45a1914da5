import { createServer, type IncomingMessage, maxHeaderSize, type Server, type ServerOptions, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { getRequestListener, type HttpBindings } from "@hono/node-server";
import process from "node:process";
import { bodyLimits, type DeclaredLength } from "../../src/policy/body.ts";
import { type Config, type ConfigProblem, refuse } from "../../src/policy/config.ts";
import { reportClientGone } from "../../src/policy/lifecycle.ts";
import { INTERNAL_ERROR } from "../../src/policy/errors.ts";
import type { Logger } from "../../src/policy/log.ts";
import type { FetchHandler } from "../../src/policy/types.ts";
import type { WebSockets } from "../../src/policy/websocket.ts";
import { acceptFailures, connectionLimit, FD_RESERVE, refusals } from "../_connection_limit.ts";
import { reapIdleConnections } from "./_idle_reaper.ts";
import { keepAliveHintSeconds } from "../_keep_alive.ts";
import { limitBody } from "../_request_body.ts";
import { displayUrl, type EngineServer } from "../_types.ts";
import { carryWebSockets, lazyUpgrades } from "./_websocket.ts";

/**
 * node:http closes an idle keep-alive socket at keepAliveTimeout plus a buffer: fixed at 1 s
 * where the server has no `keepAliveTimeoutBuffer` option (Node 22.18 and 22.19, Deno's node:http),
 * settable where it has, so that the close lands at IDLE_TIMEOUT exactly (docs/runtimes.md).
 */
const KEEP_ALIVE_BUFFER_MS = 1_000;

let bufferOption: boolean | undefined;
/** Whether this node:http takes `keepAliveTimeoutBuffer`: Node 22.20+ and 24.8+, where it is reliable. */
export function hasKeepAliveBufferOption(): boolean {
  if (bufferOption === undefined) {
    const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
    const reliable = !(major === 22 && minor < 20) && !(major === 24 && minor < 8);
    bufferOption = reliable && "keepAliveTimeoutBuffer" in createServer();
  }
  return bufferOption;
}
/**
 * How often Node checks headersTimeout and requestTimeout. Its default, 30 s, lets a 3 s deadline
 * fire at 29.7 s; 250 ms keeps the deadlines within 0.5 s at the cost of a walk over the
 * connection list four times a second, while a connection is open (checkOnlyWithConnections).
 */
const CONNECTIONS_CHECKING_INTERVAL_MS = 250;

/**
 * Runs node:http's deadline check only while a connection is open: with none there is nothing to
 * expire, and its four wake-ups a second cost an idle Node ~0.07% of a core (bench/README.md#an-idle-server).
 * node:http keeps the check's timer under a private symbol and starts it on 'listening'; where
 * that timer is not there as on Node and Bun (Deno's node:http), it is left alone. server.close()
 * clears whichever timer runs.
 */
function checkOnlyWithConnections(server: Server, sockets: ReadonlySet<unknown>): { opened(): void; closed(): void } {
  const slot = server as unknown as Record<symbol, { _onTimeout?: unknown } | undefined>;
  let key: symbol | undefined;
  let check: (() => void) | undefined;
  server.once("listening", () => {
    key = Object.getOwnPropertySymbols(server).find((s) => s.description === "http.server.connectionsCheckingInterval");
    const timer = key === undefined ? undefined : slot[key];
    if (typeof timer?._onTimeout !== "function") return;
    check = timer._onTimeout as () => void;
    if (sockets.size === 0) clearInterval(timer as Parameters<typeof clearInterval>[0]);
  });
  return {
    opened() {
      if (check === undefined || key === undefined || sockets.size !== 1) return;
      clearInterval(slot[key] as Parameters<typeof clearInterval>[0]);
      const timer = setInterval(check, CONNECTIONS_CHECKING_INTERVAL_MS);
      timer.unref();
      slot[key] = timer as unknown as { _onTimeout?: unknown };
    },
    closed() {
      if (check !== undefined && key !== undefined && sockets.size === 0) clearInterval(slot[key] as Parameters<typeof clearInterval>[0]);
    },
  };
}

/** A complete response that closes the connection, with a JSON body saying what was wrong. */
function clientErrorResponse(status: number, reason: string, error: string, message: string): string {
  const body = JSON.stringify({ error, message });
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${
    Buffer.byteLength(body)
  }\r\nConnection: close\r\n\r\n${body}`;
}

/**
 * What the adapter answers when node:http's parser rejects a request, before closing: Node's own
 * statuses (lib/_http_server.js socketOnError), with a JSON body like the app's errors.
 */
function clientErrorFor(code: string | undefined): string {
  switch (code) {
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return clientErrorResponse(
        408,
        "Request Timeout",
        "request_timeout",
        "The request did not arrive within HEADERS_TIMEOUT or REQUEST_TIMEOUT",
      );
    case "HPE_HEADER_OVERFLOW":
      return clientErrorResponse(
        431,
        "Request Header Fields Too Large",
        "headers_too_large",
        `The request head is larger than ${maxHeaderSize ?? 16_384} bytes`,
      );
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return clientErrorResponse(413, "Payload Too Large", "payload_too_large", "The chunk extensions are too large");
    default:
      return clientErrorResponse(400, "Bad Request", "bad_request", `The request is not valid HTTP/1.1 (${code ?? "unknown error"})`);
  }
}

/** How long a connection answered with a parser error (408, 431, 400) may linger half-closed before it is destroyed. */
const ANSWER_LINGER_MS = 1_000;

/** While draining, how often sockets with no response in progress are looked for and closed. */
const DRAIN_SWEEP_MS = 100;

/** How far above MAX_CONNECTIONS node:http's own guard sits (within the descriptor reserve). */
const NATIVE_LIMIT_HEADROOM = 16;

/** Where a response keeps its request, for the connection's 'close' listener. */
const REQUEST = Symbol("request");
type Response_ = ServerResponse & {
  [REQUEST]?: Request;
  /**
   * What node:http (Node's, Bun's and Deno's alike) advertises as `Keep-Alive: timeout=` for this
   * response, in ms (floored to seconds; 0 sends none), on a response that keeps the connection
   * open only. It copies the server's keepAliveTimeout before the request listener runs.
   */
  _keepAliveTimeout?: number;
};
/** node:http's (and Bun's node:http's) own link from a socket to the response it is writing. */
type Socket_ = Socket & { _httpMessage?: Response_ | null };

const SLASH = 47;

/**
 * Makes the request target one the URL can trust: an absolute-form target (`GET
 * https://user:pass@host/x`, RFC 9112 3.2.2) becomes its path, its authority the Host without
 * credentials, so the scheme stays the connection's (@hono/node-server would take the target's
 * scheme, and its credentials make `request.clone()` throw). With `trustProxy`, the scheme is the
 * one `X-Forwarded-Proto` names (`http` or `https`).
 */
export function requestTarget(incoming: IncomingMessage, trustProxy: boolean): void {
  const target = incoming.url ?? "/";
  const absolute = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)(.*)$/i.exec(target);
  if (absolute) {
    const authority = absolute[1]!.slice(absolute[1]!.lastIndexOf("@") + 1);
    if (authority !== "") incoming.headers.host = authority;
    incoming.url = absolute[2]!.startsWith("/") ? absolute[2]! : `/${absolute[2]!}`;
  }
  if (!trustProxy) return;
  const forwarded = incoming.headers["x-forwarded-proto"];
  const scheme = typeof forwarded === "string" ? forwarded.split(",", 1)[0]!.trim().toLowerCase() : undefined;
  if ((scheme === "https" || scheme === "http") && incoming.url?.charCodeAt(0) === SLASH && incoming.headers.host) {
    incoming.url = `${scheme}://${incoming.headers.host}${incoming.url}`;
  }
}

/**
 * The declared Content-Length from node:http's own header object: `request.headers` would make
 * @hono/node-server build a Headers object for every request with a body.
 */
export const declaredLengthOnNode: DeclaredLength = (_request, env) => (env as HttpBindings).incoming.headers["content-length"];

/** Whether a request head declares a body: a Content-Length above 0, or a Transfer-Encoding. */
function declaresBody(incoming: IncomingMessage): boolean {
  const length = incoming.headers["content-length"];
  return (length !== undefined && length !== "0") || incoming.headers["transfer-encoding"] !== undefined;
}

/**
 * An error while writing a response (a status line or header node:http refuses, a body stream that
 * fails) is logged and answered 500 if nothing was sent yet, else the connection is closed: never
 * an unhandled rejection, which would end the process and every other client's connection.
 */
function responseFailed(outgoing: ServerResponse, error: unknown, logger: Logger): void {
  logger.error("response_failed", { error });
  if (outgoing.headersSent || outgoing.destroyed) {
    outgoing.destroy();
    return;
  }
  try {
    for (const name of outgoing.getHeaderNames()) outgoing.removeHeader(name);
    outgoing.statusMessage = "";
    const body = JSON.stringify(INTERNAL_ERROR);
    outgoing.writeHead(500, { "content-type": "application/json", "content-length": Buffer.byteLength(body), connection: "close" });
    outgoing.end(body);
  } catch {
    outgoing.destroy();
  }
}

export interface NodeHttpOptions {
  /**
   * Who closes idle connections: node:http's own `keepAliveTimeout` (`native`, the default), or a
   * timer per connection in JavaScript (`reaper`), for runtimes whose node:http caps it.
   */
  idle?: "native" | "reaper";
  /** The server's WebSockets: an upgrade the app asks for becomes one of them (adapters/node/_websocket.ts). */
  websockets?: WebSockets;
}

/** Configurations node:http cannot honour, refused at startup rather than clamped. */
export function checkNodeHttp(config: Config): ConfigProblem[] {
  const idle = config.idleTimeoutMs;
  if (idle > 0 && idle <= KEEP_ALIVE_BUFFER_MS && !hasKeepAliveBufferOption()) {
    return [
      refuse(
        "idleTimeoutMs",
        idle,
        (w) =>
          `${
            w.given("idleTimeoutMs", idle, "ms")
          } is too short for Node, which always waits ${KEEP_ALIVE_BUFFER_MS}ms past keepAliveTimeout: use more than ${
            w.value("idleTimeoutMs", KEEP_ALIVE_BUFFER_MS)
          }, or ${w.value("idleTimeoutMs", 0)} to disable`,
      ),
    ];
  }
  return [];
}

/**
 * Serves `fetch` with node:http, mapping the connection policy onto its server options. Used by
 * adapters/node/mod.ts, and by adapters/deno/mod.ts as its fallback engine (Deno's node:http compat
 * enforces the same options with the same numbers).
 */
export function serveNodeHttp(
  fetch: FetchHandler,
  config: Config,
  logger: Logger,
  options: NodeHttpOptions = {},
): Promise<EngineServer> {
  const reapInJs = options.idle === "reaper";
  const exactIdle = !reapInJs && hasKeepAliveBufferOption();
  const idle = config.idleTimeoutMs;
  const hint = keepAliveHintSeconds(idle);
  // The close lands at keepAliveTimeout + buffer = IDLE_TIMEOUT, and node:http advertises
  // floor(keepAliveTimeout / 1000). With the buffer option: keepAliveTimeout is the hint in ms and
  // the buffer the rest (docs/runtimes.md#node-keep-alive-header). Without it: the fixed 1 s buffer.
  // 0 disables; the reaper (Bun's node:http) keeps node:http's own timer off.
  const keepAliveTimeout = idle === 0 || reapInJs ? 0 : exactIdle ? (hint > 0 ? hint * 1_000 : idle) : idle - KEEP_ALIVE_BUFFER_MS;
  // Where node:http's own header would not be `timeout=<hint>` (none with the reaper, `timeout=0`
  // for IDLE_TIMEOUT of 1 s or less, one second short for a fractional IDLE_TIMEOUT without the
  // buffer option), each response gets the hint instead: node:http only sends it on a response
  // that keeps the connection open, and it does not touch the close.
  const nativeHint = keepAliveTimeout > 0 ? Math.floor(keepAliveTimeout / 1_000) : 0;
  const hintMs = nativeHint !== hint || (keepAliveTimeout > 0) !== (hint > 0) ? hint * 1_000 : undefined;
  let draining = false;
  const limitOf = bodyLimits(config.bodyLimitBytes, config.bodyLimitByPath);
  const listener = getRequestListener((request, env) => {
    const { incoming, outgoing } = env as HttpBindings;
    const res = outgoing as Response_;
    // node:http reads exactly a declared Content-Length (checked before the app runs); a chunked
    // body is counted as the app reads it.
    if (incoming.headers["transfer-encoding"] !== undefined) request = limitBody(request, limitOf(request));
    res[REQUEST] = request;
    if (hintMs !== undefined) res._keepAliveTimeout = hintMs;
    if (draining) res.shouldKeepAlive = false;
    return fetch(request, env);
  });
  const trustProxy = config.trustProxy;
  const handle = (incoming: IncomingMessage, outgoing: ServerResponse) => {
    // Origin form (`/path`) is every ordinary request; anything else is rare.
    if (trustProxy || incoming.url?.charCodeAt(0) !== SLASH) requestTarget(incoming, trustProxy);
    // No app sees a GET's or HEAD's body (@hono/node-server gives none), so one that declares a
    // body gets `Connection: close`: Deno's node:http otherwise kept waiting for the rest of it,
    // past REQUEST_TIMEOUT (docs/runtimes.md#deno-node-http-compatibility).
    const method = incoming.method;
    if ((method === "GET" || method === "HEAD") && declaresBody(incoming)) outgoing.shouldKeepAlive = false;
    listener(incoming, outgoing).catch((error: unknown) => responseFailed(outgoing, error, logger));
  };

  const upgrading = options.websockets ? lazyUpgrades() : undefined;
  const server = createServer(
    {
      keepAliveTimeout,
      ...(exactIdle ? { keepAliveTimeoutBuffer: idle - keepAliveTimeout } : {}),
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.requestTimeoutMs,
      connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS,
      // Only a WebSocket upgrade leaves the request path, and the 'upgrade' listener comes with the first.
      ...(upgrading ? { shouldUpgradeCallback: upgrading.shouldUpgrade } : {}),
    } as ServerOptions,
    handle,
  );
  // An upgraded socket is node:http's no more: its deadlines and closeAllConnections() leave it alone.
  const upgrades = options.websockets && upgrading
    ? carryWebSockets(server, fetch, config, logger, options.websockets, (incoming) => {
      if (trustProxy || incoming.url?.charCodeAt(0) !== SLASH) requestTarget(incoming, trustProxy);
    }, upgrading)
    : undefined;
  // Everything per connection, nothing per request: a response's end and its client's departure
  // are read off the socket (node:http keeps the response in flight as socket._httpMessage until
  // it finishes), which spares every request a 'close' listener of its own.
  const sockets = new Set<Socket_>();
  const checking = checkOnlyWithConnections(server, sockets);
  function socketClosed(this: Socket_) {
    sockets.delete(this);
    checking.closed();
    const res = this._httpMessage;
    // Closed while a response was unfinished: the client left early. Tell the lifecycle, without
    // the cost of an AbortSignal listener on every request.
    if (res && !res.writableFinished && res[REQUEST]) reportClientGone(res[REQUEST]);
  }
  // Past the limit a connection is closed as soon as it is accepted, before it costs more than a
  // descriptor for a moment, and counted. node:http's own maxConnections, a little higher, closes
  // the rest of a burst before JavaScript sees it, so sockets still closing cannot run the process
  // out of descriptors; it says so with 'drop' on Node and Bun (Deno's node:http closes them
  // without a word).
  const limit = connectionLimit(config);
  const refused = limit ? refusals(logger, limit) : undefined;
  if (limit) {
    server.maxConnections = limit.max + Math.min(NATIVE_LIMIT_HEADROOM, FD_RESERVE / 2);
    server.on("drop", () => refused?.());
  }
  server.on("connection", (socket: Socket_) => {
    if (limit && sockets.size >= limit.max) {
      refused?.();
      socket.destroy();
      return;
    }
    sockets.add(socket);
    checking.opened();
    socket.on("close", socketClosed);
  });
  // An upgrade request counts until its answer is decided; a WebSocket is not a request in flight.
  const inFlight = () => {
    let n = upgrades?.pending() ?? 0;
    for (const socket of sockets) if (socket._httpMessage) n += 1;
    return n;
  };
  // Listening for clientError replaces Node's default answer, so give the same status (408, 431,
  // 413 or 400, then close), with a JSON body, and log the deadlines that closed it.
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
    if (error.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      // A head that completed left an unfinished message on the parser (or, on Deno's node:http, a
      // response on the socket): then it was the body that was late, even if it was answered.
      const parsing = (socket as Socket_ & { parser?: { incoming?: { complete: boolean } | null } }).parser?.incoming;
      const deadline = (parsing && !parsing.complete) || (socket as Socket_)._httpMessage ? "request_timeout" : "headers_timeout";
      logger.info(deadline, { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort });
    }
    if (socket.writable && socket.bytesWritten === 0) {
      // Half-close after the answer and destroy a moment later: destroying a socket that still has
      // unread bytes (a slowloris keeps sending) resets it, and the reset can overtake the answer.
      socket.end(clientErrorFor(error.code));
      setTimeout(() => socket.destroy(), ANSWER_LINGER_MS).unref();
      return;
    }
    socket.destroy(error);
  });
  const logIdle = (socket: Socket) => {
    logger.info("idle_timeout", { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort });
  };
  let closeIdle = () => server.closeIdleConnections();
  if (reapInJs) {
    const reaper = reapIdleConnections(server, config.idleTimeoutMs, logIdle);
    closeIdle = () => reaper.closeIdle();
  } else {
    // Only the keep-alive timer sets a socket timeout here (server.timeout is 0), so a 'timeout'
    // is an idle connection. Listening for it means closing it ourselves.
    server.on("timeout", (socket: Socket) => {
      logIdle(socket);
      socket.destroy();
    });
  }

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: config.port, host: config.host, reusePort: config.reusePort }, () => {
      server.off("error", reject);
      // Once listening, an 'error' is a failed accept (EMFILE when out of descriptors, if libuv
      // could not shed the connection itself): log it and keep serving; unheard, it would crash.
      server.on("error", acceptFailures(logger));
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : config.port;
      resolve({
        url: displayUrl(config.host, port),
        limit,
        inFlight,
        openConnections: () => sockets.size,
        drain() {
          draining = true;
          // server.close() and closeIdleConnections() leave open a socket that has sent nothing
          // (before Node 26.4) or part of a head (every version), and it would hold the exit until
          // SHUTDOWN_TIMEOUT (docs/runtimes.md#node-close-leaves-some-connections-open). So close
          // every socket with no response in progress (none on the socket: silent, half a head, or
          // idle), now and again until the server has closed, for those that become so: a busy one
          // whose response ended, one accepted as the listener closed. A head that completed, its
          // body still arriving, has its response: in flight, kept.
          // A socket taken by an upgrade is the policy's to close (1001), and holds the server's close until it is.
          const closeNotBusy = () => {
            for (const socket of sockets) if (!socket._httpMessage && !upgrades?.taken.has(socket)) socket.destroy();
            closeIdle();
          };
          const sweep = setInterval(closeNotBusy, DRAIN_SWEEP_MS).unref();
          // Once a response in flight is done, its socket is idle: close it at once instead of
          // letting it linger for keepAliveTimeout (once every 'close' listener has run).
          const closeWhenDone = () => setImmediate(closeNotBusy);
          for (const socket of sockets) {
            const res = socket._httpMessage;
            if (!res) continue;
            // Not started yet: answer with `Connection: close`. Started: closed once it ends.
            if (!res.headersSent) res.shouldKeepAlive = false;
            else res.once("close", closeWhenDone);
          }
          return new Promise<void>((done) => {
            server.close(() => {
              clearInterval(sweep);
              done();
            });
            closeNotBusy();
          });
        },
        cut() {
          const cut = inFlight();
          server.closeAllConnections();
          upgrades?.cut();
          return cut;
        },
      });
    });
  });
}
