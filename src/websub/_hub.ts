import type { Socket } from "node:net";
import { createServer, type Server } from "node:http";
import { fetchOnce } from "../../harness/http.ts";
import { type HeldConnections, holdConnections, postRequest } from "../../harness/keep_alive.ts";
import { signBody } from "./websub.ts";

/**
 * A WebSub hub that behaves like the one in the incident: it verifies a subscription, delivers
 * signed content over many keep-alive connections, then leaves them idle and never closes them.
 * Used by the module's tests; runnable on its own: `bun src/websub/_hub.ts` prints its URL and
 * serves until interrupted.
 */
export interface Hub {
  /** Where subscribers send `hub.mode=subscribe` (a form POST), e.g. http://127.0.0.1:PORT/ */
  readonly url: string;
  /** Resolves with the callback URL once a subscriber has passed verification of intent. */
  readonly verified: Promise<string>;
  /** Every subscription request the hub received, in order. */
  readonly requests: readonly URLSearchParams[];
  /** Opens `connections` keep-alive connections to the verified callback and posts one signed delivery on each. */
  deliver(connections: number, body?: string): Promise<HeldConnections>;
  /** Closes the hub's own server and every connection it opened. */
  close(): Promise<void>;
}

const TOPIC = "https://example.com/feed";

/** Starts a hub on 127.0.0.1, port 0, signing with `secret` (sha256, as most hubs do). */
export async function startHub(options: { secret?: string; leaseSeconds?: number } = {}): Promise<Hub> {
  const { secret, leaseSeconds = 3_600 } = options;
  const sockets = new Set<Socket>();
  const requests: URLSearchParams[] = [];
  let callback: string | undefined;
  let onVerified: (url: string) => void = () => {};
  const verified = new Promise<string>((resolve) => (onVerified = resolve));

  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const form = new URLSearchParams(Buffer.concat(chunks).toString());
    requests.push(form);
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
  const deliveries: HeldConnections[] = [];

  return {
    url: `http://127.0.0.1:${port}/`,
    verified,
    requests,
    async deliver(connections, body = JSON.stringify({ items: [{ title: "Hello World" }] })) {
      if (!callback) throw new Error("No subscriber has been verified yet");
      const target = new URL(callback);
      const signature: Record<string, string> = secret
        ? { "X-Hub-Signature": await signBody(new TextEncoder().encode(body), secret, "sha256") }
        : {};
      const held = await holdConnections(target, connections, postRequest(target, body, { ...signature, Link: `<${TOPIC}>; rel="self"` }));
      deliveries.push(held);
      return held;
    },
    async close() {
      for (const held of deliveries) held.destroy();
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
