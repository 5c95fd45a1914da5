import type { NodeEngine, Serve } from "../../src/policy/types.ts";
import { checkNodeHttp, declaredLengthOnNode, serveNodeHttp } from "./_node_http.ts";
import { requireRuntime } from "../_runtime.ts";
import { serveWith } from "../_serve.ts";
import type { Engines } from "../_types.ts";

requireRuntime("node");

const engines: Engines<NodeEngine> = {
  engines: {
    "node-http": {
      check: checkNodeHttp,
      serve: (fetch, config, logger, websockets) => serveNodeHttp(fetch, config, logger, { websockets }),
      declaredLength: declaredLengthOnNode,
    },
  },
  auto: () => "node-http",
};

/** Serves `app` on Node with node:http (through @hono/node-server), enforcing the whole connection policy. */
export const serve: Serve<NodeEngine> = (app, options) => serveWith("node", engines, app, options);
