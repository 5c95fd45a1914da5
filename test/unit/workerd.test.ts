import { afterEach, beforeEach, describe, expect, type Mock, spyOn, test } from "bun:test";
import { readFileSync } from "node:fs";
import { loadConfig } from "../../src/main/_env.ts";
import { type CloudflareHandler, worker } from "../../adapters/cloudflare/mod.ts";
import { loadCloudflareConfig } from "../../src/main/_workerd_config.ts";
import { COMPATIBILITY_DATE, MAX_MESSAGE_OVER, PLATFORM_OWNED, WORKERD_LIMITS } from "../../src/main/_workerd_platform.ts";
import { Hono } from "hono";
import { upgradeWebSocket } from "../../src/policy/realtime.ts";
import type { AppContext } from "../../src/policy/types.ts";
import fixture from "../_fixture.ts";

/** The worker's console.log lines, parsed, while a test runs. */
let log: Mock<typeof console.log>;
const events = () => log.mock.calls.map(([line]) => JSON.parse(String(line)) as Record<string, unknown>);
beforeEach(() => {
  log = spyOn(console, "log").mockImplementation(() => {});
});
afterEach(() => log.mockRestore());

/** One request to `handler` as Workers makes it: the same env object for every request of an isolate. */
function call(handler: CloudflareHandler, env: Record<string, unknown>, path: string, init?: RequestInit) {
  return handler.fetch(new Request(`http://worker.test${path}`, init), env, {});
}

describe("the worker's bindings", () => {
  test("with none, the defaults of the entries' own schema apply", () => {
    expect(loadCloudflareConfig({})).toEqual({
      ok: true,
      config: {
        bodyLimitBytes: 1_048_576,
        websocketMaxMessageBytes: 1_048_576,
        websocketMaxBufferedBytes: 4_194_304,
        sseHeartbeatMs: 15_000,
      },
    });
  });

  test("BODY_LIMIT is validated by the same schema, with the same message, as on the other entries", () => {
    expect(loadCloudflareConfig({ BODY_LIMIT: "512kb" })).toMatchObject({ ok: true, config: { bodyLimitBytes: 524_288 } });
    const node = loadConfig({ BODY_LIMIT: "2gb" });
    const workers = loadCloudflareConfig({ BODY_LIMIT: "2gb" });
    expect(workers.ok).toBe(false);
    expect(!workers.ok && workers.problems).toEqual(!node.ok && node.problems);
  });

  test("every variable the platform owns is refused, each naming itself, its value and the reason", () => {
    for (const [name, reason] of Object.entries(PLATFORM_OWNED)) {
      const result = loadCloudflareConfig({ [name]: "1s" });
      expect(!result.ok && result.problems).toEqual([`${name} "1s" cannot be set on Cloudflare Workers: ${reason}`]);
    }
  });

  test("the WebSocket and event-stream variables that hold on Workers reach the worker; WEBSOCKET_PING_INTERVAL is the platform's", () => {
    const bindings = { WEBSOCKET_MAX_MESSAGE: "64kb", WEBSOCKET_MAX_BUFFERED: "2mb", SSE_HEARTBEAT: "1s" };
    expect(loadCloudflareConfig(bindings)).toMatchObject({
      ok: true,
      config: { websocketMaxMessageBytes: 65_536, websocketMaxBufferedBytes: 2_097_152, sseHeartbeatMs: 1_000 },
    });
    expect(PLATFORM_OWNED.WEBSOCKET_PING_INTERVAL).toStartWith("a worker's WebSocket has no ping()");
    // Bad values get the entries' own messages.
    const node = loadConfig({ SSE_HEARTBEAT: "soon" });
    expect(loadCloudflareConfig({ SSE_HEARTBEAT: "soon" })).toEqual({ ok: false, problems: !node.ok ? node.problems : [] });
  });

  test("WEBSOCKET_MAX_MESSAGE holds up to the platform's own 32 MiB, and is refused above it", () => {
    expect(WORKERD_LIMITS.maxMessageBytes).toBe(33_554_432);
    expect(loadCloudflareConfig({ WEBSOCKET_MAX_MESSAGE: "32mb" })).toMatchObject({
      ok: true,
      config: { websocketMaxMessageBytes: 33_554_432 },
    });
    expect(loadCloudflareConfig({ WEBSOCKET_MAX_MESSAGE: "33554433b" })).toEqual({
      ok: false,
      problems: [`WEBSOCKET_MAX_MESSAGE "33554433b" ${MAX_MESSAGE_OVER}`],
    });
  });

  test("every WEBSUB_* variable is refused as out of scope, its value never quoted", () => {
    const result = loadCloudflareConfig({ WEBSUB_TOPIC: "https://example.com/feed", WEBSUB_SECRET: "hunter2" });
    expect(result.ok).toBe(false);
    const problems = result.ok ? [] : result.problems;
    expect(problems.map((p) => p.split(" ", 1)[0])).toEqual(["WEBSUB_TOPIC", "WEBSUB_SECRET"]);
    for (const problem of problems) expect(problem).toContain("WebSub is out of scope there");
    expect(problems.join("\n")).not.toContain("hunter2");
  });

  test("a template variable bound as anything but text is refused; the app's other bindings are left alone", () => {
    const kv = { get() {} };
    expect(loadCloudflareConfig({ CACHE: kv, API_TOKEN: "secret" }).ok).toBe(true);
    const result = loadCloudflareConfig({ BODY_LIMIT: kv });
    expect(!result.ok && result.problems).toEqual(["BODY_LIMIT is not a text binding: set it as a text variable (vars in wrangler.jsonc)"]);
  });
});

/** The module worker, serving the suites' own fixture app (src/app.ts is the user's to replace). */
describe("the module worker", () => {
  test("serves the app with the probes in front: /healthz, /readyz always ready, /metrics 404 with the reason", async () => {
    const handler = worker(fixture, loadCloudflareConfig);
    const env = {};
    expect(await (await call(handler, env, "/")).text()).toBe("Hello World");
    expect(await (await call(handler, env, "/healthz")).json()).toEqual({ status: "ok" });
    expect(await (await call(handler, env, "/readyz")).json()).toEqual({ status: "ready" });
    const metrics = await call(handler, env, "/metrics");
    expect(metrics.status).toBe(404);
    expect((await metrics.json() as { message: string }).message).toStartWith("No /metrics on Cloudflare Workers");
    const post = await call(handler, env, "/healthz", { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });

  test("BODY_LIMIT from the bindings reaches the app: a larger body answers 413 JSON", async () => {
    const handler = worker(fixture, loadCloudflareConfig);
    const env = { BODY_LIMIT: "10b" };
    expect(await (await call(handler, env, "/echo", { method: "POST", body: "0123456789" })).json()).toEqual({ bytes: 10 });
    const res = await call(handler, env, "/echo", { method: "POST", body: "0123456789a" });
    expect(res.status).toBe(413);
    expect((await res.json() as { error: string }).error).toBe("payload_too_large");
  });

  test("a stream through the lifecycle helper logs its outcome as JSON lines tagged workerd", async () => {
    const handler = worker(fixture, loadCloudflareConfig);
    const res = await call(handler, {}, "/stream?chunks=2&interval=0");
    expect(await res.text()).toBe("chunk 1 of 2\nchunk 2 of 2\n");
    const stream = events().find((e) => e.event === "stream_request");
    expect(stream).toMatchObject({ level: "info", runtime: "workerd", outcome: "finished", sent: 2 });
  });

  test("an app made by an async factory is made once per isolate, and served", async () => {
    let made = 0;
    const handler = worker(async (context: AppContext) => {
      made += 1;
      await Bun.sleep(1);
      return fixture(context);
    });
    const env = {};
    const answers = await Promise.all([call(handler, env, "/"), call(handler, env, "/")]);
    for (const res of answers) expect(await res.text()).toBe("Hello World");
    expect(await (await call(handler, env, "/healthz")).json()).toEqual({ status: "ok" });
    expect(made).toBe(1);
  });

  test("a bad binding answers every request 500 JSON naming the variables, and logs config_invalid once per isolate", async () => {
    const handler = worker(fixture, loadCloudflareConfig);
    const env = { IDLE_TIMEOUT: "5s", BODY_LIMIT: "lots" };
    for (const path of ["/", "/healthz"]) {
      const res = await call(handler, env, path);
      expect(res.status).toBe(500);
      const body = await res.json() as { error: string; message: string };
      expect(body.error).toBe("invalid_configuration");
      expect(body.message).toContain("(IDLE_TIMEOUT, BODY_LIMIT)");
      // Values stay in the log: a response goes to anyone who asks.
      expect(body.message).not.toContain("lots");
    }
    const logged = events().filter((e) => e.event === "config_invalid");
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: "error", runtime: "workerd" });
    expect(logged[0]!.problems).toEqual([
      `IDLE_TIMEOUT "5s" cannot be set on Cloudflare Workers: ${PLATFORM_OWNED.IDLE_TIMEOUT}`,
      'BODY_LIMIT "lots" is not a size: use an integer with a unit b, kb or mb, e.g. 512kb or 1mb',
    ]);
  });

  test("an app that uses the metrics registry fails with the reason, logged, and answers 500", async () => {
    const handler = worker(({ registry }: AppContext) => {
      registry.counter("jobs_total", "Jobs.");
      return () => new Response("unreachable");
    });
    const res = await call(handler, {}, "/");
    expect(res.status).toBe(500);
    const failed = events().find((e) => e.event === "app_load_failed") as { error: { message: string } } | undefined;
    expect(failed?.error.message).toContain("context.registry.counter: there is no metrics registry on Cloudflare Workers");
  });
});

describe("wrangler.jsonc", () => {
  // JSONC: whole-line comments only, as the file is written.
  const config = JSON.parse(
    readFileSync(new URL("../../wrangler.jsonc", import.meta.url), "utf8").split("\n").filter((line) => !/^\s*\/\//.test(line)).join("\n"),
  ) as { main: string; compatibility_date: string; compatibility_flags?: string[]; vars: Record<string, string> };

  test("deploys the same entry, with the compatibility date the local run uses and vars the worker accepts", () => {
    expect(config.main).toBe("src/main/cloudflare.ts");
    expect(config.compatibility_date).toBe(COMPATIBILITY_DATE);
    expect(loadCloudflareConfig(config.vars).ok).toBe(true);
  });

  test("names nodejs_compat for wrangler, on a date from which workerd enables it without the flag, as the local run relies on", () => {
    // docs/runtimes.md#workerds-nodejs-built-ins: from 2026-08-04 on, the date alone gives workerd's node: built-ins.
    expect(config.compatibility_flags).toEqual(["nodejs_compat"]);
    expect(COMPATIBILITY_DATE >= "2026-08-04").toBe(true);
  });
});

/**
 * The worker's WebSockets, on a stand-in for workerd's `WebSocketPair` (Bun has none): what the
 * adapter hands the policy core, and what it reports back. Against real workerd: test/workerd.test.ts.
 */
describe("the module worker's WebSockets", () => {
  /** The server end of a pair as workerd's behaves, as measured (adapters/cloudflare/_websocket.ts). */
  class FakeSocket extends EventTarget {
    readyState = 1;
    binaryType = "blob";
    bufferedAmount = 0;
    protocol = "";
    accepted = false;
    readonly sent: Array<string | ArrayBuffer | ArrayBufferView> = [];
    readonly closes: Array<[number | undefined, string | undefined]> = [];
    accept() {
      this.accepted = true;
    }
    /** As workerd's: what is sent waits until written, here forever (a client that does not read). */
    send(data: string | ArrayBuffer | ArrayBufferView) {
      this.sent.push(data);
      this.bufferedAmount += typeof data === "string" ? new TextEncoder().encode(data).byteLength : data.byteLength;
    }
    close(code?: number, reason?: string) {
      this.closes.push([code, reason]);
      this.readyState = 2;
    }
    receive(data: string | ArrayBuffer) {
      this.dispatchEvent(new MessageEvent("message", { data }));
    }
    closedBy(code: number, reason: string) {
      this.readyState = 3;
      this.dispatchEvent(new CloseEvent("close", { code, reason }));
    }
    failed(message: string) {
      this.readyState = 3;
      this.dispatchEvent(new ErrorEvent("error", { error: new Error(message), message }));
    }
  }

  let pairs: FakeSocket[][] = [];
  const global = globalThis as { WebSocketPair?: unknown };
  beforeEach(() => {
    pairs = [];
    global.WebSocketPair = class {
      0 = new FakeSocket();
      1 = new FakeSocket();
      constructor() {
        pairs.push([this[0], this[1]]);
      }
    };
  });
  afterEach(() => delete global.WebSocketPair);

  const UPGRADE = {
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
  };
  /** Upgrades the fixture's /ws echo on a worker with `env`; returns the response and the server end. */
  async function upgrade(env: Record<string, string> = {}, headers: Record<string, string> = UPGRADE) {
    const res = await call(worker(fixture, loadCloudflareConfig), env, "/ws", { headers });
    return { res, server: pairs[0]?.[1] };
  }
  const heardClose = () => events().filter((e) => e.event === "ws_onclose");

  test("an upgrade answers 101 with a new pair; its server end, accepted, echoes text, and binary as ArrayBuffer", async () => {
    const { res, server } = await upgrade();
    expect(res.status).toBe(101);
    expect(pairs).toHaveLength(1);
    expect(server!.accepted).toBe(true);
    expect(server!.binaryType).toBe("arraybuffer");
    server!.receive("héllo");
    const bytes = new Uint8Array([0, 1, 2, 255]).buffer;
    server!.receive(bytes);
    expect(server!.sent).toEqual(["héllo", bytes]);
  });

  test("a client's close reaches the app once, whatever workerd reports after it", async () => {
    const { server } = await upgrade();
    server!.closedBy(1000, "bye");
    server!.failed("Network connection lost.");
    server!.closedBy(1006, "");
    expect(heardClose()).toMatchObject([{ code: 1000, reason: "bye" }]);
    expect(server!.closes).toEqual([]);
  });

  test("WEBSOCKET_MAX_MESSAGE counts a text message in UTF-8 bytes: one over it closes the socket 1009, logged too_big", async () => {
    const { server } = await upgrade({ WEBSOCKET_MAX_MESSAGE: "10b" });
    server!.receive("ééééé");
    expect(server!.sent).toEqual(["ééééé"]);
    server!.receive("éééééa");
    expect(server!.sent).toHaveLength(1);
    expect(server!.closes).toEqual([[1009, "message too big"]]);
    expect(events().find((e) => e.event === "websocket_closed")).toMatchObject({ reason: "too_big", code: 1009, path: "/ws" });
  });

  test("WEBSOCKET_MAX_BUFFERED reads workerd's bufferedAmount: over it, 1008, and the socket is given up (1006 to the app), workerd having no way to drop it", async () => {
    const { server } = await upgrade({ WEBSOCKET_MAX_BUFFERED: "100kb" });
    server!.receive("flood 1000000");
    await Bun.sleep(50);
    // Two 64 KiB messages pass 100 KiB, and nothing is sent after.
    expect(server!.sent).toHaveLength(2);
    expect(server!.closes).toEqual([[1008, "client not reading"]]);
    expect(heardClose()).toMatchObject([{ code: 1006, reason: "" }]);
  });

  test("a connection lost without a close frame is a close (1006), not an error of the app's", async () => {
    const heard: string[] = [];
    const app = new Hono().get(
      "/ws",
      upgradeWebSocket(() => ({ onError: () => void heard.push("error"), onClose: (e) => void heard.push(`close ${e.code}`) })),
    );
    await call(worker(app, loadCloudflareConfig), {}, "/ws", { headers: UPGRADE });
    const server = pairs[0]![1];
    server.failed("Network connection lost.");
    server.closedBy(1006, "WebSocket disconnected without sending Close frame.");
    expect(heard).toEqual(["close 1006"]);
  });

  test("workerd's own limit reports only an error: the app hears the 1009 it sent", async () => {
    const { server } = await upgrade();
    server!.failed("WebSocket protocol error; protocolError.statusCode = 1009; protocolError.description = Message is too large");
    expect(heardClose()).toMatchObject([{ code: 1009, reason: "Message is too large" }]);
  });

  test("a handshake workerd would refuse after the worker is answered before any socket opens: 426 for another version, 400 without a key", async () => {
    const old = await upgrade({}, { ...UPGRADE, "sec-websocket-version": "8" });
    expect(old.res.status).toBe(426);
    expect(old.res.headers.get("sec-websocket-version")).toBe("13");
    expect((await old.res.json() as { error: string }).error).toBe("upgrade_required");
    const { "sec-websocket-key": _, ...keyless } = UPGRADE;
    const bad = await upgrade({}, keyless);
    expect(bad.res.status).toBe(400);
    expect(pairs).toEqual([]);
  });

  test("outside workerd, with no WebSocketPair, the app's 501 is the answer", async () => {
    delete global.WebSocketPair;
    const { res } = await upgrade();
    expect(res.status).toBe(501);
    expect((await res.json() as { error: string }).error).toBe("websocket_unsupported");
  });

  test("SSE_HEARTBEAT reaches the worker's event streams: a quiet stream gets a comment each heartbeat", async () => {
    const res = await call(worker(fixture, loadCloudflareConfig), { SSE_HEARTBEAT: "50ms" }, "/events?interval=60000");
    const reader = res.body!.getReader();
    let text = "";
    const until = Date.now() + 400;
    while (Date.now() < until && text.split(": heartbeat").length < 4) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text).toContain("id: 1\n");
    expect(text.split(": heartbeat").length - 1).toBeGreaterThanOrEqual(3);
  });
});
