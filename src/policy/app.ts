import type { App, FetchHandler } from "./types.ts";

/** The fetch handler of an app given either way: a Hono app (anything with a `fetch`), or a fetch handler. */
export function fetchOf(app: App): FetchHandler {
  return typeof app === "function" ? app : app.fetch.bind(app);
}
