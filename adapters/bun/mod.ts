import { refuse, type Wording } from "../../src/policy/config.ts";
import type { BunEngine, Serve } from "../../src/policy/types.ts";
import { requireRuntime } from "../_runtime.ts";
import { serveWith } from "../_serve.ts";
import type { Engines } from "../_types.ts";
import { declaredLengthOnNode, serveNodeHttp } from "../node/_node_http.ts";
import { serveBun } from "./_bun_serve.ts";
import { BUN_MAX_IDLE_MS } from "./_idle.ts";

requireRuntime("bun");

/**
 * The `engine` option (BUN_ENGINE in the entries) picks what serves connections:
 * - `bun-serve` (what `auto` picks for idleTimeoutMs up to 252 s): Bun.serve, Bun's fast path.
 * - `bun-node-http` (what `auto` picks above that, or when maxConnections is set): Bun's node:http
 *   with the idle timer in JavaScript, because Bun's own timer stops at 255 s, and because Bun.serve
 *   does not expose its connections, so it cannot count them. Slower than Bun.serve (docs/runtimes.md).
 */
const engines: Engines<BunEngine> = {
  engines: {
    "bun-serve": {
      check(config) {
        const instead = (w: Wording) => `use ${w.use("engine", "auto")} or ${w.value("engine", "bun-node-http")}`;
        if (config.idleTimeoutMs > BUN_MAX_IDLE_MS) {
          return [
            refuse(
              "idleTimeoutMs",
              config.idleTimeoutMs,
              (w) =>
                `${w.given("idleTimeoutMs", config.idleTimeoutMs)} is longer than Bun.serve can keep a connection (252s): ${instead(w)}`,
            ),
          ];
        }
        if (config.maxConnections) {
          return [
            refuse(
              "maxConnections",
              config.maxConnections,
              (w) =>
                `${
                  w.given("maxConnections", config.maxConnections)
                } cannot be enforced by Bun.serve, which does not expose its connections: ${instead(w)}`,
            ),
          ];
        }
        return [];
      },
      serve: (fetch, config, logger, websockets) => serveBun(fetch, config, logger, websockets),
    },
    "bun-node-http": {
      // Bun's node:http fails to bind a port another process holds, reusePort or not (docs/runtimes.md#several-processes-on-one-port).
      check: (config) =>
        config.reusePort
          ? [
            refuse("reusePort", true, (w) =>
              `${w.given("reusePort", true)} needs the workers to share the port, which Bun's node:http cannot: use ${
                w.use("engine", "bun-serve")
              } (${w.name("idleTimeoutMs")} at most ${w.value("idleTimeoutMs", BUN_MAX_IDLE_MS)}, no ${w.name("maxConnections")}) or ${
                w.use("reusePort", false)
              }`),
          ]
          : [],
      serve: (fetch, config, logger, websockets) => serveNodeHttp(fetch, config, logger, { idle: "reaper", websockets }),
      declaredLength: declaredLengthOnNode,
    },
  },
  auto: (config) => config.idleTimeoutMs > BUN_MAX_IDLE_MS || config.maxConnections ? "bun-node-http" : "bun-serve",
};

/** Serves `app` on Bun with the engine the options call for, enforcing the whole connection policy. */
export const serve: Serve<BunEngine> = (app, options) => serveWith("bun", engines, app, options);
