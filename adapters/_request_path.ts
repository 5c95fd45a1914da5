import { fetchOf } from "../src/policy/app.ts";
import { type DeclaredLength, withDeclaredBodyLimit } from "../src/policy/body.ts";
import { type LifecycleOptions, withLifecycle } from "../src/policy/lifecycle.ts";
import { type Route, withRoutes } from "../src/policy/routes.ts";
import type { App, FetchHandler } from "../src/policy/types.ts";

/** What the request path is made of beside the app. */
export interface RequestPathParts {
  /** The probes (and any other route `serve()` answers) in front of the app. */
  readonly routes: readonly Route[];
  /** The body limit for a request. */
  readonly limitOf: (request: Request) => number;
  /** A request's declared Content-Length, where the engine has it cheaper than `request.headers`. */
  readonly declaredLength?: DeclaredLength;
  /** Where the lifecycle logs and counts each request's end. */
  readonly lifecycle: LifecycleOptions;
}

/**
 * The request path around any app, on every target (`serve()` on Node, Bun and Deno, and the
 * Cloudflare worker): the lifecycle outermost (every request's end, every error answered once),
 * then a declared body over the limit refused, then the probes, then the app with our error
 * handler in place of Hono's default. The engines and the worker only carry what this returns.
 */
export function requestPath(app: App, { routes, limitOf, declaredLength, lifecycle }: RequestPathParts): FetchHandler {
  return withLifecycle(withDeclaredBodyLimit(withRoutes(fetchOf(app), routes), limitOf, declaredLength), lifecycle);
}
