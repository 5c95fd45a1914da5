import { bodyLimits } from "../../src/policy/body.ts";
import type { Config } from "../../src/policy/config.ts";
import { errorResponse } from "../../src/policy/errors.ts";
import { isTrackedStream } from "../../src/policy/lifecycle.ts";
import type { Logger } from "../../src/policy/log.ts";
import { jsonResponse } from "../../src/policy/respond.ts";
import type { FetchHandler } from "../../src/policy/types.ts";
import { type Upgrade, upgradeOf, type WebSockets } from "../../src/policy/websocket.ts";
import { watchDisconnects } from "../_disconnect_watch.ts";
import { guardBody, releaseBody } from "../_request_body.ts";
import { fromConnection, originalOf } from "../_request_url.ts";
import { displayUrl, type EngineServer } from "../_types.ts";
import { bunIdleSeconds, rearmBeforeEnd } from "./_idle.ts";
import { keepAliveHeader, withKeepAliveHint } from "./_keep_alive.ts";
import { bunWebSocket, type SocketData } from "./_websocket.ts";

/** While draining, how often Bun.serve is asked whether a request is still in flight. */
const DRAIN_POLL_MS = 25;

/**
 * Serves the app with Bun.serve, keeping Bun's one idle timer off while a request is at work, and
 * upgrading the requests the app answered with `upgradeWebSocket` to WebSockets under the policy.
 */
export function serveBun(fetch: FetchHandler, config: Config, logger: Logger, websockets: WebSockets): Promise<EngineServer> {
  const idleSeconds = bunIdleSeconds(config.idleTimeoutMs);
  // Bun.serve sends no Keep-Alive header of its own and passes the app's through: tell clients the
  // idle timeout here. Its close comes after IDLE_TIMEOUT, never before the advertised time
  // (docs/runtimes.md#bunserve-sends-no-keep-alive-header).
  const keepAlive = keepAliveHeader(config.idleTimeoutMs);
  const limitOf = bodyLimits(config.bodyLimitBytes, config.bodyLimitByPath);
  const trustProxy = config.trustProxy;
  let draining = false;
  const disconnects = watchDisconnects();
  const expired = (raw: Request) => {
    const address = server.requestIP(raw);
    logger.info("request_timeout", { remoteAddress: address?.address, remotePort: address?.port });
  };
  /** The response is complete: a body the app did not read no longer has a deadline, and the connection is idle. */
  const rearm = (request: Request, raw: Request) => {
    if (request !== raw) void releaseBody(request);
    server.timeout(raw, idleSeconds);
  };
  /** `response` for `request`, its idle timer off since fetch began if `timerOff`. */
  const answer = (request: Request, raw: Request, response: Response, timerOff = false): Response => {
    // Only streams that go through the lifecycle helper can be told apart: reading
    // `response.body` of a string body makes Bun drop the content type it would infer (text/plain
    // becomes application/octet-stream). Reading or setting its headers does not.
    if (isTrackedStream(response) && response.body !== null) {
      if (!timerOff) server.timeout(raw, 0);
      const body = rearmBeforeEnd(response.body, () => rearm(request, raw));
      response = new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
    } else if (timerOff) rearm(request, raw);
    else if (request !== raw) void releaseBody(request);
    // Not while draining: Bun closes the connection after the response.
    return keepAlive === undefined || draining ? response : withKeepAliveHint(response, keepAlive);
  };
  /**
   * Upgrades `raw` (the request Bun handed in: Bun upgrades no other) as the app asked; undefined
   * tells Bun the 101 went out. The socket's own timer is off (`bunWebSocket`): the HTTP idle
   * timer of the request does not follow it.
   */
  const upgrade = (request: Request, raw: Request, asked: Upgrade, timerOff = false): Response | undefined => {
    const data: SocketData = { upgrade: asked, events: undefined, url: raw.url };
    if (server.upgrade(raw, { data })) return undefined;
    // Bun refuses a handshake it cannot complete (no Sec-WebSocket-Key, say): the client's request is at fault.
    const refused = jsonResponse({ error: "bad_request", message: "The WebSocket handshake is incomplete" }, 400, { connection: "close" });
    return answer(request, raw, refused, timerOff);
  };
  const server = Bun.serve<SocketData>({
    hostname: config.host,
    port: config.port,
    reusePort: config.reusePort,
    // Also what a new request resets the connection's timer to, before fetch turns it off.
    idleTimeout: idleSeconds,
    fetch(raw, server) {
      // Bun.serve takes its URL from the Host header, whatever the target: only a trusted proxy's scheme changes it.
      const seen = trustProxy ? fromConnection(raw, true) : raw;
      const request = seen.body === null
        ? seen
        : guardBody(seen, { timeoutMs: config.requestTimeoutMs, limitBytes: limitOf(seen), onExpire: () => expired(raw) });
      const result = fetch(request, server);
      // Nothing runs between the request's arrival and here, so Bun's idle timer (reset by the
      // request) needs touching only for a response that is not complete yet.
      // Only a 501 is asked whether it is an upgrade (upgradeOf): every other response pays one comparison.
      if (!(result instanceof Promise)) {
        const asked = upgradeOf(result);
        return asked ? upgrade(request, raw, asked) : answer(request, raw, result);
      }
      // Bun's idle timer also kills slow handlers and silent streams: off while we work.
      server.timeout(raw, 0);
      disconnects.start(request, raw);
      return result.then(
        (response) => {
          disconnects.stop(request);
          const asked = upgradeOf(response);
          return asked ? upgrade(request, raw, asked, true) : answer(request, raw, response, true);
        },
        (error: unknown) => {
          disconnects.stop(request);
          rearm(request, raw);
          throw error;
        },
      );
    },
    websocket: bunWebSocket(config, websockets, logger),
    // What escapes the lifecycle's own answer (an error in Bun's handling around it).
    error: (error) => errorResponse(error, undefined, logger),
  });
  if (trustProxy) {
    // An app that upgrades itself (Hono's hono/bun helper calls `c.env.upgrade(c.req.raw)`) passes
    // the copy made for a trusted proxy's scheme, and Bun upgrades only the request it handed in.
    const upgradeOwn = server.upgrade.bind(server);
    server.upgrade = ((request, options) => upgradeOwn(originalOf(request), options)) as typeof server.upgrade;
  }
  return Promise.resolve({
    url: displayUrl(config.host, server.port ?? config.port),
    // Bun.serve stops accepting at the descriptor limit and resumes once some close
    // (docs/runtimes.md#bun-stops-accepting-at-the-fd-limit);
    // the descriptor watchdog (_connection_limit.ts) logs it.
    limit: null,
    inFlight: () => server.pendingRequests,
    drain() {
      draining = true;
      const stopped = server.stop();
      // stop() waits for a connection that sent part of a head as if it were a request, until
      // SHUTDOWN_TIMEOUT, and Bun.serve shows no connection without a request, so there is none to
      // close on its own: once no request is in flight (streams included), stop(true) closes what
      // is left (docs/runtimes.md#bun-request-signal-and-stop). A silent connection
      // never reaches Bun: its listener defers the accept until the first byte. WebSockets are the
      // policy's to close (1001 at step 5, LongLived): stop(true) would send Bun's own 1001 to them.
      const sweep = setInterval(() => {
        if (server.pendingRequests > 0 || server.pendingWebSockets > 0) return;
        clearInterval(sweep);
        void server.stop(true);
      }, DRAIN_POLL_MS);
      return stopped.finally(() => clearInterval(sweep));
    },
    cut() {
      const cut = server.pendingRequests;
      void server.stop(true);
      return cut;
    },
  });
}
