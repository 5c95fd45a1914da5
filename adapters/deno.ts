import { bodyLimits } from "../src/policy/body.ts";
import type { Config } from "../src/policy/config.ts";
import { errorResponse } from "../src/policy/errors.ts";
import type { Logger } from "../src/policy/log.ts";
import type { FetchHandler, Serve } from "../src/policy/types.ts";
import { acceptFailures, connectionLimit, refusals } from "./_connection_limit.ts";
import { findServeHttpOnConnection, serveConnections } from "./_deno_connections.ts";
import { watchDisconnects } from "./_disconnect_watch.ts";
import { checkNodeHttp, declaredLengthOnNode, serveNodeHttp } from "./_node_http.ts";
import { requireRuntime } from "./_runtime.ts";
import { serveWith } from "./_serve.ts";
import { displayUrl, type Engines, type EngineServer } from "./_types.ts";

requireRuntime("deno");

/**
 * `DENO_ENGINE` (the `engine` option) picks what serves connections:
 * - `deno-per-connection` (what `auto` picks when this Deno has it): Deno's HTTP server, one
 *   connection at a time under its own AbortSignal, so the adapter can enforce the idle and head
 *   deadlines that Deno.serve lacks. Uses an internal API (see adapters/_deno_connections.ts).
 * - `deno-node-http`: Deno's node:http compatibility, which enforces Node's options with Node's
 *   numbers, several times slower than Deno's own server (docs/runtimes.md). The fallback.
 */
const engines: Engines<"deno-per-connection" | "deno-node-http"> = {
  variable: "DENO_ENGINE",
  engines: {
    "deno-per-connection": {
      check: () =>
        findServeHttpOnConnection()
          ? []
          : [`DENO_ENGINE "deno-per-connection" is not available in Deno ${Deno.version.deno}: use auto or deno-node-http`],
      serve: servePerConnection,
    },
    "deno-node-http": {
      check: checkNodeHttp,
      serve: (fetch, config, logger) => serveNodeHttp(fetch, config, logger),
      declaredLength: declaredLengthOnNode,
    },
  },
  auto: () => findServeHttpOnConnection() ? "deno-per-connection" : "deno-node-http",
  fallback: (engine) => engine === "deno-node-http" ? `serveHttpOnConnection is missing in Deno ${Deno.version.deno}` : undefined,
};

/** Serves `app` on Deno with the connection policy Deno.serve does not enforce by itself. */
export const serve: Serve = (app, options) => serveWith("deno", engines, app, options);

function servePerConnection(fetch: FetchHandler, config: Config, logger: Logger): Promise<EngineServer> {
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
  });
  return Promise.resolve({ url: displayUrl(config.host, (listener.addr as Deno.NetAddr).port), limit, ...server });
}
