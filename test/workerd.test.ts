import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { completeResponses, fetchOnce, get } from "../harness/http.ts";
import { ServerProcess } from "../harness/process.ts";
import { connect, trickle } from "../harness/raw_client.ts";
import { FIXTURE_APP, startListening } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import { bundleWorker, WORKERD, writeWorkerdConfig } from "../src/main/_workerd_build.ts";
import { WORKERD_LIMITS } from "../src/main/_workerd_platform.ts";
import { chunkedOverLimitCut, declaredOverLimitRefused, open, PLAIN_APP, thrownErrorAnswered, underLimitRead } from "./_plain.ts";
import { EARLY_MS, expectBetween } from "./_suite.ts";

/**
 * The conformance subset on Cloudflare's workerd, through `npm run start:workerd` as a user starts
 * it: routes, bad input, client disconnect through the lifecycle helper, configuration and WebSub
 * refused; and what the platform owns (idle, slow clients, shutdown), checked as declared in
 * src/main/_workerd_platform.ts (docs/policy.md#cloudflare-workers-workerd). workerd is a
 * devDependency: nothing here is skipped.
 */

/** Contract: a handler learns of a client that left within 100 ms (here: of a reset). */
const ABORT_NOTICE_MS = 100;
const { idleCloseMs, headCloseMs, abortAfterNextWriteMs } = WORKERD_LIMITS;

function spawnWorkerd(env: Record<string, string>, app: string | null = FIXTURE_APP): ServerProcess {
  const cmd = ["npm", "run", "start:workerd", "--silent", ...(app ? ["--", app] : [])];
  return new ServerProcess(cmd, { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env } as Record<string, string>);
}

/** Starts a worker for one test and stops it afterwards, whatever happens. */
function withWorker(
  fn: (server: ServerProcess, defer: (cleanup: () => unknown) => void) => void | Promise<void>,
  env: Record<string, string> = {},
  app: string | null = FIXTURE_APP,
) {
  return () =>
    using(async (defer) => {
      const server = await startListening(() => spawnWorkerd(env, app));
      defer(() => server.kill());
      await fn(server, defer);
      expect(server.nonJsonLines).toEqual([]);
    });
}

describe("workerd: the entry and the routes", () => {
  test.concurrent(
    "npm run start:workerd prints the listening line with the port workerd bound for PORT=0, and workerd's pid",
    withWorker((server) => {
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
    "src/main/cloudflare.ts, the entry wrangler deploys, bundles and serves the app with the probes in front",
    withWorker(
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

  test.concurrent(
    "the app's routes answer on workerd as on the other runtimes, a stream through the lifecycle helper included",
    withWorker(async (server) => {
      expect(await (await fetchOnce(server.url)).text()).toBe("Hello World");
      expect(await (await fetchOnce(`${server.url}/stream?chunks=3&interval=10`)).text()).toBe(
        "chunk 1 of 3\nchunk 2 of 3\nchunk 3 of 3\n",
      );
      const stream = await server.waitForEvent("stream_request", 1_000);
      expect(stream).toMatchObject({ runtime: "workerd", outcome: "finished", sent: 3 });
      expect(await (await fetchOnce(`${server.url}/delay?ms=10`)).json()).toEqual({ delayedMs: 10 });
    }),
    30_000,
  );

  test.concurrent(
    "bad input answers JSON: 400 for a bad query, 404 for an unknown route, 413 over BODY_LIMIT",
    withWorker(async (server) => {
      const bad = await fetchOnce(`${server.url}/slow?ms=soon`);
      expect(bad.status).toBe(400);
      expect(await bad.json()).toMatchObject({ error: "invalid_query", issues: [{ parameter: "ms" }] });
      const missing = await fetchOnce(`${server.url}/nope`);
      expect(missing.status).toBe(404);
      expect(await missing.json()).toEqual({ error: "not_found", message: "No route for GET /nope" });
      const post = (body: string) => fetch(`${server.url}/echo`, { method: "POST", body, signal: AbortSignal.timeout(5_000) });
      expect(await (await post("x".repeat(100))).json()).toEqual({ bytes: 100 });
      const large = await post("x".repeat(101));
      expect(large.status).toBe(413);
      expect(await large.json()).toMatchObject({ error: "payload_too_large" });
    }, { BODY_LIMIT: "100b" }),
    30_000,
  );

  test.concurrent(
    "pipelined requests are all answered, in order",
    withWorker(async (server, defer) => {
      const client = await open(server.port, defer);
      client.write(get("/slow?ms=300") + get("/") + get("/healthz"));
      await client.waitFor((d) => completeResponses(d) === 3, 3_000, "three responses");
      expect(client.data.indexOf("Hello World")).toBeLessThan(client.data.indexOf('{"status":"ok"}'));
    }),
    30_000,
  );
});

describe("workerd: configuration", () => {
  test.concurrent(
    "a variable the platform owns, and any WEBSUB_* (out of scope), is refused at startup: exit 2, one line each naming it",
    async () => {
      const server = spawnWorkerd({ IDLE_TIMEOUT: "5s", MAX_CONNECTIONS: "100", WEBSUB_TOPIC: "https://example.com/feed", PORT: "http" });
      try {
        expect(await server.exitCode()).toBe(2);
        expect(server.named("listening")).toEqual([]);
        const lines = server.stderr.trim().split("\n").filter((line) => !line.startsWith("npm "));
        expect(lines.map((line) => line.split(" ", 1)[0]).sort()).toEqual(["IDLE_TIMEOUT", "MAX_CONNECTIONS", "PORT", "WEBSUB_TOPIC"]);
        expect(lines.find((l) => l.startsWith("IDLE_TIMEOUT"))).toStartWith('IDLE_TIMEOUT "5s" cannot be set on Cloudflare Workers: ');
        expect(lines.find((l) => l.startsWith("WEBSUB_TOPIC"))).toContain("WebSub is out of scope there");
        expect(lines.find((l) => l.startsWith("PORT"))).toContain('"http" is not a port');
      } finally {
        await server.kill();
      }
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

describe("workerd: client disconnect, through the lifecycle helper", () => {
  test.concurrent(
    "a client that resets mid-response produces one request_aborted within 100 ms",
    withWorker(async (server) => {
      const client = await connect(server.port);
      try {
        client.write(get("/slow?ms=5000"));
        await client.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk");
        const leftAt = Date.now();
        client.reset();
        const aborted = await server.waitForEvent("request_aborted", 2_000);
        expectBetween(Date.parse(aborted.time) - leftAt, -EARLY_MS, ABORT_NOTICE_MS);
        expect(aborted.path).toBe("/slow");
        expect((await server.waitForEvent("slow_request", 1_000)).outcome).toBe("aborted");
        expect(server.named("request_aborted")).toHaveLength(1);
      } finally {
        client.destroy();
      }
    }),
    30_000,
  );

  test.concurrent(
    "a client that resets while a handler works produces one request_aborted within 100 ms",
    withWorker(async (server, defer) => {
      const client = await open(server.port, defer);
      client.write(get("/delay?ms=3000"));
      await expect(client.waitForClose(300)).rejects.toThrow("still open");
      const leftAt = Date.now();
      client.reset();
      const aborted = await server.waitForEvent("request_aborted", 2_000);
      expect(aborted.path).toBe("/delay");
      expectBetween(Date.parse(aborted.time) - leftAt, -EARLY_MS, ABORT_NOTICE_MS);
      expect(server.named("request_aborted")).toHaveLength(1);
    }),
    30_000,
  );

  test.concurrent(
    "a client that closes mid-stream is noticed at the worker's next write, declared as workerd's precision",
    withWorker(async (server) => {
      const INTERVAL_MS = 1_000;
      const client = await connect(server.port);
      try {
        client.write(get(`/stream?chunks=20&interval=${INTERVAL_MS}`));
        const secondAt = await client.waitFor((d) => d.includes("chunk 2 of 20"), 3_000, "the second chunk");
        client.destroy();
        const aborted = await server.waitForEvent("request_aborted", INTERVAL_MS + 2_000);
        // Not when it left: when the third chunk is written, an interval after the second.
        expectBetween(Date.parse(aborted.time) - secondAt, INTERVAL_MS - EARLY_MS, INTERVAL_MS + abortAfterNextWriteMs);
        const stream = await server.waitForEvent("stream_request", 1_000);
        expect(stream).toMatchObject({ outcome: "aborted", sent: 3 });
      } finally {
        client.destroy();
      }
    }),
    30_000,
  );

  test.concurrent(
    "a client that closes while the worker has nothing to write is not noticed, as declared: not by a handler at work, nor before a body's end",
    withWorker(async (server, defer) => {
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
    "completed responses are never reported as aborted",
    withWorker(async (server, defer) => {
      const client = await open(server.port, defer);
      const paths = ["/slow?ms=200", "/", "/healthz", "/stream?chunks=2&interval=50", "/delay?ms=50"];
      for (const [i, path] of paths.entries()) {
        client.write(get(path));
        await client.waitFor((d) => completeResponses(d) === i + 1, 3_000, `the response to ${path}`);
      }
      expect((await server.waitForEvent("slow_request", 1_000)).outcome).toBe("finished");
      expect((await server.waitForEvent("stream_request", 1_000)).outcome).toBe("finished");
      client.reset();
      // An absence can only be shown by waiting: give a late abort 500 ms to show up.
      await Bun.sleep(500);
      expect(server.named("request_aborted")).toEqual([]);
    }),
    30_000,
  );
});

describe("workerd: what the platform owns, as declared and measured", () => {
  test.concurrent(
    "an idle keep-alive connection is closed by workerd after its own 15 s, and no Keep-Alive header tells the client",
    withWorker(async (server, defer) => {
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
    withWorker(async (server, defer) => {
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
    withWorker(async (server, defer) => {
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
    "work is not idleness: a handler, and a stream's gap, longer than workerd's 15 s complete",
    withWorker(async (server, defer) => {
      const ms = idleCloseMs.max + 500;
      const handler = await open(server.port, defer);
      const stream = await open(server.port, defer);
      handler.write(get(`/delay?ms=${ms}`));
      stream.write(get(`/stream?chunks=2&interval=${ms}`));
      await handler.waitFor((d) => completeResponses(d) === 1, ms + 2_000, "the delayed response");
      expect(handler.data).toContain(`{"delayedMs":${ms}}`);
      await stream.waitFor((d) => completeResponses(d) === 1, ms + 2_000, "the whole stream");
      expect((await server.waitForEvent("stream_request", 1_000)).outcome).toBe("finished");
    }),
    30_000,
  );

  test.concurrent(
    "SIGTERM to npm run start:workerd: workerd closes idle connections at once, finishes the in-flight request and exits 0",
    withWorker(async (server, defer) => {
      const idle = await open(server.port, defer);
      idle.write(get("/"));
      await idle.waitFor((d) => completeResponses(d) === 1, 2_000, "a response");
      const busy = await open(server.port, defer);
      busy.write(get("/slow?ms=1500"));
      await busy.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk");
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
    withWorker(async (server, defer) => {
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

describe("workerd: your app", () => {
  // Issue #18 on workerd: test/_plain_app.ts, a plain Hono app that calls none of the template's
  // helpers, bundled and served as a user's app module is. The body limit and the thrown error are
  // checked as on the other runtimes. What the platform does not allow: a client that leaves is
  // noticed only at the worker's next write, not within 100 ms of leaving (abortAfterNextWriteMs;
  // /sse?interval=50 writes every 50 ms), and there is no /metrics to count it on.

  test.concurrent(
    "a body over BODY_LIMIT is answered 413 JSON: with a Content-Length before any handler reads it, chunked however the handler reads it",
    withWorker(
      async (server, defer) => {
        await declaredOverLimitRefused(server, defer);
        await chunkedOverLimitCut(server, defer);
      },
      { BODY_LIMIT: "1kb" },
      PLAIN_APP,
    ),
    30_000,
  );

  test.concurrent(
    "a body under BODY_LIMIT is read whole, with a Content-Length or chunked, however the handler reads it",
    withWorker(
      underLimitRead,
      { BODY_LIMIT: "1kb" },
      PLAIN_APP,
    ),
    30_000,
  );

  test.concurrent(
    "a client that leaves the app's own SSE stream produces one request_aborted at the worker's next write",
    withWorker(
      async (server, defer) => {
        const INTERVAL_MS = 50;
        const client = await open(server.port, defer);
        client.write(get(`/sse?interval=${INTERVAL_MS}`));
        await client.waitFor((d) => d.includes("data: tick"), 2_000, "the first event");
        const leftAt = Date.now();
        client.destroy();
        const aborted = await server.waitForEvent("request_aborted", 2_000);
        // Not when it left: at the next event written after it, at most an interval later.
        expectBetween(Date.parse(aborted.time) - leftAt, 0, INTERVAL_MS + abortAfterNextWriteMs);
        expect(aborted.path).toBe("/sse");
        expect(server.named("request_aborted")).toHaveLength(1);
      },
      {},
      PLAIN_APP,
    ),
    30_000,
  );

  test.concurrent(
    "an error thrown by the app is answered 500 JSON with nothing of it, and logged once as handler_error with its stack",
    withWorker(
      (server) => thrownErrorAnswered(server, "/throw", "boom: secret detail"),
      {},
      PLAIN_APP,
    ),
    30_000,
  );
});

describe("workerd: Node's built-ins, imported with the node: prefix", () => {
  // Self-contained: scratch app modules in a temp dir, served through `npm run start:workerd` as a
  // user runs it. What works on workerd and why: docs/runtimes.md#workerds-nodejs-built-ins.

  /** Writes `files` (name to source) into a fresh temp dir removed when the test ends; returns the dir. */
  async function scratch(defer: (cleanup: () => unknown) => void, files: Record<string, string>): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), "hono-workerd-node-"));
    defer(() => rmSync(dir, { recursive: true, force: true }));
    for (const [name, source] of Object.entries(files)) await Bun.write(join(dir, name), source);
    return dir;
  }

  function spawnApp(app: string, env: Record<string, string> = {}): ServerProcess {
    const cmd = ["npm", "run", "start:workerd", "--silent", "--", app];
    return new ServerProcess(cmd, { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env } as Record<string, string>);
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
        const server = await startListening(() => spawnApp(join(dir, "app.ts"), { BODY_LIMIT: "64kb" }));
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
        const server = await startListening(() => spawnApp(join(dir, "app.ts")));
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
        const server = spawnApp(join(dir, "app.ts"));
        defer(() => server.kill());
        expect(await server.exitCode()).toBe(1);
        expect(server.named("listening")).toEqual([]);
        expect(server.stderr).toContain("Cannot bundle the worker: ");
        expect(server.stderr).toContain('Import Node\'s built-ins with the node: prefix (import process from "node:process")');
      }),
    30_000,
  );
});
