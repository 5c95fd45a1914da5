import { connect as netConnect, type Socket } from "node:net";
import { createServer, type Server } from "node:http";
import { signBody } from "../src/websub.ts";
import { fetchOnce } from "./_harness.ts";

/**
 * A WebSub hub that behaves like the one in the incident: it verifies a subscription, delivers
 * signed content over many keep-alive connections, then leaves them idle and never closes them.
 * Used by the conformance suite's replay and by `npm run replay`; runnable on its own:
 * `bun test/_hub.ts` prints its URL and serves until interrupted.
 */
export interface Hub {
  /** Where subscribers send `hub.mode=subscribe` (a form POST), e.g. http://127.0.0.1:PORT/ */
  readonly url: string;
  /** Resolves with the callback URL once a subscriber has passed verification of intent. */
  readonly verified: Promise<string>;
  /** Opens `connections` keep-alive connections to the verified callback and posts one signed delivery on each. */
  deliver(connections: number, body?: string): Promise<HubConnections>;
  /** Closes the hub's own server and every connection it opened. */
  close(): Promise<void>;
}

/** The hub's side of its delivery connections. */
export interface HubConnections {
  /** Status codes of the deliveries, one per connection. */
  readonly statuses: number[];
  /** How many of the connections are still open. */
  open(): number;
  /** Close times (Date.now()) of the connections the subscriber closed, in order. */
  readonly closedAt: number[];
  /** Resolves when every connection has been closed by the subscriber, or rejects after `timeoutMs`. */
  allClosed(timeoutMs: number): Promise<void>;
}

const TOPIC = "https://example.com/feed";
/** How long a delivery may wait for the subscriber's answer. */
const DELIVERY_TIMEOUT_MS = 10_000;

/** Starts a hub on 127.0.0.1, port 0, signing with `secret` (sha256, as most hubs do). */
export async function startHub(options: { secret?: string; leaseSeconds?: number } = {}): Promise<Hub> {
  const { secret, leaseSeconds = 3_600 } = options;
  const sockets = new Set<Socket>();
  let callback: string | undefined;
  let onVerified: (url: string) => void = () => {};
  const verified = new Promise<string>((resolve) => (onVerified = resolve));

  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const form = new URLSearchParams(Buffer.concat(chunks).toString());
    const mode = form.get("hub.mode");
    const target = form.get("hub.callback");
    if (req.method !== "POST" || mode !== "subscribe" || !target || form.get("hub.topic") !== TOPIC) {
      res.writeHead(400).end("expected a subscribe request for the simulator's topic");
      return;
    }
    res.writeHead(202).end();
    // Verification of intent (W3C WebSub 5.3): the subscriber must echo the challenge.
    const challenge = crypto.randomUUID();
    const url = new URL(target);
    url.searchParams.set("hub.mode", "subscribe");
    url.searchParams.set("hub.topic", TOPIC);
    url.searchParams.set("hub.challenge", challenge);
    url.searchParams.set("hub.lease_seconds", String(leaseSeconds));
    const answer = await fetchOnce(url);
    if (answer.status === 200 && (await answer.text()) === challenge) {
      callback = target;
      onVerified(target);
    }
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const opened: Socket[] = [];

  return {
    url: `http://127.0.0.1:${port}/`,
    verified,
    async deliver(connections, body = JSON.stringify({ items: [{ title: "Hello World" }] })) {
      if (!callback) throw new Error("No subscriber has been verified yet");
      const target = new URL(callback);
      const bytes = new TextEncoder().encode(body);
      const signature = secret ? `X-Hub-Signature: ${await signBody(bytes, secret, "sha256")}\r\n` : "";
      const head = `POST ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${bytes.byteLength}\r\n${signature}` +
        `Link: <${TOPIC}>; rel="self"\r\n\r\n`;
      const closedAt: number[] = [];
      const closeWaiters = new Set<() => void>();
      const statuses = await Promise.all(
        Array.from({ length: connections }, () =>
          new Promise<number>((resolve, reject) => {
            const socket = netConnect({ host: target.hostname, port: Number(target.port) });
            // A subscriber that never answers fails the delivery instead of hanging it.
            const timer = setTimeout(() => reject(new Error(`no response within ${DELIVERY_TIMEOUT_MS}ms`)), DELIVERY_TIMEOUT_MS);
            socket.once("close", () => clearTimeout(timer));
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
              closedAt.push(Date.now());
              for (const wake of closeWaiters) wake();
              reject(new Error(`connection closed before a response: ${JSON.stringify(data)}`));
            });
            socket.on("connect", () => socket.write(head + body));
          })),
      );
      const mine = opened.slice(-connections);
      return {
        statuses,
        open: () => mine.filter((s) => !s.destroyed && s.readyState === "open").length,
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
              reject(new Error(`${connections - closedAt.length} of ${connections} hub connections still open after ${timeoutMs}ms`));
            }, timeoutMs);
            closeWaiters.add(check);
            check();
          });
        },
      };
    },
    async close() {
      for (const socket of opened) socket.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The topic the simulator publishes. */
export const HUB_TOPIC = TOPIC;

if (import.meta.main) {
  const hub = await startHub({ secret: process.env.WEBSUB_SECRET });
  console.log(JSON.stringify({ event: "hub_listening", url: hub.url, topic: TOPIC }));
  const callback = await hub.verified;
  const count = Number(process.env.HUB_CONNECTIONS ?? 200);
  const delivered = await hub.deliver(count);
  console.log(JSON.stringify({ event: "hub_delivered", callback, connections: count, statuses: [...new Set(delivered.statuses)] }));
  console.log(JSON.stringify({ event: "hub_idle", note: "connections left open; the hub never closes them" }));
}
