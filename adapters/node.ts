import { checkNodeHttp, serveNodeHttp } from "./_node_http.ts";
import { main } from "./_main.ts";
import type { Serve } from "./_types.ts";

/** Serves the app with node:http through @hono/node-server. */
export const serve: Serve = (fetch, config, logger) => serveNodeHttp(fetch, config, logger);

await main("node", serve, { check: checkNodeHttp });
