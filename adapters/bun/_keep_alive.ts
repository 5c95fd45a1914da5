import { keepAliveHintSeconds } from "../_keep_alive.ts";

/** The `Keep-Alive` header value for IDLE_TIMEOUT `idleTimeoutMs`, or undefined for none. */
export function keepAliveHeader(idleTimeoutMs: number): string | undefined {
  const seconds = keepAliveHintSeconds(idleTimeoutMs);
  return seconds > 0 ? `timeout=${seconds}` : undefined;
}

/**
 * `response` with `Keep-Alive: <value>` added, for Bun.serve, which sends none; not on a protocol
 * switch. Neither the request's nor the response's `Connection` is read: every header read or
 * written is work on each response, and a close (asked by the client or the app) makes the hint
 * moot, since the client sees the connection end
 * (docs/runtimes.md#bunserve-sends-no-keep-alive-header). Setting a header is safe on Bun: only
 * reading the body drops the content type Bun would infer
 * (docs/runtimes.md#bun-drops-an-inferred-content-type-when-a-response-is-read).
 */
export function withKeepAliveHint(response: Response, value: string): Response {
  if (response.status === 101) return response;
  try {
    response.headers.set("keep-alive", value);
    return response;
  } catch {
    // Immutable headers (a response straight from fetch(), Response.redirect()): copy them.
    const copy = new Response(response.body, response);
    copy.headers.set("keep-alive", value);
    return copy;
  }
}
