import { describe, expect, test } from "bun:test";
import { createApp } from "../src/app.ts";
import { createLogger } from "../src/log.ts";
import { createTelemetry } from "../src/telemetry.ts";

function setup() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger((line) => lines.push(JSON.parse(line)), { runtime: "test" });
  return { app: createApp({ logger }), lines, named: (event: string) => lines.filter((l) => l.event === event) };
}

describe("routes", () => {
  test("GET / says Hello World", async () => {
    const res = await setup().app.request("/");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("Hello World");
  });

  test("GET /healthz answers 200 {status: ok}", async () => {
    const res = await setup().app.request("/healthz");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
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

  test("GET /delay answers after ms", async () => {
    const started = Date.now();
    const res = await setup().app.request("/delay?ms=100");
    expect(await res.json()).toEqual({ delayedMs: 100 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(95);
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
    ["/delay?ms=x", "ms"],
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

describe("metrics", () => {
  function withMetrics(bodyLimitBytes?: number) {
    const lines: Array<Record<string, unknown>> = [];
    const { logger, registry } = createTelemetry((line) => lines.push(JSON.parse(line)));
    return { app: createApp({ logger, registry, bodyLimitBytes }), logger, lines };
  }

  test("GET /metrics is a Prometheus text exposition", async () => {
    const res = await withMetrics().app.request("/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    expect(text).toContain("# TYPE http_responses_total counter");
    expect(text).toContain('http_responses_total{outcome="aborted"} 0');
    expect(text).toContain("connections_idle_closed_total 0");
  });

  test("requests are counted by status class and responses by outcome", async () => {
    const { app } = withMetrics();
    await app.request("/");
    await app.request("/nope");
    const controller = new AbortController();
    const res = await app.request(new Request("http://localhost/slow?ms=5000", { signal: controller.signal }));
    await res.body!.getReader().read();
    controller.abort();
    const text = await (await app.request("/metrics")).text();
    expect(text).toContain('http_requests_total{class="2xx"} 2');
    expect(text).toContain('http_requests_total{class="4xx"} 1');
    expect(text).toContain('http_responses_total{outcome="finished"} 2');
    expect(text).toContain('http_responses_total{outcome="aborted"} 1');
  });

  test("events count on the metrics they name", async () => {
    const { app, logger } = withMetrics();
    logger.info("idle_timeout", { remoteAddress: "127.0.0.1", remotePort: 1 });
    logger.info("idle_timeout", { remoteAddress: "127.0.0.1", remotePort: 2 });
    logger.info("headers_timeout", {});
    const text = await (await app.request("/metrics")).text();
    expect(text).toContain("connections_idle_closed_total 2");
    expect(text).toContain('connections_deadline_closed_total{deadline="headers"} 1');
    expect(text).toContain('connections_deadline_closed_total{deadline="request"} 0');
  });

  test("POST /echo answers 413 with a JSON error past BODY_LIMIT", async () => {
    const { app } = withMetrics(8);
    const ok = await app.request("/echo", { method: "POST", body: "12345678" });
    expect(await ok.json()).toEqual({ bytes: 8 });
    const tooLarge = await app.request("/echo", { method: "POST", body: "123456789" });
    expect(tooLarge.status).toBe(413);
    expect(await tooLarge.json()).toEqual({ error: "payload_too_large", message: "The request body is larger than BODY_LIMIT (8 bytes)" });
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

describe("logger", () => {
  test("writes one JSON object per line with time, level and event", () => {
    const lines: string[] = [];
    createLogger((line) => lines.push(line), { runtime: "x" }).info("listening", { port: 1 });
    expect(lines).toHaveLength(1);
    const parsed = JSON.parse(lines[0]!);
    expect(parsed).toMatchObject({ level: "info", event: "listening", runtime: "x", port: 1 });
    expect(Number.isNaN(Date.parse(parsed.time))).toBe(false);
  });
});
