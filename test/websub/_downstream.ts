import { createServer, type Server } from "node:http";
import type { Socket } from "node:net";
import { conditions } from "../../harness/wait.ts";

/** One request the downstream API received from the fixture's handleContent. */
export interface Received {
  /** The delivery's id (its Idempotency-Key). */
  key: string;
  body: string;
  /** The server process that sent it. */
  pid: number;
  /** What the API answered: its status, null while it holds the request, 0 when the sender left first (it was killed). */
  status: number | null;
}

/**
 * The API a user's handleContent writes to (test/websub/_content.ts), on 127.0.0.1, port 0: it
 * answers each request with what `answer` says (a status, or a promise of one to hold it), and
 * records everything it received, so that tests see what was processed, how often, and by whom.
 */
export interface Downstream {
  readonly url: string;
  readonly received: readonly Received[];
  /** The bodies answered 2xx, in the order they were answered. */
  taken(): string[];
  /** Sets how the next requests are answered. */
  answer: (request: Received) => number | Promise<number>;
  /** Resolves once `condition` holds, looked at after each request and answer; rejects after `timeoutMs`, naming `what`. */
  until(condition: () => boolean, timeoutMs: number, what: string): Promise<void>;
  close(): Promise<void>;
}

export async function startDownstream(): Promise<Downstream> {
  const received: Received[] = [];
  const { changed, until } = conditions(() => `taken: ${JSON.stringify(downstream.taken())}`);
  const sockets = new Set<Socket>();
  const downstream: Downstream = {
    url: "",
    received,
    taken: () => received.filter((r) => r.status !== null && r.status < 300).map((r) => r.body),
    answer: () => 200,
    until,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const request: Received = {
      key: String(req.headers["idempotency-key"]),
      body: Buffer.concat(chunks).toString(),
      pid: Number(req.headers["x-pid"]),
      status: null,
    };
    let gone = false;
    res.on("close", () => (gone = !res.writableFinished));
    received.push(request);
    changed();
    const status = await downstream.answer(request);
    request.status = gone ? 0 : status;
    if (!gone) res.writeHead(status).end();
    changed();
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  (downstream as { url: string }).url = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  return downstream;
}
