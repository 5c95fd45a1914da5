import { connect as netConnect, type Socket } from "node:net";
import { get } from "./http.ts";

/** A raw TCP client that records everything it reads and when the server closed. */
export class RawClient {
  data = "";
  readonly openedAt = Date.now();
  closedAt: number | null = null;
  error: Error | null = null;
  readonly closed: Promise<number>;
  #waiters = new Set<() => void>();

  readonly socket: Socket;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.data += chunk;
      for (const wake of this.#waiters) wake();
    });
    socket.on("error", (error) => {
      this.error = error;
    });
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.closedAt = Date.now();
        for (const wake of this.#waiters) wake();
        resolve(this.closedAt);
      });
    });
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** Resolves when the data read so far satisfies `test`; rejects on timeout or close. */
  waitFor(test: (data: string) => boolean, timeoutMs: number, what = "data"): Promise<number> {
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const check = () => {
        if (test(this.data)) {
          cleanup();
          resolve(Date.now());
        } else if (this.closedAt !== null) {
          cleanup();
          reject(new Error(`connection closed before ${what}; read: ${JSON.stringify(this.data)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${what} within ${timeoutMs}ms; read: ${JSON.stringify(this.data)}`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  /** Resolves with the close time, or rejects if the server keeps it open past `timeoutMs`. */
  waitForClose(timeoutMs: number): Promise<number> {
    return Promise.race([
      this.closed,
      new Promise<number>((_, reject) => {
        const timer = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs}ms`)), timeoutMs);
        void this.closed.then(() => clearTimeout(timer));
      }),
    ]);
  }

  /** Number of complete HTTP responses read so far (by status lines). */
  responses(): number {
    return this.data.split("HTTP/1.1 ").length - 1;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Closes with a TCP reset, as a crashed client or a load balancer would. */
  reset(): void {
    this.socket.resetAndDestroy();
  }
}

/** Opens a raw TCP connection to 127.0.0.1:port; rejects after `timeoutMs` without a handshake. */
export function connect(port: number, timeoutMs = 5_000): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection to port ${port} within ${timeoutMs}ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", fail);
      resolve(new RawClient(socket));
    });
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error);
    };
    socket.once("error", fail);
  });
}

/**
 * What a new client gets when it tries a request: "refused" (nothing listens), "dropped" (the
 * kernel completed the handshake from the backlog of a listener being closed, and the connection
 * was then closed or reset without a byte), or "answered ..." when a server served it.
 */
export async function tryRequest(port: number, timeoutMs = 1_000): Promise<string> {
  let client: RawClient;
  try {
    client = await connect(port);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ECONNREFUSED" ? "refused" : String(error);
  }
  try {
    client.write(get("/healthz"));
    await client.waitForClose(timeoutMs);
    return client.data === "" ? "dropped" : `answered ${JSON.stringify(client.data.slice(0, 40))}`;
  } catch {
    return `still open after ${timeoutMs}ms, read ${JSON.stringify(client.data.slice(0, 40))}`;
  } finally {
    client.destroy();
  }
}

/** Sends `text` one byte every `intervalMs` until the socket closes or `maxBytes` are sent. */
export function trickle(client: RawClient, text: string, intervalMs: number): () => void {
  let i = 0;
  const timer = setInterval(() => {
    if (client.closedAt !== null || i >= text.length) {
      clearInterval(timer);
      return;
    }
    client.socket.write(text[i]!);
    i += 1;
  }, intervalMs);
  return () => clearInterval(timer);
}
