/**
 * The request as the app should see it where the runtime builds its URL from the request target
 * (Deno.serve takes an absolute-form target, `GET https://user:pass@host/x`, as it stands): the
 * scheme is the connection's (plaintext: `http`), or, with `trustProxy`, the one
 * `X-Forwarded-Proto` names (`http` or `https`), and the URL carries no credentials (they make
 * `request.clone()` throw). An ordinary request (`http://` and no `@`) is returned as it is, for
 * a string check; Bun.serve builds its URL from the Host header and needs only the proxy part.
 */
export function fromConnection(request: Request, trustProxy: boolean): Request {
  const url = request.url;
  if (!trustProxy && url.charCodeAt(4) === COLON && !url.includes("@")) return request;
  const parsed = new URL(url);
  let scheme = "http:";
  if (trustProxy) {
    const forwarded = request.headers.get("x-forwarded-proto")?.split(",", 1)[0]?.trim().toLowerCase();
    if (forwarded === "https" || forwarded === "http") scheme = `${forwarded}:`;
  }
  if (parsed.protocol === scheme && parsed.username === "" && parsed.password === "") return request;
  parsed.protocol = scheme;
  parsed.username = parsed.password = "";
  const copy = new Request(
    parsed.href,
    { method: request.method, headers: request.headers, body: request.body, signal: request.signal, duplex: "half" } as RequestInit,
  );
  originals.set(copy, request);
  return copy;
}

/** The runtime's own request behind each copy `fromConnection` made: only it can be upgraded. */
const originals = new WeakMap<Request, Request>();

/**
 * The request the runtime handed in, for `request` as the app sees it: a runtime upgrades only its
 * own (Bun's `server.upgrade`, `Deno.upgradeWebSocket`), and an app that calls that itself (Hono's
 * `hono/bun` and `hono/deno` helpers) passes the copy made for a trusted proxy's scheme.
 */
export function originalOf(request: Request): Request {
  return originals.get(request) ?? request;
}

const COLON = 58;
