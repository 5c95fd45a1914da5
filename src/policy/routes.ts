import type { FetchHandler } from "./types.ts";
import { pathOf } from "./url.ts";

/** A path answered by a handler of its own: exactly `path`, or everything under it when it ends in `/`. */
export type Route = readonly [path: string, handler: FetchHandler];

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

/** Where `serve()` answers its probes: a path each, or `false` for none. */
export interface ProbePaths {
  /** Liveness: 200 while the process serves. @default "/healthz" */
  readonly healthz?: string | false;
  /** Readiness: 200 until shutdown begins, 503 from then on. @default "/readyz" */
  readonly readyz?: string | false;
  /** The registry in Prometheus' text format. @default "/metrics" */
  readonly metrics?: string | false;
}

/** What `/metrics` answers: the registry's exposition, or on a platform without one, why not. */
export type MetricsAnswer = (request: Request) => Response | Promise<Response>;

/**
 * `GET /healthz` (liveness: 200 while the process serves), `GET /readyz` (readiness: 200 while
 * `ready()`, 503 once shutdown has begun) and `GET /metrics` (`metrics`), each at the path `paths`
 * gives it, or left out where that is `false`. Any other method gets 405.
 */
export function operationalRoutes(ready: () => boolean, metrics: MetricsAnswer, paths: ProbePaths = {}): Route[] {
  const onlyGet = (request: Request, answer: () => Response | Promise<Response>): Response | Promise<Response> =>
    request.method === "GET" || request.method === "HEAD"
      ? answer()
      : Response.json({ error: "method_not_allowed", message: `Use GET for ${pathOf(request.url)}` }, {
        status: 405,
        headers: { allow: "GET, HEAD" },
      });
  const routes: Array<Route | false> = [
    paths.healthz !== false && [paths.healthz ?? "/healthz", (request) => onlyGet(request, () => Response.json({ status: "ok" }))],
    // No `Connection: close` on the 503: during SHUTDOWN_DELAY the server still serves keep-alive
    // connections, and the drain closes them once the delay is over.
    paths.readyz !== false && [
      paths.readyz ?? "/readyz",
      (request) =>
        onlyGet(request, () => ready() ? Response.json({ status: "ready" }) : Response.json({ status: "draining" }, { status: 503 })),
    ],
    paths.metrics !== false && [paths.metrics ?? "/metrics", (request) => onlyGet(request, () => metrics(request))],
  ];
  return routes.filter((route) => route !== false);
}
