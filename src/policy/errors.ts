import type { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Logger } from "./log.ts";

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

/** The 500 every engine answers for an error no handler dealt with. */
export function internalError(): Response {
  return Response.json({ error: "internal_error", message: "The server failed to handle this request" }, { status: 500 });
}

const ERROR_NAMES: Record<number, string> = { 400: "bad_request", 408: "request_timeout", 413: "payload_too_large" };

/**
 * Makes a Hono app answer every error with JSON that says what was wrong: 404 for an unknown
 * route, an HTTPException's own status (408 closes the connection: the rest of the body is not
 * worth reading), 400 for a Host that forms no URL, and 500 (logged as `handler_error`) for
 * anything else. Returns the app.
 */
// deno-lint-ignore no-explicit-any
export function jsonErrors<A extends Hono<any, any, any>>(app: A, logger: Logger): A {
  app.notFound((c) => c.json({ error: "not_found", message: `No route for ${c.req.method} ${c.req.path}` }, 404));
  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      if (error.res) return error.res;
      const headers: Record<string, string> = error.status === 408 ? { connection: "close" } : {};
      return c.json({ error: ERROR_NAMES[error.status] ?? "http_error", message: error.message }, error.status, headers);
    }
    const invalid = invalidUrl(error);
    if (invalid) return invalid;
    logger.error("handler_error", { method: c.req.method, path: c.req.path, error });
    return internalError();
  });
  return app;
}
