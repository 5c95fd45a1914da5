/**
 * The node:http engine's WebSockets (adapters/node/_websocket.ts) where the shared block does not
 * look: what an upgrade the app does not take is answered, what stays on the request path, and how
 * the engine's deadlines, drain and cut treat an upgraded socket. Under `bun test` this is Bun's
 * node:http (bun-node-http, with the idle reaper); the shared block runs all three engines.
 */
import { describe, expect, test } from "bun:test";
import { createServer, type IncomingMessage } from "node:http";
import { Hono } from "hono";
import { serveNodeHttp } from "../../adapters/node/_node_http.ts";
import { lazyUpgrades } from "../../adapters/node/_websocket.ts";
import { type Config, resolveServeOptions } from "../../src/policy/config.ts";
import { withLifecycle } from "../../src/policy/lifecycle.ts";
import { createLogger } from "../../src/policy/log.ts";
import { LongLived } from "../../src/policy/long_lived.ts";
import { createRegistry } from "../../src/policy/metrics.ts";
import { upgradeWebSocket, WebSockets } from "../../src/policy/websocket.ts";
import { completeResponses } from "../../harness/http.ts";
import { connect } from "../../harness/raw_client.ts";
import { openWebSocket, tryUpgrade } from "../../harness/ws_client.ts";

async function start(options: Partial<Config> = {}) {
  const config = { ...resolveServeOptions({ port: 0, host: "127.0.0.1" }), ...options };
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger((line) => lines.push(JSON.parse(line)));
  const longLived = new LongLived({ ...longLivedOf(config) });
  const websockets = new WebSockets(longLived, logger, createRegistry());
  const app = new Hono();
  app.get("/ws", upgradeWebSocket(() => ({ onMessage: (event, ws) => ws.send(event.data as string) })));
  app.post("/echo", async (c) => c.text(`got ${(await c.req.text()).length} bytes`));
  const fetch = withLifecycle((request: Request, env: unknown) => app.fetch(request, env), { logger, longLived });
  const handle = await serveNodeHttp(fetch, config, logger, { idle: "reaper", websockets });
  const port = Number(new URL(handle.url).port);
  return {
    handle,
    port,
    longLived,
    lines,
    async [Symbol.asyncDispose]() {
      longLived.cut();
      handle.cut();
      await handle.drain();
    },
  };
}

function longLivedOf(config: Config) {
  return {
    pingIntervalMs: config.websocketPingIntervalMs,
    maxMessageBytes: config.websocketMaxMessageBytes,
    maxBufferedBytes: config.websocketMaxBufferedBytes,
    sseHeartbeatMs: config.sseHeartbeatMs,
  };
}

describe("node:http WebSockets (adapters/node/_websocket.ts)", () => {
  test("the server's 'upgrade' listener is added at its first WebSocket upgrade, once, and not for another upgrade", () => {
    const server = createServer();
    const upgrades = lazyUpgrades();
    upgrades.listen(server, () => {});
    const incoming = (upgrade: string) => ({ headers: { upgrade } }) as unknown as IncomingMessage;
    expect(server.listenerCount("upgrade")).toBe(0);
    expect(upgrades.shouldUpgrade(incoming("h2c"))).toBe(false);
    expect(server.listenerCount("upgrade")).toBe(0);
    expect(upgrades.shouldUpgrade(incoming("WebSocket"))).toBe(true);
    expect(server.listenerCount("upgrade")).toBe(1);
    expect(upgrades.shouldUpgrade(incoming("websocket"))).toBe(true);
    expect(server.listenerCount("upgrade")).toBe(1);
  }, 1_000);

  test("an upgrade the app does not take gets the app's answer whole, and the connection closes", async () => {
    await using server = await start();
    const refused = await tryUpgrade(server.port, "/nope");
    expect(refused.ws).toBeNull();
    expect(refused.answer.status).toBe(404);
    expect(refused.answer.headers["connection"]).toBe("close");
    if (refused.ws === null) expect(refused.body).toBe("404 Not Found");
  });

  test("an upgrade to anything but a WebSocket stays on the request path, its body read", async () => {
    await using server = await start();
    const client = await connect(server.port);
    try {
      client.write("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc");
      await client.waitFor((d) => completeResponses(d) === 1, 2_000, "a response");
      expect(client.data).toStartWith("HTTP/1.1 200");
      expect(client.data).toContain("got 3 bytes");
    } finally {
      client.destroy();
    }
  });

  test("the idle, head and request deadlines leave an upgraded socket alone", async () => {
    await using server = await start({ idleTimeoutMs: 300, headersTimeoutMs: 300, requestTimeoutMs: 400, websocketPingIntervalMs: 0 });
    const ws = await openWebSocket(server.port, "/ws");
    try {
      await Bun.sleep(1_200);
      expect(ws.endedAt).toBeNull();
      ws.send("still here");
      expect((await ws.waitForMessage(1, 1_000)).data.toString()).toBe("still here");
      expect(server.lines.filter((l) => l.event === "idle_timeout")).toEqual([]);
    } finally {
      ws.destroy();
    }
  });

  test("drain() leaves WebSockets to the policy's 1001 and resolves once they are closed; cut() drops one left", async () => {
    await using server = await start();
    const polite = await openWebSocket(server.port, "/ws");
    const deaf = await openWebSocket(server.port, "/ws", { answerClose: false });
    let drained = false;
    const drain = server.handle.drain().then(() => (drained = true));
    void server.longLived.closeAll();
    expect((await polite.waitForCloseFrame(1_000)).code).toBe(1001);
    expect((await deaf.waitForCloseFrame(1_000)).code).toBe(1001);
    await polite.waitForEnd(1_000);
    await Bun.sleep(200);
    // The deaf one is open until the policy's grace (1 s) or the cut.
    expect(deaf.endedAt).toBeNull();
    expect(drained).toBe(false);
    server.longLived.cut();
    server.handle.cut();
    await deaf.waitForEnd(1_000);
    await drain;
  });
});
