import { refuse } from "../../src/policy/config.ts";
import type { DenoEngine, Serve } from "../../src/policy/types.ts";
import { findServeHttpOnConnection, servePerConnection } from "./_per_connection.ts";
import { checkNodeHttp, declaredLengthOnNode, serveNodeHttp } from "../node/_node_http.ts";
import { requireRuntime } from "../_runtime.ts";
import { serveWith } from "../_serve.ts";
import type { Engines } from "../_types.ts";

requireRuntime("deno");

/**
 * The `engine` option (DENO_ENGINE in the entries) picks what serves connections:
 * - `deno-per-connection` (what `auto` picks when this Deno has it): Deno's HTTP server, one
 *   connection at a time under its own AbortSignal, so the adapter can enforce the idle and head
 *   deadlines that Deno.serve lacks. Uses an internal API (see adapters/deno/_per_connection.ts).
 * - `deno-node-http`: Deno's node:http compatibility, which enforces Node's options with Node's
 *   numbers, several times slower than Deno's own server (docs/runtimes.md). The fallback.
 */
const engines: Engines<DenoEngine> = {
  engines: {
    "deno-per-connection": {
      check: () =>
        findServeHttpOnConnection() ? [] : [
          refuse("engine", "deno-per-connection", (w) =>
            `${w.given("engine", "deno-per-connection")} is not available in Deno ${Deno.version.deno}: use ${
              w.value("engine", "auto")
            } or ${w.value("engine", "deno-node-http")}`),
        ],
      serve: servePerConnection,
      runtimePings: true,
    },
    "deno-node-http": {
      check: checkNodeHttp,
      serve: (fetch, config, logger, websockets) => serveNodeHttp(fetch, config, logger, { websockets }),
      declaredLength: declaredLengthOnNode,
    },
  },
  auto: () => findServeHttpOnConnection() ? "deno-per-connection" : "deno-node-http",
  fallback: (engine) => engine === "deno-node-http" ? `serveHttpOnConnection is missing in Deno ${Deno.version.deno}` : undefined,
};

/** Serves `app` on Deno with the connection policy Deno.serve does not enforce by itself. */
export const serve: Serve<DenoEngine> = (app, options) => serveWith("deno", engines, app, options);
