import { METRICS_CONTENT_TYPE, type Registry } from "../policy/metrics.ts";
import type { FetchHandler } from "../policy/types.ts";

/** A path answered by a handler of its own: exactly `path`, or everything under it when it ends in `/`. */
export type Route = readonly [path: string, handler: FetchHandler];

/** The path of a request URL, found the way Hono finds it: no URL object per request. */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start < 0) return "/";
  const query = url.indexOf("?", start);
  return query < 0 ? url.slice(start) : url.slice(start, query);
}

/**
 * Answers `routes` with their own handlers, everything else with `fetch`. The operational routes
 * and the modules' are put in front of the app this way, so the app stays the user's alone. The
 * path is matched in place in the URL, with no slice or URL object per request: this runs for
 * every request the app serves.
 */
export function withRoutes(fetch: FetchHandler, routes: readonly Route[]): FetchHandler {
  if (routes.length === 0) return fetch;
  return (request, env, executionCtx) => {
    const url = request.url;
    const start = url.indexOf("/", url.indexOf("//") + 2);
    if (start > 0) {
      for (const [path, handler] of routes) {
        if (!url.startsWith(path, start)) continue;
        const end = start + path.length;
        // A prefix route matches anything under it; an exact one only a path that ends there.
        if (path.endsWith("/") || end === url.length || url.charCodeAt(end) === QUESTION_MARK) return handler(request, env, executionCtx);
      }
    }
    return fetch(request, env, executionCtx);
  };
}

const QUESTION_MARK = 63;

/**
 * `GET /healthz` (liveness: 200 while the process serves), `GET /readyz` (readiness: 200 while
 * `ready()`, 503 once shutdown has begun) and `GET /metrics` (`exposition()`: the registry, in
 * Prometheus' text format, or with several workers all of theirs).
 */
export function operationalRoutes(
  registry: Registry,
  ready: () => boolean,
  exposition: () => string | Promise<string> = () => registry.render(),
): Route[] {
  const onlyGet = (request: Request, answer: () => Response | Promise<Response>): Response | Promise<Response> =>
    request.method === "GET" || request.method === "HEAD"
      ? answer()
      : Response.json({ error: "method_not_allowed", message: `Use GET for ${pathOf(request.url)}` }, {
        status: 405,
        headers: { allow: "GET, HEAD" },
      });
  return [
    ["/healthz", (request) => onlyGet(request, () => Response.json({ status: "ok" }))],
    // No `Connection: close` on the 503: during SHUTDOWN_DELAY the server still serves keep-alive
    // connections, and the drain closes them once the delay is over.
    [
      "/readyz",
      (request) =>
        onlyGet(request, () => ready() ? Response.json({ status: "ready" }) : Response.json({ status: "draining" }, { status: 503 })),
    ],
    [
      "/metrics",
      (request) => onlyGet(request, async () => new Response(await exposition(), { headers: { "content-type": METRICS_CONTENT_TYPE } })),
    ],
  ];
}
