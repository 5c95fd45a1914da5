/**
 * Timed `GET /metrics` over a raw keep-alive socket of the bench's own: a scrape's time is from
 * writing the request (or from connecting, for the first) to the last byte of the body, with
 * no client pool or HTTP library in between whose own first use would be timed with it.
 */
import { connect, type Socket } from "node:net";
import { completeResponses, get } from "../harness/http.ts";

/** One keep-alive connection that scrapes `path` and times each answer, in ms. */
export interface Scraper {
  /** Time to the first scrape's complete answer, counted from before connecting. */
  readonly connectedScrapeMs: number;
  /** Scrapes once more on the same connection; the time to its complete answer. */
  scrape(): Promise<number>;
  close(): void;
}

/** Connects to `url` and scrapes `path` once; fails on anything but a 200 naming `http_requests_total`. */
export async function openScraper(url: string, path = "/metrics", timeoutMs = 10_000): Promise<Scraper> {
  const { hostname, port } = new URL(url);
  const started = performance.now();
  const socket = connect(Number(port), hostname);
  socket.setNoDelay(true);
  socket.setEncoding("latin1");
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const request = get(path);
  const once = async (from: number) => {
    const answer = await exchange(socket, request, timeoutMs);
    const ms = performance.now() - from;
    if (!answer.startsWith("HTTP/1.1 200") || !answer.includes("http_requests_total")) {
      throw new Error(`GET ${path} answered ${JSON.stringify(answer.slice(0, 200))}`);
    }
    return ms;
  };
  const connectedScrapeMs = await once(started).catch((error) => {
    socket.destroy();
    throw error;
  });
  return {
    connectedScrapeMs,
    scrape: () => once(performance.now()),
    close: () => socket.destroy(),
  };
}

/** Writes `request` and resolves with the whole response once it has all arrived. */
function exchange(socket: Socket, request: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = "";
    const done = (error?: Error) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", done);
      if (error) reject(error);
      else resolve(data);
    };
    const onData = (chunk: string) => {
      data += chunk;
      if (completeResponses(data) >= 1) done();
    };
    const onClose = () => done(new Error(`the server closed the connection after ${data.length} bytes`));
    const timer = setTimeout(() => done(new Error(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on("data", onData);
    socket.on("close", onClose);
    socket.on("error", done);
    socket.write(request);
  });
}
