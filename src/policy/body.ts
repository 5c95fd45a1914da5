import { HTTPException } from "hono/http-exception";

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
