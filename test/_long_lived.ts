import { describe, expect, test } from "bun:test";
import type { Target } from "./_capabilities.ts";
import { fetchOnce, get } from "../harness/http.ts";
import { rss } from "../harness/proc.ts";
import type { ServerProcess } from "../harness/process.ts";
import { connect, type RawClient } from "../harness/raw_client.ts";
import { OP, openWebSocket, tryUpgrade, type WsClient, type WsOptions } from "../harness/ws_client.ts";
import { SSE_RETRY_MS } from "../src/policy/long_lived.ts";
import { ABORT_NOTICE_MS, type Defer, EARLY_MS, expectBetween, serving, suiteSetup } from "./_suite.ts";

/** WEBSOCKET_PING_INTERVAL and SSE_HEARTBEAT here: short, so two intervals and five fit in a test. */
const INTERVAL_MS = 1_000;
/** WEBSOCKET_MAX_MESSAGE and WEBSOCKET_MAX_BUFFERED here (kb is 1024 bytes). */
const MAX_MESSAGE = 64 * 1_024;
const MAX_BUFFERED = 256 * 1_024;
/** The fixture's flood sends 64 KiB messages: the buffer may pass the limit by one before the close. */
const FLOOD_CHUNK = 65_536;
/** How far the server's RSS may grow over its baseline while a client does not read. */
const RSS_GROWTH_MAX = 64 * 1_048_576;
/** SHUTDOWN_TIMEOUT here: long, so that an exit at the end of the closing handshakes is seen as far below it. */
const SHUTDOWN_MS = 10_000;
/** How late a ping close or a heartbeat may come on a loaded 2-core machine, beyond the policy's own bound. */
const LATE_MS = 300;
/** How many WebSockets the burst scenario opens at once. */
const BURST = 500;

/**
 * The long-lived connection policy (#20, docs/policy.md#long-lived-connections) on one target,
 * through the suite's fixture (test/_fixture.ts: /ws, an echo that floods on request, and /events),
 * with a raw-socket WebSocket client (harness/ws_client.ts) where the behaviour needs control:
 * echo; a client that answers no ping is closed within two intervals, one that answers stays open
 * over five; a message over WEBSOCKET_MAX_MESSAGE gets 1009; a client that does not read is closed
 * at WEBSOCKET_MAX_BUFFERED with the server's memory bounded; SIGTERM sends 1001 and the process
 * exits once the closing handshakes are done, and an upgrade during SHUTDOWN_DELAY gets 503; a
 * client that leaves is heard of by onClose within 100 ms; MAX_CONNECTIONS counts WebSockets; SSE
 * heartbeats on a quiet stream, Last-Event-ID, and SIGTERM ending a stream with `retry:`. What a
 * target cannot do is skipped naming why, from its capabilities row (test/_capabilities.ts).
 */
export function longLived(target: Target): void {
  const { caps, env } = suiteSetup(target, SHUTDOWN_MS);
  const gaps = caps.longLived ?? {};
  const owned = caps.platformOwns;
  const noMetrics = caps.unsupported.metrics;
  const longLivedEnv: Record<string, string> = {
    WEBSOCKET_PING_INTERVAL: `${INTERVAL_MS}ms`,
    WEBSOCKET_MAX_MESSAGE: "64kb",
    WEBSOCKET_MAX_BUFFERED: "256kb",
    SSE_HEARTBEAT: `${INTERVAL_MS}ms`,
  };
  // As suiteSetup does: nothing the platform owns is set (workerd refuses it at startup).
  const policyEnv = {
    ...env,
    ...Object.fromEntries(Object.entries(longLivedEnv).filter(([name]) => !Object.hasOwn(caps.ownedVariables, name))),
  };
  /** Why pings are not checked here: the platform owns the variable, or the target cannot ping. */
  const noPings = caps.ownedVariables.WEBSOCKET_PING_INTERVAL ?? gaps.pings;

  /** A test (concurrent, or one at a time when `serial`), or a skipped one whose name states why. */
  function scenario(name: string, skip: string | undefined, fn: () => Promise<void>, timeoutMs: number, serial = false) {
    if (skip) test.skip(`${name} (skipped: ${skip})`, fn);
    else if (serial) test(name, fn, timeoutMs);
    else test.concurrent(name, fn, timeoutMs);
  }

  /** A test body on a fresh server serving the fixture with the long-lived policy above and `extraEnv`. */
  const withServer = (fn: (server: ServerProcess, defer: Defer) => Promise<void>, extraEnv: Record<string, string> = {}) =>
    serving(target, "test/_fixture.ts", { ...policyEnv, ...extraEnv }, fn);

  /** Opens a WebSocket to the fixture's /ws, dropped (RST) when the test ends. */
  async function ws(server: ServerProcess, defer: Defer, options: WsOptions = {}): Promise<WsClient> {
    const client = await openWebSocket(server.port, "/ws", options);
    defer(() => client.reset());
    return client;
  }

  /** The server's /metrics, or null where the target has none. */
  async function scrape(server: ServerProcess): Promise<string | null> {
    if (noMetrics) return null;
    return await (await fetchOnce(`${server.url}/metrics`)).text();
  }

  /** One series' value; 0 when the series is not there (a counter never incremented). */
  function sample(exposition: string, series: string): number {
    const line = exposition.split("\n").find((l) => l.startsWith(`${series} `));
    return line === undefined ? 0 : Number(line.slice(series.length + 1));
  }

  /** Checks websocket_connections_open and websocket_closed_total{reason}, where the target has /metrics. */
  async function expectCounts(server: ServerProcess, open: number, closed: Record<string, number>): Promise<void> {
    const text = await scrape(server);
    if (text === null) return;
    expect(text).toContain("websocket_connections_open");
    expect(sample(text, "websocket_connections_open")).toBe(open);
    // Every upgrade is counted as the 101 it became, not as the marked 501 the app answered.
    expect(sample(text, 'http_requests_total{class="1xx"}')).toBeGreaterThanOrEqual(1);
    for (const reason of ["client", "unresponsive", "too_big", "slow_reader", "shutdown"]) {
      expect({ reason, count: sample(text, `websocket_closed_total{reason="${reason}"}`) }).toEqual({
        reason,
        count: closed[reason] ?? 0,
      });
    }
  }
  const counted = (what: string) => noMetrics ? ` (no count checked: ${noMetrics})` : `, ${what}`;

  /** The `websocket_closed` event the policy logs for a close of its own, with `reason`. */
  const policyClose = (server: ServerProcess, reason: string, timeoutMs = 2_000) =>
    server.waitForEvent("websocket_closed", timeoutMs, (e) => e.reason === reason);

  /** `fn`'s result, tried again every 100 ms while it fails, for `timeoutMs` at most; its last failure then. */
  async function retrying<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await fn();
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await Bun.sleep(100);
      }
    }
  }

  describe(`${target}: long-lived WebSockets`, () => {
    test.concurrent(
      `${BURST} upgrades at once all open, and all still echo a second later: none closed`,
      withServer(async (server) => {
        // Bun's own client: the burst is the point, and it opens this many at once cheaply.
        const sockets = Array.from({ length: BURST }, () => new WebSocket(`ws://127.0.0.1:${server.port}/ws`));
        const closes: number[] = [];
        try {
          await Promise.all(sockets.map((socket) =>
            new Promise<void>((resolve, reject) => {
              socket.onopen = () => resolve();
              socket.onclose = (event) => {
                closes.push(event.code);
                reject(new Error(`closed ${event.code} before it opened`));
              };
            })
          ));
          await Bun.sleep(1_000);
          const echoes = await Promise.all(sockets.map((socket, i) =>
            new Promise<string>((resolve) => {
              socket.onmessage = (event) => resolve(String(event.data));
              if (socket.readyState === WebSocket.OPEN) socket.send(`echo ${i}`);
              else resolve(`not open (${socket.readyState})`);
            })
          ));
          // Closed by the server after they opened (Deno's per-connection server used to close a
          // share of a burst when its end was handled before the socket's open: docs/runtimes.md).
          expect({ closed: closes.length, codes: [...new Set(closes)] }).toEqual({ closed: 0, codes: [] });
          expect(echoes.filter((echo, i) => echo !== `echo ${i}`)).toEqual([]);
        } finally {
          for (const socket of sockets) socket.close();
        }
      }),
      20_000,
    );

    test.concurrent(
      `echo: text as text, binary as binary, a fragmented message whole, a ping answered; the client's close is answered${
        counted("counted client")
      }`,
      withServer(async (server, defer) => {
        const client = await ws(server, defer);
        expect(client.handshake.status).toBe(101);
        expect(client.handshake.headers.upgrade?.toLowerCase()).toBe("websocket");
        client.send("hello");
        const text = await client.waitForMessage(1, 2_000);
        expect({ type: text.type, data: text.data.toString() }).toEqual({ type: "text", data: "hello" });
        client.send(Buffer.from([0, 1, 2, 255]));
        const binary = await client.waitForMessage(2, 2_000);
        expect({ type: binary.type, data: [...binary.data] }).toEqual({ type: "binary", data: [0, 1, 2, 255] });
        client.sendFragmented("a message in three fragments", 3);
        const joined = await client.waitForMessage(3, 2_000);
        expect({ type: joined.type, data: joined.data.toString() }).toEqual({ type: "text", data: "a message in three fragments" });
        // Just under WEBSOCKET_MAX_MESSAGE: the limit is not lower than it says.
        client.send(Buffer.alloc(MAX_MESSAGE - 1_024, 7));
        expect((await client.waitForMessage(4, 2_000)).data.length).toBe(MAX_MESSAGE - 1_024);
        // The app's onMessage gets a MessageEvent, as Hono's WSEvents say.
        client.send("event?");
        expect(JSON.parse((await client.waitForMessage(5, 2_000)).data.toString())).toEqual({
          type: "message",
          origin: "",
          lastEventId: "",
          ports: [],
          messageEvent: true,
        });
        client.ping("are you there");
        await client.waitFor((c) => c.pongs.length === 1, 2_000, "a pong");
        expect(client.pongs[0]!.payload.toString()).toBe("are you there");
        await expectCounts(server, 1, {});
        const exposition = await scrape(server);
        if (exposition !== null) expect(sample(exposition, 'http_requests_total{class="5xx"}')).toBe(0);

        client.sendClose(1000, "bye");
        const close = await client.waitForCloseFrame(2_000);
        expect(close.code).toBe(1000);
        await client.waitForEnd(2_000);
        const heard = await server.waitForEvent("ws_onclose", 1_000);
        expect(heard).toMatchObject({ code: 1000, reason: "bye" });
        await expectCounts(server, 0, { client: 1 });
        expect(server.named("websocket_closed")).toEqual([]);
      }),
      20_000,
    );

    scenario(
      `a client that answers no ping is closed (1001) within two intervals of WEBSOCKET_PING_INTERVAL, logged unresponsive${
        counted("counted")
      }`,
      noPings,
      withServer(async (server, defer) => {
        const client = await ws(server, defer, { answerPings: false });
        const close = await client.waitForCloseFrame(2 * INTERVAL_MS + LATE_MS + 1_000);
        // The policy pings and closes up to a twentieth of an interval early each, never late.
        expectBetween(close.at - client.openedAt, 2 * INTERVAL_MS - INTERVAL_MS / 10 - 50, 2 * INTERVAL_MS + LATE_MS);
        expect(close.code).toBe(1001);
        // It was asked first: a ping an interval in, which it left unanswered.
        expect(client.pings.length).toBeGreaterThanOrEqual(1);
        expectBetween(client.pings[0]!.at - client.openedAt, INTERVAL_MS - INTERVAL_MS / 10 - 50, INTERVAL_MS + LATE_MS);
        // It does answer the close, so the connection ends at once rather than at the grace's end.
        await client.waitForEnd(1_500);
        expect(await policyClose(server, "unresponsive")).toMatchObject({ code: 1001, path: "/ws" });
        expect((await server.waitForEvent("ws_onclose", 1_000)).code).toBe(1001);
        await expectCounts(server, 0, { unresponsive: 1 });
      }),
      20_000,
    );

    scenario(
      "a client that answers pings stays open over five intervals of WEBSOCKET_PING_INTERVAL, pinged each quiet interval",
      noPings,
      withServer(async (server, defer) => {
        const client = await ws(server, defer);
        // Quiet on both sides: only pings and pongs, and IDLE_TIMEOUT (shorter) must not apply either.
        await expect(client.waitForEnd(5.5 * INTERVAL_MS)).rejects.toThrow("still open");
        expect(client.close).toBeNull();
        expect(client.pings.length).toBeGreaterThanOrEqual(4);
        client.send("still here");
        expect((await client.waitForMessage(1, 2_000)).data.toString()).toBe("still here");
        expect(server.named("websocket_closed")).toEqual([]);
        await expectCounts(server, 1, {});
      }),
      20_000,
    );

    scenario(
      `a message over WEBSOCKET_MAX_MESSAGE gets 1009 and is not delivered, logged too_big${counted("counted")}`,
      undefined,
      withServer(async (server, defer) => {
        const client = await ws(server, defer);
        client.send(Buffer.alloc(MAX_MESSAGE + 1_024, 1));
        const close = await client.waitForCloseFrame(3_000);
        expect(close.code).toBe(1009);
        await client.waitForEnd(2_000);
        expect(client.messages).toEqual([]);
        expect(await policyClose(server, "too_big")).toMatchObject({ code: 1009, path: "/ws" });
        await expectCounts(server, 0, { too_big: 1 });
      }),
      20_000,
    );

    scenario(
      "a message over WEBSOCKET_MAX_MESSAGE gets 1009 from its frame header, before it is buffered",
      gaps.tooBigBeforeBuffered,
      withServer(async (server, defer) => {
        const client = await ws(server, defer);
        // A frame announcing 16 MiB, of which 1 KiB is sent: only a check of the header can answer.
        const sentAt = Date.now();
        client.sendFrame(OP.binary, Buffer.alloc(1_024), { declaredLength: 16 * 1_048_576 });
        const close = await client.waitForCloseFrame(2_000);
        expect(close.code).toBe(1009);
        expect(close.at - sentAt).toBeLessThanOrEqual(1_000);
        expect(await policyClose(server, "too_big")).toMatchObject({ code: 1009 });
      }),
      20_000,
    );

    scenario(
      `a client that does not read is closed at WEBSOCKET_MAX_BUFFERED (1008, logged slow_reader${
        noMetrics ? "" : ", counted"
      }), and the server's RSS stays within ${RSS_GROWTH_MAX / 1_048_576} MB of its baseline`,
      gaps.slowReader,
      withServer(async (server, defer) => {
        const pid = Number(server.named("listening")[0]!.pid);
        const client = await ws(server, defer);
        client.send("hello");
        await client.waitForMessage(1, 2_000);
        const baseline = rss(pid);
        let peak = baseline;
        const sampler = setInterval(() => (peak = Math.max(peak, rss(pid))), 25);
        defer(() => clearInterval(sampler));
        client.pause();
        // 1 GiB asked for: far more than the kernel's buffers, so only the policy stops it.
        client.send(`flood ${1_024 * 1_048_576}`);
        const closed = await policyClose(server, "slow_reader", 15_000);
        clearInterval(sampler);
        peak = Math.max(peak, rss(pid));
        expect(closed).toMatchObject({ code: 1008, path: "/ws" });
        expect(peak - baseline).toBeLessThanOrEqual(RSS_GROWTH_MAX);
        const heard = await server.waitForEvent("ws_onclose", 2_000);
        // Closed at the limit: what waited never passed it by more than the message that crossed it.
        expect(Number(heard.maxBuffered)).toBeLessThanOrEqual(MAX_BUFFERED + FLOOD_CHUNK);
        expect(Number(heard.sent)).toBeLessThan(256 * 1_048_576);
        // Reading again, the client gets what the kernel held, then the end: the server dropped it.
        client.resume();
        await client.waitForEnd(5_000);
        await expectCounts(server, 0, { slow_reader: 1 });
      }),
      30_000,
    );

    scenario(
      `SIGTERM sends 1001 to every WebSocket and the process exits as soon as their closing handshakes are done, far before SHUTDOWN_TIMEOUT${
        gaps.closingHandshake ? ` (on ${target}, as soon as every 1001 is sent: ${gaps.closingHandshake})` : ""
      }`,
      owned.shutdown,
      withServer(async (server, defer) => {
        const prompt = await ws(server, defer);
        const late = await ws(server, defer, { answerClose: false });
        const signalledAt = Date.now();
        server.signal("SIGTERM");
        const exitedAt = server.exited.then(() => Date.now());
        const [a, b] = await Promise.all([prompt.waitForCloseFrame(2_000), late.waitForCloseFrame(2_000)]);
        for (const close of [a, b]) {
          expect(close).toMatchObject({ code: 1001, reason: "server shutting down" });
          expect(close.at - signalledAt).toBeLessThanOrEqual(1_000);
        }
        await prompt.waitForEnd(1_000);
        if (gaps.closingHandshake) {
          // The connection ends with the close frame: nothing is left to wait for.
          await late.waitForEnd(1_000);
          expect(await server.exited).toBe(0);
          expectBetween((await exitedAt) - signalledAt, 0, 1_000);
        } else {
          // The server waits for the last handshake, however late within SHUTDOWN_TIMEOUT.
          await Bun.sleep(700);
          expect(server.proc.exitCode).toBeNull();
          expect(late.endedAt).toBeNull();
          late.sendClose(1001);
          const answeredAt = late.closeSentAt!;
          await late.waitForEnd(1_000);
          expect(await server.exited).toBe(0);
          expectBetween((await exitedAt) - answeredAt, 0, 1_000);
        }
        const complete = await server.waitForEvent("shutdown_complete", 1_000);
        expect(complete.cut).toBe(0);
        expect(Number(complete.durationMs)).toBeLessThan(SHUTDOWN_MS / 2);
        expect(server.named("ws_onclose").map((e) => e.code)).toEqual([1001, 1001]);
      }),
      30_000,
    );

    scenario(
      "an upgrade after SIGTERM, during SHUTDOWN_DELAY, gets 503 with Retry-After; the open WebSocket gets 1001 when the delay ends",
      owned.shutdown,
      withServer(async (server, defer) => {
        const client = await ws(server, defer);
        const signalledAt = Date.now();
        server.signal("SIGTERM");
        await server.waitForEvent("shutdown_started", 2_000);
        const refused = await tryUpgrade(server.port, "/ws");
        expect(refused.answer.status).toBe(503);
        expect(refused.answer.headers["retry-after"]).toBeDefined();
        if (refused.ws === null) expect(JSON.parse(refused.body)).toMatchObject({ error: "shutting_down" });
        // Still open and counted while the delay runs.
        expect(client.close).toBeNull();
        await expectCounts(server, 1, {});
        const close = await client.waitForCloseFrame(3_000);
        expect(close.code).toBe(1001);
        expectBetween(close.at - signalledAt, 1_000 - EARLY_MS, 2_000);
        expect(await server.exited).toBe(0);
      }, { SHUTDOWN_DELAY: "1s" }),
      30_000,
    );

    // Timed one at a time, as the client-disconnect scenarios are (test/_conformance.ts).
    for (const how of ["FIN", "RST"] as const) {
      scenario(
        `a client that leaves without a close frame (${how}) is heard of by onClose within 100 ms${counted("counted client")}`,
        undefined,
        withServer(async (server, defer) => {
          const client = await ws(server, defer);
          client.send("hello");
          await client.waitForMessage(1, 2_000);
          const leftAt = Date.now();
          if (how === "RST") client.reset();
          else client.destroy();
          const heard = await server.waitForEvent("ws_onclose", 2_000);
          expectBetween(Date.parse(heard.time) - leftAt, -EARLY_MS, ABORT_NOTICE_MS);
          expect(heard.code).toBe(1006);
          await expectCounts(server, 0, { client: 1 });
        }),
        20_000,
        true,
      );
    }

    scenario(
      "MAX_CONNECTIONS counts WebSockets: past the limit a connection is closed unanswered; a WebSocket that closes makes room",
      caps.ownedVariables.MAX_CONNECTIONS ?? gaps.connectionLimit,
      withServer(async (server, defer) => {
        const held = [await ws(server, defer), await ws(server, defer), await ws(server, defer)];
        await expect(tryUpgrade(server.port, "/ws", { timeoutMs: 2_000 })).rejects.toThrow("closed before a handshake answer");
        expect((await server.waitForEvent("connections_refused", 2_000)).max).toBe(3);
        held[0]!.sendClose(1000);
        await held[0]!.waitForEnd(2_000);
        // Room again once the server has seen that close: a moment later at most.
        const next = await retrying(() => openWebSocket(server.port, "/ws", { timeoutMs: 1_000 }), 2_000);
        defer(() => next.reset());
        next.sendClose(1000);
        await next.waitForEnd(2_000);
        // Two held, so a scrape has room, once the server has seen the second close.
        await retrying(() => expectCounts(server, 2, { client: 2 }), 2_000);
      }, { MAX_CONNECTIONS: "3" }),
      20_000,
    );
  });

  describe(`${target}: a plain Hono app's WebSocket, made with Hono's own helper for its runtime`, () => {
    /** A test body on a fresh server serving test/_plain_ws.ts (hono/bun or hono/deno) with the long-lived policy. */
    const withPlainApp = (fn: (server: ServerProcess, defer: Defer) => Promise<void>, extraEnv: Record<string, string> = {}) =>
      serving(target, "test/_plain_ws.ts", { ...policyEnv, ...extraEnv }, fn);

    if (gaps.honoHelperRefused) {
      test.concurrent(
        `the upgrade is refused clearly, and the server goes on: ${gaps.honoHelperRefused}`,
        withPlainApp(async (server) => {
          const refused = await tryUpgrade(server.port, "/ws");
          expect(refused.answer.status).toBe(501);
          if (refused.ws !== null) throw new Error("upgraded");
          expect(JSON.parse(refused.body)).toMatchObject({ error: "websocket_unsupported" });
          expect((await server.waitForEvent("websocket_unsupported", 1_000)).message).toContain("src/policy/realtime.ts");
          expect((await fetchOnce(`${server.url}/healthz`)).status).toBe(200);
        }),
        20_000,
      );
      return;
    }

    scenario(
      "under the policy as with our import: echo; a client that answers no ping is closed (1001) within two intervals, logged unresponsive; SIGTERM sends 1001 and the process exits",
      gaps.honoHelper ?? noPings ?? owned.shutdown,
      withPlainApp(async (server, defer) => {
        const answering = await openWebSocket(server.port, "/ws");
        defer(() => answering.reset());
        const silent = await openWebSocket(server.port, "/ws", { answerPings: false });
        defer(() => silent.reset());
        answering.send("hello");
        expect((await answering.waitForMessage(1, 2_000)).data.toString()).toBe("hello");
        const close = await silent.waitForCloseFrame(2 * INTERVAL_MS + LATE_MS + 1_000);
        expectBetween(close.at - silent.openedAt, 2 * INTERVAL_MS - INTERVAL_MS / 10 - 50, 2 * INTERVAL_MS + LATE_MS);
        expect(close.code).toBe(1001);
        expect(await policyClose(server, "unresponsive")).toMatchObject({ code: 1001, path: "/ws" });
        expect((await server.waitForEvent("app_onclose", 1_000)).code).toBe(1001);
        const text = await scrape(server);
        if (text !== null) {
          expect(sample(text, "websocket_connections_open")).toBe(1);
          expect(sample(text, 'websocket_closed_total{reason="unresponsive"}')).toBe(1);
        }
        // The one that answers pings is still open, until the shutdown closes it.
        expect(answering.close).toBeNull();
        server.signal("SIGTERM");
        const shutdown = await answering.waitForCloseFrame(2_000);
        expect({ code: shutdown.code, reason: shutdown.reason }).toEqual({ code: 1001, reason: "server shutting down" });
        expect(await server.exited).toBe(0);
        expect(server.named("app_onclose").map((e) => e.code)).toEqual([1001, 1001]);
      }),
      20_000,
    );

    scenario(
      "behind a trusted proxy that terminates TLS (TRUST_PROXY=true, X-Forwarded-Proto: https), the app's own helper upgrades too: the runtime gets the request it handed in, not the copy made for the scheme",
      gaps.honoHelper ?? caps.unsupported.trustProxy,
      withPlainApp(async (server, defer) => {
        const client = await openWebSocket(server.port, "/ws", { headers: { "x-forwarded-proto": "https" } });
        defer(() => client.reset());
        expect(client.handshake.status).toBe(101);
        client.send("through the proxy");
        expect((await client.waitForMessage(1, 2_000)).data.toString()).toBe("through the proxy");
      }, { TRUST_PROXY: "true" }),
      20_000,
    );
  });

  describe(`${target}: long-lived SSE`, () => {
    /** Opens `path` raw (the stream's bytes as they arrive), dropped when the test ends. */
    async function stream(server: ServerProcess, defer: Defer, path: string, headers = ""): Promise<RawClient> {
      const client = await connect(server.port);
      defer(() => client.destroy());
      client.write(get(path).replace("\r\n\r\n", `\r\n${headers}\r\n`));
      return client;
    }
    const count = (data: string, text: string) => data.split(text).length - 1;

    test.concurrent(
      "SSE heartbeats arrive on a quiet stream made with Hono's own streamSSE, every SSE_HEARTBEAT",
      withServer(async (server, defer) => {
        const client = await stream(server, defer, "/plain-events?interval=60000");
        const firstAt = await client.waitFor((d) => d.includes("id: 1\n"), 2_000, "the first event");
        expect(client.data).toMatch(/content-type: text\/event-stream/i);
        const beats: number[] = [];
        for (let n = 1; n <= 2; n++) {
          beats.push(await client.waitFor((d) => count(d, ": heartbeat") >= n, INTERVAL_MS * 2 + LATE_MS, `heartbeat ${n}`));
        }
        // Due after a quiet heartbeat (one timer per stream, re-armed from the last write).
        expectBetween(beats[0]! - firstAt, INTERVAL_MS - EARLY_MS, INTERVAL_MS + LATE_MS);
        expectBetween(beats[1]! - beats[0]!, INTERVAL_MS - EARLY_MS, INTERVAL_MS + LATE_MS);
        // Comment lines between whole events: the event still parses as the app wrote it.
        expect(client.data).toContain('event: tick\ndata: {"id":1}\nid: 1\n\n');
        expect(count(client.data, "event: tick")).toBe(1);
      }),
      20_000,
    );

    test.concurrent(
      "Last-Event-ID reaches the handler: the stream resumes after it",
      withServer(async (server, defer) => {
        const client = await stream(server, defer, "/events?interval=50", "Last-Event-ID: 41\r\n");
        await client.waitFor((d) => d.includes("id: 43\n"), 2_000, "two events");
        const ids = [...client.data.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
        expect(ids.slice(0, 2)).toEqual([42, 43]);
      }),
      20_000,
    );

    scenario(
      "SIGTERM ends an SSE stream made with Hono's own streamSSE with retry: and a clean end, stops the app's loop, and the process exits far before SHUTDOWN_TIMEOUT",
      owned.shutdown,
      withServer(async (server, defer) => {
        const client = await stream(server, defer, "/plain-events?interval=60000");
        await client.waitFor((d) => d.includes("id: 1\n"), 2_000, "the first event");
        const signalledAt = Date.now();
        server.signal("SIGTERM");
        const retryAt = await client.waitFor((d) => d.includes(`retry: ${SSE_RETRY_MS}\n`), 2_000, "the retry: field");
        expect(retryAt - signalledAt).toBeLessThanOrEqual(1_000);
        // The chunked body's last chunk: the stream ended, it was not cut.
        await client.waitFor((d) => d.endsWith("\r\n0\r\n\r\n"), 1_000, "the stream's end");
        const closedAt = await client.waitForClose(1_000);
        expect(await server.exited).toBe(0);
        expect(closedAt - signalledAt).toBeLessThan(SHUTDOWN_MS / 2);
        const complete = await server.waitForEvent("shutdown_complete", 1_000);
        expect(complete.cut).toBe(0);
        // The app's stream was told (Hono's stream.aborted and onAbort), so its loop can end.
        expect(await server.waitForEvent("plain_events_aborted", 1_000)).toMatchObject({ sent: 1 });
      }),
      30_000,
    );
  });
}
