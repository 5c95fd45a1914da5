import process from "node:process";
import { internalError } from "../src/app.ts";
import type { Config } from "../src/config.ts";
import { acceptFailures, connectionLimit, refusals } from "./_connection_limit.ts";
import { findServeHttpOnConnection, serveConnections } from "./_deno_connections.ts";
import { watchDisconnects } from "./_disconnect_watch.ts";
import { main } from "./_main.ts";
import { checkNodeHttp, serveNodeHttp } from "./_node_http.ts";
import { displayUrl, type Serve } from "./_types.ts";

const ENGINES = ["auto", "per-connection", "node-http"] as const;
type Engine = (typeof ENGINES)[number];

/**
 * `DENO_ENGINE` picks what serves connections:
 * - `per-connection` (what `auto` picks when this Deno has it): Deno's HTTP server, one connection
 *   at a time under its own AbortSignal, so the adapter can enforce the idle and head deadlines
 *   that Deno.serve lacks. Uses an internal API (see adapters/_deno_connections.ts).
 * - `node-http`: Deno's node:http compatibility, which enforces Node's options with Node's
 *   numbers at about a quarter of Deno.serve's throughput. The fallback.
 */
function engineFromEnv(): Engine {
  return (process.env.DENO_ENGINE?.trim() || "auto") as Engine;
}

function check(config: Config): string[] {
  const engine = engineFromEnv();
  if (!ENGINES.includes(engine)) {
    return [`DENO_ENGINE "${engine}" is not an engine: use auto, per-connection or node-http`];
  }
  if (engine === "per-connection" && !findServeHttpOnConnection()) {
    return [`DENO_ENGINE "per-connection" is not available in Deno ${Deno.version.deno}: use auto or node-http`];
  }
  return engine === "per-connection" || (engine === "auto" && findServeHttpOnConnection()) ? [] : checkNodeHttp(config);
}

/** Serves the app on Deno with the connection policy Deno.serve does not enforce by itself. */
export const serve: Serve = async (fetch, config, logger) => {
  const engine = engineFromEnv();
  if (engine === "node-http" || !findServeHttpOnConnection()) {
    if (engine === "auto") logger.warn("engine_fallback", { reason: `serveHttpOnConnection is missing in Deno ${Deno.version.deno}` });
    const server = await serveNodeHttp(fetch, config, logger);
    return { ...server, engine: "node:http (Deno compat)" };
  }
  const listener = Deno.listen({ hostname: config.host, port: config.port });
  const limit = connectionLimit(config);
  const server = serveConnections(listener, fetch, {
    maxConnections: limit?.max ?? null,
    onRefused: limit ? refusals(logger, limit) : () => {},
    onAcceptError: acceptFailures(logger),
    idleTimeoutMs: config.idleTimeoutMs,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    disconnects: watchDisconnects(),
    onTimeout: (kind, remote) => logger.info(kind, { remoteAddress: remote.hostname, remotePort: remote.port }),
    onError(error) {
      logger.error("handler_error", { error });
      return internalError();
    },
  });
  return {
    url: displayUrl(config.host, (listener.addr as Deno.NetAddr).port),
    engine: "Deno HTTP, per connection",
    limit,
    ...server,
  };
};

await main("deno", serve, { check });
