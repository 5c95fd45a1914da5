import type { Socket } from "node:net";
import { createServer, type Server } from "node:http";
import { fetchOnce } from "../../harness/http.ts";
import { conditions } from "../../harness/wait.ts";
import { type HeldConnections, holdConnections, postRequest } from "../../harness/keep_alive.ts";
import { signBody } from "../../src/websub/websub.ts";

/**
 * A WebSub hub that behaves like the one in the incident: it verifies a subscription, delivers
 * signed content over many keep-alive connections, then leaves them idle and never closes them.
 * It keeps its subscriptions as the Recommendation says: one per topic and callback, changed by a
 * subscribe or unsubscribe request only once the subscriber verified it (§5.1), each delivery
 * signed with the hub.secret of the request that made it, or unsigned without one (§7.1).
 * Used by the module's tests; runnable on its own: `bun test/websub/_hub.ts` prints its URL and
 * serves until interrupted.
 */
export interface Hub {
  /** Where subscribers send `hub.mode=subscribe` (a form POST), e.g. http://127.0.0.1:PORT/ */
  readonly url: string;
  /** Resolves with the callback URL once a subscriber has passed verification of intent. */
  readonly verified: Promise<string>;
  /** Every subscription request the hub received, in order. */
  readonly requests: readonly URLSearchParams[];
  /** Every verification of intent the hub made, in order, and whether the subscriber confirmed it. */
  readonly verifications: readonly Verification[];
  /** The subscriptions the hub holds now: callback URL -> the secret it signs with (undefined: unsigned). */
  readonly subscriptions: ReadonlyMap<string, string | undefined>;
  /** Resolves once `condition` holds, looked at after each request and verification; rejects after `timeoutMs`, naming `what`. */
  until(condition: () => boolean, timeoutMs: number, what: string): Promise<void>;
  /** Holds the verification of requests of `mode` (received or to come) until the returned function is called. */
  hold(mode: Mode): () => void;
  /** Publishes `body` once: one POST to each subscription the hub holds, signed as it was asked; the answers, by callback. */
  publish(body?: string): Promise<Published[]>;
  /** Opens `connections` keep-alive connections to the last verified callback and posts one delivery on each. */
  deliver(connections: number, body?: string): Promise<HeldConnections>;
  /** Closes the hub's own server and every connection it opened. */
  close(): Promise<void>;
}

type Mode = "subscribe" | "unsubscribe";

export interface Verification {
  mode: Mode;
  callback: string;
  /** The subscriber answered 200 with the challenge. */
  confirmed: boolean;
}

export interface Published {
  callback: string;
  status: number;
  signed: boolean;
}

const TOPIC = "https://example.com/feed";
const FEED = JSON.stringify({ items: [{ title: "Hello World" }] });

/** Starts a hub on 127.0.0.1, port 0; it signs with sha256, as most hubs do. */
export async function startHub(options: { leaseSeconds?: number } = {}): Promise<Hub> {
  const { leaseSeconds = 3_600 } = options;
  const sockets = new Set<Socket>();
  const requests: URLSearchParams[] = [];
  const verifications: Verification[] = [];
  const subscriptions = new Map<string, string | undefined>();
  const { changed, until } = conditions(() => `requests: ${requests.map((r) => r.toString()).join(" | ")}`);
  const held = new Map<Mode, Promise<void>>();
  let callback: string | undefined;
  let onVerified: (url: string) => void = () => {};
  const verified = new Promise<string>((resolve) => (onVerified = resolve));

  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const form = new URLSearchParams(Buffer.concat(chunks).toString());
    requests.push(form);
    changed();
    const mode = form.get("hub.mode");
    const target = form.get("hub.callback");
    if (req.method !== "POST" || (mode !== "subscribe" && mode !== "unsubscribe") || !target || form.get("hub.topic") !== TOPIC) {
      res.writeHead(400).end("expected a subscribe or unsubscribe request for the simulator's topic");
      return;
    }
    res.writeHead(202).end();
    await held.get(mode);
    // Verification of intent (W3C WebSub 5.3): the subscriber must echo the challenge.
    const challenge = crypto.randomUUID();
    const url = new URL(target);
    url.searchParams.set("hub.mode", mode);
    url.searchParams.set("hub.topic", TOPIC);
    url.searchParams.set("hub.challenge", challenge);
    if (mode === "subscribe") url.searchParams.set("hub.lease_seconds", String(leaseSeconds));
    const answer = await fetchOnce(url).catch(() => undefined);
    const confirmed = answer?.status === 200 && (await answer.text()) === challenge;
    // Only a confirmed request changes the subscription (§5.1).
    if (confirmed && mode === "subscribe") {
      subscriptions.set(target, form.get("hub.secret") ?? undefined);
      callback = target;
      onVerified(target);
    }
    if (confirmed && mode === "unsubscribe") subscriptions.delete(target);
    verifications.push({ mode, callback: target, confirmed });
    changed();
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const deliveries: HeldConnections[] = [];
  /** The headers of a delivery of `body` to a subscription signing with `secret`. */
  const headersFor = async (body: string, secret: string | undefined): Promise<Record<string, string>> => ({
    Link: `<${TOPIC}>; rel="self"`,
    ...(secret === undefined ? {} : { "X-Hub-Signature": await signBody(new TextEncoder().encode(body), secret, "sha256") }),
  });

  return {
    url: `http://127.0.0.1:${port}/`,
    verified,
    requests,
    verifications,
    subscriptions,
    until,
    hold(mode) {
      let release = () => {};
      held.set(mode, new Promise<void>((resolve) => (release = resolve)));
      return () => {
        held.delete(mode);
        release();
      };
    },
    async publish(body = FEED) {
      return await Promise.all([...subscriptions].map(async ([target, secret]) => {
        const res = await fetch(target, {
          method: "POST",
          body,
          headers: { "content-type": "application/json", connection: "close", ...(await headersFor(body, secret)) },
          signal: AbortSignal.timeout(5_000),
        });
        await res.body?.cancel();
        return { callback: target, status: res.status, signed: secret !== undefined };
      }));
    },
    async deliver(connections, body = FEED) {
      if (!callback || !subscriptions.has(callback)) throw new Error("No subscriber has been verified yet");
      const target = new URL(callback);
      const request = postRequest(target, body, await headersFor(body, subscriptions.get(callback)));
      const opened = await holdConnections(target, connections, request);
      deliveries.push(opened);
      return opened;
    },
    async close() {
      for (const opened of deliveries) opened.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The topic the simulator publishes. */
export const HUB_TOPIC = TOPIC;

if (import.meta.main) {
  const hub = await startHub();
  console.log(JSON.stringify({ event: "hub_listening", url: hub.url, topic: TOPIC }));
  const callback = await hub.verified;
  const count = Number(process.env.HUB_CONNECTIONS ?? 200);
  const delivered = await hub.deliver(count);
  console.log(JSON.stringify({ event: "hub_delivered", callback, connections: count, statuses: [...new Set(delivered.statuses)] }));
  console.log(JSON.stringify({ event: "hub_idle", note: "connections left open; the hub never closes them" }));
}
