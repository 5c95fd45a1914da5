/**
 * A JSON response made with the global `Response`, not `Response.json()`: on Node that is
 * @hono/node-server's own, which it writes at once and after which it drains an unread request
 * body; a `Response.json()` takes its slower path, and Deno's node:http then kept a connection
 * whose unread body was refused with a 413 open (measured).
 */
export function jsonResponse(body: unknown, status: number, headers: Record<string, string> = {}): Response {
  // A Headers object, not a plain one: for a plain one @hono/node-server leaves the length to a
  // node:http internal that Bun's node:http ignores, and the answer goes out chunked.
  return new Response(JSON.stringify(body), { status, headers: new Headers({ "content-type": "application/json", ...headers }) });
}
