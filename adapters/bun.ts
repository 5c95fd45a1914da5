import { bodyLimits } from "../src/policy/body.ts";
import { type Config, formatDuration } from "../src/policy/config.ts";
import { errorResponse } from "../src/policy/errors.ts";
import { isTrackedStream } from "../src/policy/lifecycle.ts";
import type { Logger } from "../src/policy/log.ts";
import type { FetchHandler, Serve } from "../src/policy/types.ts";
import { BUN_MAX_IDLE_MS, bunIdleSeconds, rearmBeforeEnd } from "./_bun_idle.ts";
import { watchDisconnects } from "./_disconnect_watch.ts";
import { declaredLengthOnNode, keepAliveHeader, serveNodeHttp, withKeepAliveHint } from "./_node_http.ts";
import { guardBody, releaseBody } from "./_request_body.ts";
import { fromConnection } from "./_request_url.ts";
import { requireRuntime } from "./_runtime.ts";
import { serveWith } from "./_serve.ts";
import { displayUrl, type Engines, type EngineServer } from "./_types.ts";

requireRuntime("bun");

/**
 * `BUN_ENGINE` (the `engine` option) picks what serves connections:
 * - `bun-serve` (what `auto` picks for IDLE_TIMEOUT up to 252 s): Bun.serve, Bun's fast path.
 * - `bun-node-http` (what `auto` picks above that, or when MAX_CONNECTIONS is set): Bun's node:http
 *   with the idle timer in JavaScript, because Bun's own timer stops at 255 s, and because Bun.serve
 *   does not expose its connections, so it cannot count them. Slower than Bun.serve (docs/runtimes.md).
 */
const engines: Engines<"bun-serve" | "bun-node-http"> = {
  variable: "BUN_ENGINE",
  engines: {
    "bun-serve": {
      check(config) {
        if (config.idleTimeoutMs > BUN_MAX_IDLE_MS) {
          return [
            `IDLE_TIMEOUT "${
              formatDuration(config.idleTimeoutMs)
            }" is longer than Bun.serve can keep a connection (252s): use BUN_ENGINE=auto or bun-node-http`,
          ];
        }
        if (config.maxConnections) {
          return [
            `MAX_CONNECTIONS "${config.maxConnections}" cannot be enforced by Bun.serve, which does not expose its connections: use BUN_ENGINE=auto or bun-node-http`,
          ];
        }
        return [];
      },
      serve: (fetch, config, logger) => serveBun(fetch, config, logger),
    },
    "bun-node-http": {
      // Bun's node:http fails to bind a port another process holds, reusePort or not (docs/runtimes.md#several-processes-on-one-port).
      check: (config) =>
        config.reusePort
          ? [
            "WORKERS above 1 needs the workers to share the port, which Bun's node:http cannot: use BUN_ENGINE=bun-serve (IDLE_TIMEOUT at most 252s, no MAX_CONNECTIONS) or WORKERS=1",
          ]
          : [],
      serve: (fetch, config, logger) => serveNodeHttp(fetch, config, logger, { idle: "reaper" }),
      declaredLength: declaredLengthOnNode,
    },
  },
  auto: (config) => config.idleTimeoutMs > BUN_MAX_IDLE_MS || config.maxConnections ? "bun-node-http" : "bun-serve",
};

/** Serves `app` on Bun with the engine the options call for, enforcing the whole connection policy. */
export const serve: Serve = (app, options) => serveWith("bun", engines, app, options);

/** While draining, how often Bun.serve is asked whether a request is still in flight. */
const DRAIN_POLL_MS = 25;

/** Serves the app with Bun.serve, keeping Bun's one idle timer off while a request is at work. */
function serveBun(fetch: FetchHandler, config: Config, logger: Logger): Promise<EngineServer> {
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
  const server = Bun.serve({
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
      if (!(result instanceof Promise)) return answer(request, raw, result);
      // Bun's idle timer also kills slow handlers and silent streams: off while we work.
      server.timeout(raw, 0);
      disconnects.start(request, raw);
      return result.then(
        (response) => {
          disconnects.stop(request);
          return answer(request, raw, response, true);
        },
        (error: unknown) => {
          disconnects.stop(request);
          rearm(request, raw);
          throw error;
        },
      );
    },
    // What escapes the lifecycle's own answer (an error in Bun's handling around it).
    error: (error) => errorResponse(error, undefined, logger),
  });
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
      // never reaches Bun: its listener defers the accept until the first byte.
      const sweep = setInterval(() => {
        if (server.pendingRequests > 0) return;
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
