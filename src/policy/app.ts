import type { App, FetchHandler } from "./types.ts";

/** The fetch handler of an app given either way: a Hono app (anything with a `fetch`), or a fetch handler. */
export function fetchOf(app: App): FetchHandler {
  if (typeof app === "function") return app;
  // A closure rather than bind(): a bound function costs a share of a fast runtime's request.
  return (request, env, executionCtx) => app.fetch(request, env, executionCtx);
}
