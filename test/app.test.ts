import { describe, expect, test } from "bun:test";
import createApp from "../src/app.ts";
import { withLifecycle } from "../src/policy/lifecycle.ts";
import { createLogger } from "../src/policy/log.ts";

/**
 * The example app with a logger that records, and its fetch wrapped in the lifecycle as serve()
 * wraps it, so app.request() runs it the way a server does, without one.
 */
function setup(bodyLimitBytes = 1_048_576) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger((line) => lines.push(JSON.parse(line)), { runtime: "test" });
  const app = createApp({ logger, bodyLimitBytes });
  app.fetch = withLifecycle(app.fetch, { logger });
  return { app, lines, named: (event: string) => lines.filter((l) => l.event === event) };
}

describe("routes", () => {
  test("GET / says Hello World", async () => {
    const res = await setup().app.request("/");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("Hello World");
  });

  test("unknown routes answer 404 with a JSON error", async () => {
    const res = await setup().app.request("/nope");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: "not_found", message: "No route for GET /nope" });
  });

  test("GET /slow sends Hello World at once and finishes ms later", async () => {
    const { app, named } = setup();
    const started = Date.now();
    const res = await app.request("/slow?ms=300");
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe("Hello World");
    expect(Date.now() - started).toBeLessThan(200);
    expect((await reader.read()).done).toBe(true);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(1_000);
    expect(named("slow_request")).toMatchObject([{ ms: 300, outcome: "finished" }]);
    expect(named("request_aborted")).toEqual([]);
  });

  test("GET /slow logs aborted when the client cancels the body first", async () => {
    const { app, named } = setup();
    const res = await app.request("/slow?ms=5000");
    const reader = res.body!.getReader();
    await reader.read();
    const cancelledAt = Date.now();
    await reader.cancel();
    await Promise.resolve();
    expect(named("slow_request")).toMatchObject([{ ms: 5000, outcome: "aborted" }]);
    expect(named("request_aborted")).toMatchObject([{ path: "/slow" }]);
    expect(Date.now() - cancelledAt).toBeLessThan(100);
  });

  test("GET /slow logs aborted when the request signal aborts", async () => {
    const { app, named } = setup();
    const controller = new AbortController();
    const res = await app.request(new Request("http://localhost/slow?ms=5000", { signal: controller.signal }));
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    expect(named("slow_request")).toHaveLength(0);
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(named("slow_request")).toMatchObject([{ outcome: "aborted" }]);
    expect(named("request_aborted")).toHaveLength(1);
  });

  test("a request signal that aborts after the response finished is not an abort", async () => {
    const { app, named } = setup();
    const controller = new AbortController();
    const res = await app.request(new Request("http://localhost/slow?ms=0", { signal: controller.signal }));
    expect(await res.text()).toBe("Hello World");
    controller.abort();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(named("slow_request")).toMatchObject([{ outcome: "finished" }]);
    expect(named("request_aborted")).toEqual([]);
  });

  test("GET /stream sends N lines and logs finished", async () => {
    const { app, named } = setup();
    const res = await app.request("/stream?chunks=3&interval=10");
    expect(await res.text()).toBe("chunk 1 of 3\nchunk 2 of 3\nchunk 3 of 3\n");
    expect(named("stream_request")).toMatchObject([{ chunks: 3, sent: 3, outcome: "finished" }]);
  });

  test("GET /stream stops producing as soon as the client leaves", async () => {
    const { app, named } = setup();
    const res = await app.request("/stream?chunks=100&interval=20");
    const reader = res.body!.getReader();
    await reader.read();
    await reader.read();
    await reader.cancel();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(named("stream_request")).toMatchObject([{ chunks: 100, sent: 2, outcome: "aborted" }]);
  });

  test("POST /echo answers the body size", async () => {
    const res = await setup().app.request("/echo", { method: "POST", body: "0123456789" });
    expect(await res.json()).toEqual({ bytes: 10 });
  });
});

describe("invalid query parameters answer 400 with a JSON error naming the parameter", () => {
  const cases: Array<[string, string]> = [
    ["/slow?ms=abc", "ms"],
    ["/slow?ms=-1", "ms"],
    ["/slow?ms=1.5", "ms"],
    ["/slow?ms=600001", "ms"],
    ["/stream?chunks=0", "chunks"],
    ["/stream?chunks=10001", "chunks"],
    ["/stream?interval=60001", "interval"],
    ["/stream?interval=", "interval"],
  ];
  for (const [path, parameter] of cases) {
    test(path, async () => {
      const res = await setup().app.request(path);
      expect(res.status).toBe(400);
      expect(res.headers.get("content-type")).toContain("application/json");
      const body = (await res.json()) as { error: string; message: string; issues: Array<{ parameter: string }> };
      expect(body.error).toBe("invalid_query");
      expect(body.issues.map((i) => i.parameter)).toEqual([parameter]);
      expect(body.message).toContain(`${parameter} must be an integer from`);
    });
  }

  test("the boundaries are accepted", async () => {
    const { app } = setup();
    expect((await app.request("/slow?ms=0")).status).toBe(200);
    expect((await app.request("/stream?chunks=1&interval=0")).status).toBe(200);
  });
});

describe("BODY_LIMIT", () => {
  test("POST /echo answers 413 with a JSON error past BODY_LIMIT", async () => {
    const { app } = setup(8);
    const ok = await app.request("/echo", { method: "POST", body: "12345678" });
    expect(await ok.json()).toEqual({ bytes: 8 });
    const tooLarge = await app.request("/echo", { method: "POST", body: "123456789" });
    expect(tooLarge.status).toBe(413);
    expect(await tooLarge.json()).toEqual({ error: "payload_too_large", message: "The request body is larger than the limit of 8 bytes" });
  });
});

describe("errors", () => {
  test("a failing handler answers 500 JSON and is logged", async () => {
    const { app, named } = setup();
    app.get("/boom", () => {
      throw new Error("kaput");
    });
    const res = await app.request("/boom");
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: "internal_error", message: "The server failed to handle this request" });
    expect(named("handler_error")).toMatchObject([{ path: "/boom", error: { message: "kaput" } }]);
  });
});
