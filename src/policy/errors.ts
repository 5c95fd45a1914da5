import type { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { AnsweredException, overBodyLimit } from "./body.ts";
import type { Logger } from "./log.ts";
import { jsonResponse } from "./respond.ts";
import { pathOf } from "./url.ts";

/**
 * The 400 for a request whose Host header and target do not form a URL, or undefined for any
 * other error. The runtimes let some through (a host like `p27.0.0.1`: a numeric last label that
 * is no IPv4 address) and fail only when a Request is built from them: undici (Node) says "Failed
 * to parse URL from ...", Bun "Failed to construct 'Request': Invalid URL ...". The client's
 * error, not the handler's.
 */
export function invalidUrl(error: unknown): Response | undefined {
  if (!(error instanceof TypeError) || !/^Failed to parse URL from|Invalid URL/.test(error.message)) return undefined;
  return Response.json({ error: "bad_request", message: "The Host header and request target do not form a valid URL" }, { status: 400 });
}

/** The body of the 500 for an error no handler dealt with: nothing of the error itself. */
export const INTERNAL_ERROR = { error: "internal_error", message: "The server failed to handle this request" } as const;

/** The 500 every engine answers for an error no handler dealt with: no message or stack of the error reaches the client. */
export function internalError(): Response {
  return jsonResponse(INTERNAL_ERROR, 500);
}

/**
 * The one answer to an error the app did not answer itself, on every engine and on Cloudflare Workers (as
 * srvx's error plugin): an `HTTPException` its own response; any error while reading a body cut at
 * the body limit, 413; a Host and target that form no URL, 400; anything else 500
 * `{"error":"internal_error"}` and one `handler_error` event, its stack in the `error` field.
 * `request` is undefined where a runtime reports an error without one.
 */
export function errorResponse(error: unknown, request: Request | undefined, logger: Logger): Response {
  if (error instanceof HTTPException) return error.getResponse();
  // Already logged where it happened (a response body that failed, which Deno hands its onError too).
  if (typeof error === "object" && error !== null && LOGGED.has(error)) return internalError();
  // The runtime may hand the app its own error for a body stream that failed, not ours.
  const tooLarge = request && overBodyLimit(request);
  if (tooLarge) return tooLarge.getResponse();
  const invalid = invalidUrl(error);
  if (invalid) return invalid;
  logger.error("handler_error", request ? { method: request.method, path: pathOf(request.url), error } : { error });
  return internalError();
}

/** Errors already logged as events, so that no engine logs one twice. */
const LOGGED = new WeakSet<object>();

/** For the lifecycle: `error` has been logged (`response_failed`); an engine that reports it again logs nothing more. */
export function markLogged(error: unknown): void {
  if (typeof error === "object" && error !== null) LOGGED.add(error);
}

const ERROR_NAMES: Record<number, string> = { 400: "bad_request", 408: "request_timeout", 413: "payload_too_large" };

/**
 * Makes a Hono app answer every error with JSON that says what was wrong: 404 for an unknown
 * route, an HTTPException that carries no response of its own a JSON body with its status and
 * message, and anything else as `errorResponse` does. The example app's choice; `serve()` answers
 * errors the same way without it, 404 aside. Returns the app.
 */
// deno-lint-ignore no-explicit-any
export function jsonErrors<A extends Hono<any, any, any>>(app: A, logger: Logger): A {
  app.notFound((c) => c.json({ error: "not_found", message: `No route for ${c.req.method} ${c.req.path}` }, 404));
  app.onError((error, c) => {
    if (error instanceof HTTPException && !error.res && !(error instanceof AnsweredException)) {
      const headers: Record<string, string> = error.status === 408 ? { connection: "close" } : {};
      return c.json({ error: ERROR_NAMES[error.status] ?? "http_error", message: error.message }, error.status, headers);
    }
    return errorResponse(error, c.req.raw, logger);
  });
  return app;
}
