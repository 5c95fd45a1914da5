import { describe, expect, test } from "bun:test";
import { Hono } from "hono";
import { operationalRoutes, withRoutes } from "../../src/policy/routes.ts";
import { requestLifecycle, withLifecycle } from "../../src/policy/lifecycle.ts";
import { createLogger } from "../../src/policy/log.ts";
import { createRegistry, METRICS_CONTENT_TYPE, metricsAnswer } from "../../src/policy/metrics.ts";
import { countEvents, POLICY_EVENTS, requestMetrics } from "../../src/policy/telemetry.ts";

describe("logger (src/policy/log.ts)", () => {
  test("writes one JSON object per line with time, level and event", () => {
    const lines: string[] = [];
    createLogger((line) => lines.push(line), { runtime: "x" }).info("listening", { port: 1 });
    expect(lines).toHaveLength(1);
    const parsed = JSON.parse(lines[0]!);
    expect(parsed).toMatchObject({ level: "info", event: "listening", runtime: "x", port: 1 });
    expect(Number.isNaN(Date.parse(parsed.time))).toBe(false);
  });
});

describe("telemetry (src/policy/telemetry.ts)", () => {
  test("the policy's events count on the metrics they name, from 0, and still reach the log", async () => {
    const registry = createRegistry();
    const lines: string[] = [];
    const logger = countEvents(createLogger((line) => lines.push(line)), registry, POLICY_EVENTS);
    expect(await registry.render()).toContain("\nconnections_idle_closed_total 0\n");
    logger.info("idle_timeout", { remoteAddress: "127.0.0.1", remotePort: 1 });
    logger.info("idle_timeout", { remoteAddress: "127.0.0.1", remotePort: 2 });
    logger.info("headers_timeout", {});
    logger.info("not_counted", {});
    const text = await registry.render();
    expect(text).toContain("\nconnections_idle_closed_total 2\n");
    expect(text).toContain('connections_deadline_closed_total{deadline="headers"} 1');
    expect(text).toContain('connections_deadline_closed_total{deadline="request"} 0');
    expect(lines.map((line) => JSON.parse(line).event)).toEqual(["idle_timeout", "idle_timeout", "headers_timeout", "not_counted"]);
  });

  test("requests are counted by status class and responses by outcome", async () => {
    const registry = createRegistry();
    const logger = createLogger(() => {});
    const app = new Hono()
      .get("/", (c) => c.text("ok"))
      .get("/slow", (c) => {
        requestLifecycle(c); // a body that ends when the client leaves
        return c.body(new ReadableStream({ start: (controller) => controller.enqueue(new Uint8Array([1])) }));
      });
    const fetch = withLifecycle(app.fetch, { logger, ...requestMetrics(registry) });
    await (await fetch(new Request("http://localhost/"))).text();
    await (await fetch(new Request("http://localhost/nope"))).text();
    const controller = new AbortController();
    const res = await fetch(new Request("http://localhost/slow", { signal: controller.signal }));
    await res.body!.getReader().read();
    controller.abort();
    const text = await registry.render();
    expect(text).toContain('http_requests_total{class="2xx"} 2');
    expect(text).toContain('http_requests_total{class="4xx"} 1');
    expect(text).toContain('http_responses_total{outcome="finished"} 2');
    expect(text).toContain('http_responses_total{outcome="aborted"} 1');
  });
});

describe("routes in front of the app (src/policy/routes.ts)", () => {
  const app = (request: Request) => new Response(`app ${new URL(request.url).pathname}`);
  const fetch = withRoutes(app, [
    ["/exact", () => new Response("exact")],
    ["/tree/", () => new Response("tree")],
  ]);
  const text = async (url: string) => await (await fetch(new Request(url))).text();

  test("an exact path, and every path under a prefix ending in /, go to their own handler", async () => {
    expect(await text("http://h/exact")).toBe("exact");
    expect(await text("http://h/exact?x=1")).toBe("exact");
    expect(await text("http://h/tree/a/b")).toBe("tree");
  });

  test("everything else reaches the app unchanged", async () => {
    expect(await text("http://h/exact/more")).toBe("app /exact/more");
    expect(await text("http://h/exactly")).toBe("app /exactly");
    expect(await text("http://h/tree")).toBe("app /tree");
    expect(await text("http://h/")).toBe("app /");
  });

  test("/healthz answers ok and /metrics the registry, to GET only", async () => {
    const registry = createRegistry();
    registry.counter("things_total", "Things.").inc();
    const ops = withRoutes(app, operationalRoutes(() => true, metricsAnswer(registry)));
    const health = await ops(new Request("http://h/healthz"));
    expect(await health.json()).toEqual({ status: "ok" });
    const metrics = await ops(new Request("http://h/metrics"));
    expect(metrics.headers.get("content-type")).toBe(METRICS_CONTENT_TYPE);
    expect(await metrics.text()).toBe(await registry.render());
    const post = await ops(new Request("http://h/metrics", { method: "POST" }));
    expect(post.status).toBe(405);
    expect((await post.json()).error).toBe("method_not_allowed");
  });

  test("/readyz answers 200 while ready and 503 once not, while /healthz stays 200", async () => {
    let ready = true;
    const ops = withRoutes(app, operationalRoutes(() => ready, metricsAnswer(createRegistry())));
    const readyz = await ops(new Request("http://h/readyz"));
    expect(readyz.status).toBe(200);
    expect(readyz.headers.get("content-type")).toStartWith("application/json");
    expect(await readyz.json()).toEqual({ status: "ready" });
    expect((await ops(new Request("http://h/readyz", { method: "HEAD" }))).status).toBe(200);

    ready = false;
    const draining = await ops(new Request("http://h/readyz"));
    expect(draining.status).toBe(503);
    expect(draining.headers.get("connection")).toBeNull();
    expect(await draining.json()).toEqual({ status: "draining" });
    const health = await ops(new Request("http://h/healthz"));
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });
    expect((await ops(new Request("http://h/readyz", { method: "POST" }))).status).toBe(405);
  });
});
