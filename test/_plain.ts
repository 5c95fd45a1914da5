/**
 * What the shared suite checks a user's plain Hono app with (test/_plain_app.ts, issue #18), on
 * every engine and on workerd: raw uploads, responses parsed off a raw connection, and the
 * assertions its scenarios make.
 */
import { expect } from "bun:test";
import { fetchOnce, get } from "../harness/http.ts";
import type { ServerProcess } from "../harness/process.ts";
import { connect, type RawClient } from "../harness/raw_client.ts";

/** Opens a raw connection that is destroyed when the test ends, whatever happens. */
export async function open(port: number, defer: (cleanup: () => unknown) => void): Promise<RawClient> {
  const client = await connect(port);
  defer(() => client.destroy());
  return client;
}

/** The user's plain Hono app (issue #18): it calls none of the template's helpers. */
export const PLAIN_APP = "test/_plain_app.ts";

/** One response read off a raw connection: its status, its headers (lower-cased names), its body. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * The complete responses in `data`, in order, chunked bodies decoded; a response whose body runs
 * to the close counts only once `closed`. An incomplete one ends the list.
 */
export function parseResponses(data: string, closed = false): RawResponse[] {
  const responses: RawResponse[] = [];
  let rest = data;
  for (;;) {
    const headEnd = rest.indexOf("\r\n\r\n");
    if (headEnd < 0) return responses;
    const [statusLine = "", ...lines] = rest.slice(0, headEnd).split("\r\n");
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const status = Number(statusLine.split(" ")[1]);
    const after = rest.slice(headEnd + 4);
    if (headers["content-length"] !== undefined) {
      const length = Number(headers["content-length"]);
      if (after.length < length) return responses;
      responses.push({ status, headers, body: after.slice(0, length) });
      rest = after.slice(length);
    } else if (/chunked/i.test(headers["transfer-encoding"] ?? "")) {
      let body = "";
      let at = 0;
      for (;;) {
        const lineEnd = after.indexOf("\r\n", at);
        if (lineEnd < 0) return responses;
        const size = parseInt(after.slice(at, lineEnd), 16);
        if (Number.isNaN(size)) return responses;
        if (size === 0) {
          if (!after.startsWith("\r\n", lineEnd + 2)) return responses;
          at = lineEnd + 4;
          break;
        }
        if (after.length < lineEnd + 2 + size + 2) return responses;
        body += after.slice(lineEnd + 2, lineEnd + 2 + size);
        at = lineEnd + 2 + size + 2;
      }
      responses.push({ status, headers, body });
      rest = after.slice(at);
    } else {
      if (closed) responses.push({ status, headers, body: after });
      return responses;
    }
  }
}

/** `body` in chunked framing, `size` bytes a chunk, with the last chunk. */
function chunked(body: string, size = 1_000): string {
  let framed = "";
  for (let at = 0; at < body.length; at += size) {
    const chunk = body.slice(at, at + size);
    framed += `${chunk.length.toString(16)}\r\n${chunk}\r\n`;
  }
  return `${framed}0\r\n\r\n`;
}

/** A POST of `body` (ASCII) as raw bytes, framed by a Content-Length or chunked. */
export function upload(path: string, type: string, body: string, framing: "length" | "chunked"): string {
  const head = `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${type}\r\n`;
  return framing === "length"
    ? `${head}Content-Length: ${body.length}\r\n\r\n${body}`
    : `${head}Transfer-Encoding: chunked\r\n\r\n${chunked(body)}`;
}

/**
 * The plain app's body-reading routes, each with a body of exactly `bytes` bytes that it answers
 * `{"bytes": bytes}` for when read whole: text, JSON, a form, an ArrayBuffer and the raw stream.
 */
export const PLAIN_UPLOADS: Record<string, (bytes: number) => { type: string; body: string }> = {
  "/text": (bytes) => ({ type: "text/plain", body: "x".repeat(bytes) }),
  "/json": (bytes) => ({ type: "application/json", body: `"${"x".repeat(bytes - 2)}"` }),
  "/form": (bytes) => ({ type: "application/x-www-form-urlencoded", body: `a=${"x".repeat(bytes - 2)}` }),
  "/array": (bytes) => ({ type: "application/octet-stream", body: "x".repeat(bytes) }),
  "/raw": (bytes) => ({ type: "application/octet-stream", body: "x".repeat(bytes) }),
};

/** `path`'s upload of `bytes` bytes as raw bytes. */
export function plainUpload(path: string, bytes: number, framing: "length" | "chunked"): string {
  const { type, body } = PLAIN_UPLOADS[path]!(bytes);
  return upload(path, type, body, framing);
}

/** The lines of `text` that are not JSON: a bare stack trace, a runtime's warning. */
export function nonJson(text: string): string[] {
  return text.split("\n").filter((line) => {
    if (!line.trim()) return false;
    try {
      JSON.parse(line);
      return false;
    } catch {
      return true;
    }
  });
}

/** Writes `request` on a new connection and resolves with its complete response. */
export async function exchange(port: number, defer: (cleanup: () => unknown) => void, request: string, what: string) {
  const client = await open(port, defer);
  client.write(request);
  await client.waitFor((d) => parseResponses(d).length === 1, 3_000, what);
  return { client, response: parseResponses(client.data)[0]! };
}

/** After `response` the connection closes within 1 s if it said `Connection: close`, else it answers the next request. */
export async function expectClosedOrReusable(client: RawClient, response: RawResponse): Promise<void> {
  if (/\bclose\b/i.test(response.headers.connection ?? "")) {
    await client.waitForClose(1_000);
    return;
  }
  client.write(get("/"));
  await client.waitFor((d) => parseResponses(d).length === 2, 2_000, "an answer to the next request on the connection");
  expect(parseResponses(client.data)[1]).toMatchObject({ status: 200, body: "plain" });
}

/** A 413 JSON answer from the body limit. */
export function expectTooLarge(response: RawResponse): void {
  expect(response.status).toBe(413);
  expect(response.headers["content-type"]).toStartWith("application/json");
  expect(JSON.parse(response.body)).toMatchObject({ error: "payload_too_large" });
}

type Defer = (cleanup: () => unknown) => void;

/** A server the plain-app scenarios run against: an entry's process or workerd's. */
type PlainServer = Pick<ServerProcess, "port" | "url" | "waitForEvent" | "named" | "stderr">;

/** The plain app's count of bodies its handlers began to read. */
async function reads(server: PlainServer): Promise<number> {
  return (await (await fetchOnce(`${server.url}/reads`)).json() as { reads: number }).reads;
}

/** Scenario (BODY_LIMIT=1kb): a declared body over the limit is answered 413 JSON before any handler reads it. */
export async function declaredOverLimitRefused(server: PlainServer, defer: Defer): Promise<void> {
  const before = await reads(server);
  for (const path of Object.keys(PLAIN_UPLOADS)) {
    const { client, response } = await exchange(server.port, defer, plainUpload(path, 5_000, "length"), `the answer to ${path}`);
    expectTooLarge(response);
    await expectClosedOrReusable(client, response);
  }
  expect(await reads(server)).toBe(before);
}

/** Scenario (BODY_LIMIT=1kb): a chunked body over the limit is cut and answered 413 JSON, however the handler reads it. */
export async function chunkedOverLimitCut(server: PlainServer, defer: Defer): Promise<void> {
  await Promise.all(
    Object.keys(PLAIN_UPLOADS).map(async (path) => {
      const { client, response } = await exchange(server.port, defer, plainUpload(path, 5_000, "chunked"), `the answer to ${path}`);
      expect({ path, status: response.status }).toEqual({ path, status: 413 });
      expectTooLarge(response);
      await expectClosedOrReusable(client, response);
    }),
  );
}

/** Scenario (BODY_LIMIT=1kb): a body under the limit is read whole, declared or chunked, however the handler reads it. */
export async function underLimitRead(server: PlainServer, defer: Defer): Promise<void> {
  const answers = await Promise.all(
    Object.keys(PLAIN_UPLOADS).flatMap((path) =>
      (["length", "chunked"] as const).map(async (framing) => {
        const { response } = await exchange(server.port, defer, plainUpload(path, 500, framing), `the answer to ${path}`);
        return { path, framing, status: response.status, body: response.body };
      })
    ),
  );
  expect(answers).toEqual(answers.map(({ path, framing }) => ({ path, framing, status: 200, body: '{"bytes":500}' })));
}

/** Scenario: an error thrown at `path` is answered 500 JSON with nothing of `message`, logged once as handler_error with its stack. */
export async function thrownErrorAnswered(server: PlainServer, path: string, message: string): Promise<void> {
  const res = await fetchOnce(`${server.url}${path}`);
  expect(res.status).toBe(500);
  expect(res.headers.get("content-type")).toStartWith("application/json");
  const body = await res.text();
  expect(body).not.toContain("detail");
  expect(JSON.parse(body)).toMatchObject({ error: "internal_error" });
  const logged = await server.waitForEvent("handler_error", 1_000);
  expect(logged).toMatchObject({ level: "error", path, error: { message } });
  expect((logged.error as { stack?: unknown }).stack).toBeString();
  expect((logged.error as { stack: string }).stack).toContain(message);
  expect(server.named("handler_error")).toHaveLength(1);
  // Nothing else anywhere: no bare stack on stderr.
  expect(nonJson(server.stderr)).toEqual([]);
}
