import { Hono } from "hono";
import { errorResponse } from "./errors.ts";
import { requestLifecycleLogger } from "./lifecycle.ts";
import type { App, AppContext, AppExport, FetchHandler } from "./types.ts";

type ErrorHandler = (error: Error, c: { req: { raw: Request } }) => Response | Promise<Response>;

/** Hono's own error handler, the one an app has until it calls `onError`: text 500 and a stack on stderr. */
const HONO_DEFAULT_ERROR_HANDLER = (new Hono() as unknown as { errorHandler: ErrorHandler }).errorHandler;

/**
 * The fetch handler of an app given either way: a Hono app (anything with a `fetch`), or a fetch
 * handler. A Hono app that kept Hono's default error handler answers errors as every engine does
 * (`errorResponse`: the one JSON 500, one `handler_error` event) instead: within the app, so its
 * middleware still sees the error response (`c.error`, headers added after `next()`). An app's own
 * `onError`, and a sub-app's, stay as they are.
 */
export function fetchOf(app: App): FetchHandler {
  if (typeof app === "function") return app;
  const hono = app as { errorHandler?: unknown };
  if (hono.errorHandler === HONO_DEFAULT_ERROR_HANDLER) hono.errorHandler = answerError;
  // A closure rather than bind(): a bound function costs a share of a fast runtime's request.
  return (request, env, executionCtx) => app.fetch(request, env, executionCtx);
}

/** Hono's error handler for an app that has none of its own. */
const answerError: ErrorHandler = (error, c) => errorResponse(error, c.req.raw, requestLifecycleLogger(c.req.raw));

/**
 * The app an app module's default export stands for: itself, or what it makes of `context` when it
 * is a factory. A Hono app is a function's instance, not a function; anything callable without a
 * `fetch` is a factory.
 */
export function appOf(made: AppExport, context: AppContext): App | Promise<App> {
  return typeof made === "function" && !("fetch" in made) ? (made as (context: AppContext) => App | Promise<App>)(context) : made as App;
}
