import { HTTPException } from "hono/http-exception";
import { jsonResponse } from "./respond.ts";
import { pathOf } from "./url.ts";
import type { FetchHandler } from "./types.ts";

/**
 * The 413 for a body over the limit, JSON like every other error, closing the connection: the
 * rest of the body is not worth reading (as Node's own parser errors close it).
 */
export function payloadTooLarge(limitBytes: number): Response {
  const message = `The request body is larger than the limit of ${limitBytes} bytes`;
  return jsonResponse({ error: "payload_too_large", message }, 413, { connection: "close" });
}

/**
 * An HTTPException whose response is made anew each time, with a body of known length: Hono's
 * `getResponse()` copies `res` into a response that streams its body (sent chunked).
 */
export class AnsweredException extends HTTPException {
  readonly #answer: () => Response;

  constructor(status: 408 | 413, message: string, answer: () => Response) {
    super(status, { message });
    this.#answer = answer;
  }

  override getResponse(): Response {
    return this.#answer();
  }
}

/** What reading a body cut at `limitBytes` fails with: an HTTPException answered with the 413. */
export function bodyTooLarge(limitBytes: number): HTTPException {
  return new AnsweredException(413, `The request body is larger than ${limitBytes} bytes`, () => payloadTooLarge(limitBytes));
}

/** Requests whose body was cut at the limit, and the exception that cut it. */
const CUT = new WeakMap<Request, HTTPException>();

/** For the adapters: `request`'s body was cut at the limit by `cut`. */
export function markOverBodyLimit(request: Request, cut: HTTPException): void {
  CUT.set(request, cut);
}

/** The 413 exception of a request whose body was cut at the limit, else undefined. */
export function overBodyLimit(request: Request): HTTPException | undefined {
  return CUT.get(request);
}

/**
 * The body limit of a request, by its URL's path: the longest prefix in `byPath` that the path
 * starts with, else `defaultBytes`. Without `byPath`, one number for every request, and the URL
 * is not read (on Bun each read of `request.url` makes a string).
 */
export function bodyLimits(defaultBytes: number, byPath: Readonly<Record<string, number>> = {}): (request: Request) => number {
  const prefixes = Object.entries(byPath).sort(([a], [b]) => b.length - a.length);
  if (prefixes.length === 0) return () => defaultBytes;
  return (request) => {
    const path = pathOf(request.url);
    for (const [prefix, bytes] of prefixes) if (path.startsWith(prefix)) return bytes;
    return defaultBytes;
  };
}

/** A request's declared Content-Length, or null; `env` is what the engine passes the app. */
export type DeclaredLength = (request: Request, env: unknown) => string | null | undefined;

/**
 * Answers 413 before the app runs for a request whose declared Content-Length is over its limit.
 * A declared length is exact (each runtime's parser reads that many bytes and no more), so only a
 * body without one (chunked) needs counting as it is read: the engines do that, since they make
 * the request. GET and HEAD are passed as they are: reading their headers costs a share of a fast
 * runtime's request, and no runtime gives the app a body for them
 * (docs/policy.md#request-bodies-and-body_limit).
 */
export function withDeclaredBodyLimit(
  fetch: FetchHandler,
  limitOf: (request: Request) => number,
  declaredLength: DeclaredLength = (request) => request.headers.get("content-length"),
): FetchHandler {
  return (request, env, executionCtx) => {
    const method = request.method;
    if (method !== "GET" && method !== "HEAD") {
      const declared = declaredLength(request, env);
      if (declared != null) {
        const limit = limitOf(request);
        if (Number(declared) > limit) {
          // Marked, so an adapter that would drain the unread body closes the connection instead.
          markOverBodyLimit(request, bodyTooLarge(limit));
          return payloadTooLarge(limit);
        }
      }
    }
    return fetch(request, env, executionCtx);
  };
}

/**
 * The request body, or undefined when it is larger than `limitBytes` (by its Content-Length, or by
 * the bytes actually read: a missing or lying Content-Length cannot grow it past the limit). A
 * body that cannot be read is answered `400` (see `unreadable`).
 */
export function readBody(request: Request, limitBytes: number): Promise<Uint8Array | undefined> {
  return unreadable(() => readLimited(request, limitBytes));
}

async function readLimited(request: Request, limit: number): Promise<Uint8Array | undefined> {
  const declared = request.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared.trim()) && Number(declared) > limit) return undefined;
  if (request.body === null) return new Uint8Array(0);
  // Count while reading: a missing or lying Content-Length must not let the body grow past the limit.
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

/**
 * Awaits a read of the request body. A body that cannot be read (the client stopped before
 * Content-Length bytes, or sent broken chunked framing) is the client's error, answered `400`,
 * not a handler failure; HTTPExceptions (408 from the body deadline, 413) pass through.
 */
async function unreadable<T>(read: () => Promise<T>): Promise<T> {
  try {
    // Called inside the try: some runtimes throw synchronously (@hono/node-server builds the
    // Request on the first body read, and a Host header the URL parser refuses throws then).
    return await read();
  } catch (error) {
    if (error instanceof HTTPException) throw error;
    throw new HTTPException(400, {
      message: `The request body could not be read: ${(error as Error)?.message ?? String(error)}`,
      cause: error,
    });
  }
}
