import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { completeResponses, fetchOnce, get } from "../harness/http.ts";
import { ServerProcess } from "../harness/process.ts";
import { trickle } from "../harness/raw_client.ts";
import { FIXTURE_APP, spawnServer, startServer } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import { openWebSocket } from "../harness/ws_client.ts";
import { bundleWorker, WORKERD, writeWorkerdConfig } from "../src/main/_workerd_build.ts";
import { MAX_MESSAGE_OVER, WEBSUB_OUT_OF_SCOPE, WORKERD_LIMITS } from "../src/main/_workerd_platform.ts";
import { conformance } from "./_conformance.ts";
import { longLived } from "./_long_lived.ts";
import { open } from "./_plain.ts";
import { type Defer, EARLY_MS, expectBetween, idleAndInFlight, refusedAtStart, serving } from "./_suite.ts";

/**
 * Cloudflare's workerd, through `npm run start:workerd` as a user starts it. The shared suite runs
 * on it through its capabilities row (test/_capabilities.ts): routes, bad input, body limits,
 * pipelining, client disconnect as workerd declares it, configuration, the user's own app; the
 * clauses the platform owns (idle, slow clients, shutdown) are skipped there, each naming why.
 * What follows is Workers-only: the entry and its line, the bindings a deployed worker refuses,
 * WebSub out of scope, no /metrics, the platform's own limits checked as declared in
 * src/main/_workerd_platform.ts (docs/policy.md#cloudflare-workers-workerd), and workerd's Node
 * built-ins. workerd is a devDependency: nothing here is skipped.
 */
conformance("workerd");
longLived("workerd");

const { idleCloseMs, headCloseMs } = WORKERD_LIMITS;

/** A test body on workerd serving `app` (null: src/main/cloudflare.ts, the example app) with `env`. */
const onWorkerd = (
  fn: (server: ServerProcess, defer: Defer) => void | Promise<void>,
  env: Record<string, string> = {},
  app: string | null = FIXTURE_APP,
) => serving("workerd", app, env, fn);

describe("workerd: the entry", () => {
  test.concurrent(
    "npm run start:workerd prints the listening line with the port workerd bound for PORT=0, and workerd's pid",
    onWorkerd((server) => {
      const listening = server.named("listening");
      expect(listening).toHaveLength(1);
      expect(listening[0]).toMatchObject({ level: "info", runtime: "workerd", engine: "workerd", workerd: WORKERD.version });
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(server.port).toBeGreaterThan(0);
      expect(readFileSync(`/proc/${listening[0]!.pid}/comm`, "utf8").trim()).toBe("workerd");
    }),
    30_000,
  );

  test.concurrent(
    "src/main/cloudflare.ts, the entry wrangler deploys, bundles and serves the app with the probes in front, and no /metrics",
    onWorkerd(
      async (server) => {
        // Whatever the app is (src/app.ts is the user's): it loaded, and the entry's own routes answer.
        expect((await fetchOnce(server.url)).status).toBeLessThan(500);
        expect(await (await fetchOnce(`${server.url}/healthz`)).json()).toEqual({ status: "ok" });
        expect(await (await fetchOnce(`${server.url}/readyz`)).json()).toEqual({ status: "ready" });
        const metrics = await fetchOnce(`${server.url}/metrics`);
        expect(metrics.status).toBe(404);
        expect((await metrics.json() as { message: string }).message).toStartWith("No /metrics on Cloudflare Workers");
        expect(server.named("config_invalid")).toEqual([]);
      },
      {},
      null,
    ),
    30_000,
  );
});

describe("workerd: configuration", () => {
  // The variables the platform owns are refused through the shared suite (its row's ownedVariables).
  test.concurrent(
    "any WEBSUB_* is refused at startup, WebSub being out of scope on Workers: exit 2, one line each naming it, never its value",
    async () => {
      const lines = await refusedAtStart("workerd", { WEBSUB_TOPIC: "https://example.com/feed", WEBSUB_SECRET: "s3cret-value" });
      expect(lines.sort()).toEqual(
        ["WEBSUB_SECRET", "WEBSUB_TOPIC"].map((name) => `${name} cannot be set on Cloudflare Workers: ${WEBSUB_OUT_OF_SCOPE}`),
      );
      expect(WEBSUB_OUT_OF_SCOPE).toStartWith("WebSub is out of scope there");
    },
    30_000,
  );

  test.concurrent(
    "a deployed worker with a bad binding answers 500 JSON naming the variable, and logs config_invalid",
    () =>
      using(async (defer) => {
        // As Cloudflare runs it: no runner to refuse the binding first, the worker alone on workerd.
        const dir = mkdtempSync(join(tmpdir(), "hono-workerd-test-"));
        defer(() => rmSync(dir, { recursive: true, force: true }));
        bundleWorker(dir, FIXTURE_APP);
        const config = writeWorkerdConfig(dir, "127.0.0.1", 0, ["BODY_LIMIT"]);
        // workerd's control messages (`{"event":"listen","port":N}`) on stdout, among the worker's events.
        const env = { ...process.env, BODY_LIMIT: "lots" } as Record<string, string>;
        const server = new ServerProcess([WORKERD.default, "serve", config, "--control-fd=1"], env);
        defer(() => server.kill());
        const listen = await server.waitForEvent("listen", 15_000);
        for (const path of ["/", "/healthz"]) {
          const res = await fetchOnce(`http://127.0.0.1:${listen.port}${path}`);
          expect(res.status).toBe(500);
          expect(await res.json()).toMatchObject({ error: "invalid_configuration", message: expect.stringContaining("(BODY_LIMIT)") });
        }
        const logged = server.named("config_invalid");
        expect(logged).toHaveLength(1);
        expect(logged[0]!.problems).toEqual(['BODY_LIMIT "lots" is not a size: use an integer with a unit b, kb or mb, e.g. 512kb or 1mb']);
      }),
    30_000,
  );
});

describe("workerd: what the platform owns, as declared and measured", () => {
  test.concurrent(
    "an idle keep-alive connection is closed by workerd after its own 15 s, and no Keep-Alive header tells the client",
    onWorkerd(async (server, defer) => {
      const client = await open(server.port, defer);
      client.write(get("/"));
      const answeredAt = await client.waitFor((d) => completeResponses(d) === 1, 2_000, "a response");
      expect(client.data).not.toMatch(/keep-alive:/i);
      const closedAt = await client.waitForClose(idleCloseMs.max + 1_000);
      expectBetween(closedAt - answeredAt, idleCloseMs.min, idleCloseMs.max);
    }),
    30_000,
  );

  test.concurrent(
    "a silent new connection, and a slowloris trickle however many bytes it sends, are closed by workerd after 15 s without a 408",
    onWorkerd(async (server, defer) => {
      const silent = await open(server.port, defer);
      const trickling = await open(server.port, defer);
      defer(trickle(trickling, `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ${"a".repeat(400)}\r\n`, 100));
      for (const client of [silent, trickling]) {
        const closedAt = await client.waitForClose(headCloseMs.max + 1_000);
        expectBetween(closedAt - client.openedAt, headCloseMs.min, headCloseMs.max);
        expect(client.data).toBe("");
      }
    }),
    30_000,
  );

  test.concurrent(
    "a request body has no deadline on workerd, as declared: a trickled upload is read whole, a stalled one stays open",
    onWorkerd(async (server, defer) => {
      // Longer than any limit of workerd's own (15 s for idle connections and heads).
      const INTERVAL_MS = 200;
      const BYTES = Math.ceil((idleCloseMs.max + 1_000) / INTERVAL_MS);
      const trickling = await open(server.port, defer);
      trickling.write(`POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${BYTES}\r\n\r\n`);
      defer(trickle(trickling, "x".repeat(BYTES), INTERVAL_MS));
      const stalled = await open(server.port, defer);
      stalled.write(`POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${BYTES}\r\n\r\nxxxx`);
      const answeredAt = await trickling.waitFor((d) => completeResponses(d) === 1, BYTES * INTERVAL_MS + 2_000, "the answer");
      expectBetween(answeredAt - trickling.openedAt, BYTES * INTERVAL_MS - EARLY_MS, BYTES * INTERVAL_MS + 2_000);
      expect(trickling.data).toContain(`{"bytes":${BYTES}}`);
      expect(stalled.closedAt).toBeNull();
      expect(stalled.data).toBe("");
    }),
    30_000,
  );

  test.concurrent(
    "a client that closes while the worker has nothing to write is not noticed, as declared: not by a handler at work, nor before a body's end",
    onWorkerd(async (server, defer) => {
      const working = await open(server.port, defer);
      working.write(get("/delay?ms=1000"));
      await expect(working.waitForClose(300)).rejects.toThrow("still open");
      working.destroy();
      const ending = await open(server.port, defer);
      ending.write(get("/slow?ms=1000"));
      await ending.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk");
      ending.destroy();
      // The body's end is the next thing workerd writes: it goes out, and nothing counts as cut.
      expect((await server.waitForEvent("slow_request", 3_000)).outcome).toBe("finished");
      // An absence can only be shown by waiting: the handler's answer went out 1 s after its request.
      await Bun.sleep(1_000);
      expect(server.named("request_aborted")).toEqual([]);
    }),
    30_000,
  );

  test.concurrent(
    "SIGTERM to npm run start:workerd: workerd closes idle connections at once, finishes the in-flight request and exits 0",
    onWorkerd(async (server, defer) => {
      const { idle, busy } = await idleAndInFlight(server, defer);
      const signalledAt = Date.now();
      server.signal("SIGTERM");
      expect(await idle.waitForClose(1_000) - signalledAt).toBeLessThanOrEqual(500);
      const finishedAt = await busy.waitFor((d) => completeResponses(d) === 1, 3_000, "the in-flight response");
      expect((await server.waitForEvent("slow_request", 1_000)).outcome).toBe("finished");
      expect(await server.exitCode(5_000)).toBe(0);
      expect(Date.now() - finishedAt).toBeLessThanOrEqual(1_000);
    }),
    30_000,
  );

  test.concurrent(
    "a half-sent head holds workerd's exit after SIGTERM until its own 15 s head limit, as declared",
    onWorkerd(async (server, defer) => {
      const half = await open(server.port, defer);
      half.write("GET / HTTP/1.1\r\nHost: 127");
      await Bun.sleep(200);
      server.signal("SIGTERM");
      expect(await server.exitCode(headCloseMs.max + 2_000)).toBe(0);
      const closedAt = await half.waitForClose(1_000);
      expectBetween(closedAt - half.openedAt, headCloseMs.min, headCloseMs.max);
    }),
    30_000,
  );
});

// The shared WebSocket and SSE block runs above (longLived); these are what only Workers does.
describe("workerd: WebSockets and event streams, where the platform owns them", () => {
  const { maxMessageBytes } = WORKERD_LIMITS;

  test.concurrent(
    "workerd answers a client's ping and sends none (WEBSOCKET_PING_INTERVAL is the platform's), and a silent WebSocket outlives its 15 s idle close",
    onWorkerd(async (server, defer) => {
      const client = await openWebSocket(server.port, "/ws");
      defer(() => client.reset());
      client.ping("there?");
      await client.waitFor((c) => c.pongs.length === 1, 1_000, "workerd's pong");
      await expect(client.waitForEnd(idleCloseMs.max + 500)).rejects.toThrow("still open");
      expect(client.pings).toEqual([]);
      client.send("still here");
      expect((await client.waitForMessage(1, 2_000)).data.toString()).toBe("still here");
    }),
    30_000,
  );

  // One at a time: a 32 MiB echo read and parsed here would slow the concurrent scenarios' clocks.
  test(
    "WEBSOCKET_MAX_MESSAGE=32mb: a message of workerd's own 32 MiB is echoed, one byte more is closed by workerd with 1009 before the worker sees it, and the app hears that 1009",
    onWorkerd(async (server, defer) => {
      // The echo, sent in one turn, waits whole in workerd's bufferedAmount: WEBSOCKET_MAX_BUFFERED above it.
      const whole = await openWebSocket(server.port, "/ws");
      defer(() => whole.reset());
      whole.send(Buffer.alloc(maxMessageBytes, 1));
      expect((await whole.waitForMessage(1, 10_000)).data.length).toBe(maxMessageBytes);
      const over = await openWebSocket(server.port, "/ws");
      defer(() => over.reset());
      over.send(Buffer.alloc(maxMessageBytes + 1, 1));
      // From the frame's header: "Message is too large: 33554433 > 33554432".
      const tooLarge = { code: 1009, reason: expect.stringMatching(/^Message is too large/) };
      expect(await over.waitForCloseFrame(10_000)).toMatchObject(tooLarge);
      expect(await server.waitForEvent("ws_onclose", 2_000)).toMatchObject(tooLarge);
      // workerd's close, not the policy's.
      expect(server.named("websocket_closed")).toEqual([]);
    }, { WEBSOCKET_MAX_MESSAGE: "32mb", WEBSOCKET_MAX_BUFFERED: "64mb" }),
    30_000,
  );

  test.concurrent(
    "WEBSOCKET_MAX_MESSAGE over workerd's own 32 MiB is refused at startup: exit 2, one line naming it and the limit",
    async () => {
      expect(await refusedAtStart("workerd", { WEBSOCKET_MAX_MESSAGE: "33mb" })).toEqual([
        `WEBSOCKET_MAX_MESSAGE "33mb" ${MAX_MESSAGE_OVER}`,
      ]);
    },
    30_000,
  );

  test.concurrent(
    "SIGTERM: workerd neither closes an open WebSocket (no 1001) nor ends an event stream (no retry:); it exits 0 once both are gone",
    onWorkerd(async (server, defer) => {
      const ws = await openWebSocket(server.port, "/ws");
      defer(() => ws.reset());
      const events = await open(server.port, defer);
      events.write(get("/events?interval=60000"));
      await events.waitFor((d) => d.includes("id: 1\n"), 2_000, "the first event");
      server.signal("SIGTERM");
      await Bun.sleep(1_500);
      expect(ws.close).toBeNull();
      ws.send("after the signal");
      expect((await ws.waitForMessage(1, 2_000)).data.toString()).toBe("after the signal");
      expect(events.data).not.toContain("retry:");
      expect(events.closedAt).toBeNull();
      expect(server.proc.exitCode).toBeNull();
      ws.sendClose(1000);
      await ws.waitForEnd(2_000);
      // Heard of at the stream's next heartbeat: workerd learns of a close when it writes.
      events.destroy();
      const goneAt = Date.now();
      expect(await server.exitCode(3_000)).toBe(0);
      expect(Date.now() - goneAt).toBeLessThanOrEqual(1_500);
    }, { SSE_HEARTBEAT: "200ms" }),
    30_000,
  );
});

describe("workerd: Node's built-ins, imported with the node: prefix", () => {
  // Self-contained: scratch app modules in a temp dir, served through `npm run start:workerd` as a
  // user runs it. What works on workerd and why: docs/runtimes.md#workerds-nodejs-built-ins.

  /** Writes `files` (name to source) into a fresh temp dir removed when the test ends; returns the dir. */
  async function scratch(defer: Defer, files: Record<string, string>): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), "hono-workerd-node-"));
    defer(() => rmSync(dir, { recursive: true, force: true }));
    for (const [name, source] of Object.entries(files)) await Bun.write(join(dir, name), source);
    return dir;
  }

  test.concurrent(
    "an app module that default-imports node:process and imports Buffer from node:buffer is served, with workerd's own process.env",
    () =>
      using(async (defer) => {
        const dir = await scratch(defer, {
          "app.ts": `import process from "node:process";
import { Buffer } from "node:buffer";
import { EventEmitter, once } from "node:events";

export default {
  async fetch(request: Request): Promise<Response> {
    const emitter = new EventEmitter();
    const heard = once(emitter, "ping");
    emitter.emit("ping", new URL(request.url).pathname);
    return Response.json({
      base64: Buffer.from("héllo").toString("base64"),
      isBuffer: Buffer.isBuffer(Buffer.alloc(1)),
      nextTick: await new Promise((resolve) => process.nextTick(() => resolve("ticked"))),
      bodyLimit: process.env.BODY_LIMIT ?? null,
      heard: (await heard)[0],
    });
  },
};
`,
        });
        // BODY_LIMIT becomes a text binding, which workerd's process.env carries (Bun's polyfill's is empty).
        const server = await startServer("workerd", { BODY_LIMIT: "64kb" }, 15_000, { app: join(dir, "app.ts") });
        defer(() => server.kill());
        const res = await fetchOnce(`${server.url}/node`);
        expect(res.status).toBe(200);
        expect(await res.json()).toEqual({ base64: "aMOpbGxv", isBuffer: true, nextTick: "ticked", bodyLimit: "64kb", heard: "/node" });
        expect(await (await fetchOnce(`${server.url}/healthz`)).json()).toEqual({ status: "ok" });
        expect(server.named("app_load_failed")).toEqual([]);
        expect(server.nonJsonLines).toEqual([]);
      }),
    30_000,
  );

  test.concurrent(
    "a CommonJS dependency that requires node:events and node:buffer is bundled and served",
    () =>
      using(async (defer) => {
        const dir = await scratch(defer, {
          "dep.cjs": `const { EventEmitter } = require("node:events");
const { Buffer } = require("node:buffer");
module.exports = { emitter: () => new EventEmitter(), hex: (text) => Buffer.from(text).toString("hex") };
`,
          "app.ts": `import dep from "./dep.cjs";

export default {
  fetch(): Response {
    let got = "";
    const emitter = dep.emitter();
    emitter.on("data", (value: string) => (got = value));
    emitter.emit("data", dep.hex("ok"));
    return new Response(got);
  },
};
`,
        });
        const server = await startServer("workerd", {}, 15_000, { app: join(dir, "app.ts") });
        defer(() => server.kill());
        const res = await fetchOnce(server.url);
        expect(res.status).toBe(200);
        expect(await res.text()).toBe("6f6b");
      }),
    30_000,
  );

  test.concurrent(
    "a built-in imported without the node: prefix gets Bun's browser polyfill: no default process, exit 1 naming the prefix",
    () =>
      using(async (defer) => {
        const dir = await scratch(defer, {
          "app.ts": `import process from "process";

export default { fetch: (): Response => new Response(process.platform) };
`,
        });
        const server = spawnServer("workerd", {}, { app: join(dir, "app.ts") });
        defer(() => server.kill());
        expect(await server.exitCode()).toBe(1);
        expect(server.named("listening")).toEqual([]);
        expect(server.stderr).toContain("Cannot bundle the worker: ");
        expect(server.stderr).toContain('Import Node\'s built-ins with the node: prefix (import process from "node:process")');
      }),
    30_000,
  );
});
