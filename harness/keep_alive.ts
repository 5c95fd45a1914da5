import { connect as netConnect, type Socket } from "node:net";

/** How long a request on a held connection may wait for its answer. */
const ANSWER_TIMEOUT_MS = 10_000;

/** Connections that each carried one request and were then left open, as a WebSub hub leaves them. */
export interface HeldConnections {
  /** Status codes of the answers, one per connection. */
  readonly statuses: number[];
  /** How many of the connections are still open. */
  open(): number;
  /** Close times (Date.now()) of the connections the server closed, in order. */
  readonly closedAt: number[];
  /** Resolves when the server has closed every connection, or rejects after `timeoutMs`. */
  allClosed(timeoutMs: number): Promise<void>;
  /** Closes every connection from this side. */
  destroy(): void;
}

/**
 * Opens `connections` keep-alive connections to `url`'s host, sends `request` (a whole HTTP/1.1
 * request as text) on each, waits for each answer's head, and keeps them open: never closes one
 * itself until `destroy()`.
 */
export async function holdConnections(url: URL, connections: number, request: string): Promise<HeldConnections> {
  const opened: Socket[] = [];
  const closedAt: number[] = [];
  const closeWaiters = new Set<() => void>();
  const answer = () =>
    new Promise<number>((resolve, reject) => {
      const socket = netConnect({ host: url.hostname, port: Number(url.port) });
      // A server that never answers fails the request instead of hanging it.
      const timer = setTimeout(() => reject(new Error(`no response within ${ANSWER_TIMEOUT_MS}ms`)), ANSWER_TIMEOUT_MS);
      opened.push(socket);
      let data = "";
      socket.setEncoding("latin1");
      socket.on("data", (chunk: string) => {
        data += chunk;
        const status = /^HTTP\/1\.1 (\d{3})/.exec(data);
        if (status && data.includes("\r\n\r\n")) {
          clearTimeout(timer);
          resolve(Number(status[1]));
        }
      });
      socket.on("error", () => {});
      socket.on("close", () => {
        clearTimeout(timer);
        closedAt.push(Date.now());
        for (const wake of closeWaiters) wake();
        reject(new Error(`connection closed before a response: ${JSON.stringify(data)}`));
      });
      socket.on("connect", () => socket.write(request));
    });
  let statuses: number[];
  try {
    statuses = await Promise.all(Array.from({ length: connections }, answer));
  } catch (error) {
    for (const socket of opened) socket.destroy();
    throw error;
  }
  return {
    statuses,
    open: () => opened.filter((s) => !s.destroyed && s.readyState === "open").length,
    closedAt,
    allClosed(timeoutMs) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (closedAt.length < connections) return;
          clearTimeout(timer);
          closeWaiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          closeWaiters.delete(check);
          reject(new Error(`${connections - closedAt.length} of ${connections} connections still open after ${timeoutMs}ms`));
        }, timeoutMs);
        closeWaiters.add(check);
        check();
      });
    },
    destroy() {
      for (const socket of opened) socket.destroy();
    },
  };
}

/** A keep-alive POST of `body` to `url`'s path, as raw text, with `headers` added. */
export function postRequest(url: URL, body: string, headers: Record<string, string> = {}): string {
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  return `POST ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${new TextEncoder().encode(body).byteLength}\r\n${extra}\r\n${body}`;
}
