import { describe, expect, test } from "bun:test";
import { createServer } from "node:http";
import process from "node:process";
import { Histogram } from "prom-client";
import { metric } from "../../harness/http.ts";
import { decodeFamilies, encodeFamilies, mergeWorkers } from "../../src/main/_merge_metrics.ts";
import { startWorker, type WorkerInfo } from "../../src/main/_workers.ts";
import { createRegistry } from "../../src/policy/metrics.ts";

/** A worker's families with its own numbers, as its admin listener sends them. */
async function worker(requests: number, openFds: number, aborted: number) {
  const registry = createRegistry();
  registry.counter("http_requests_total", "Requests answered, by status class.", ["class"]).labels({ class: "2xx" }).inc(requests);
  registry.counter("http_responses_total", "Responses by outcome.", ["outcome"]).inc({ outcome: "aborted" }, aborted);
  registry.collect("process_open_fds", "Number of open file descriptors.", "gauge", () => [{ value: openFds }], { aggregation: "worker" });
  registry.gauge("limit", "A limit that is the same in every worker.", [], { aggregation: "first" }).set(openFds * 10);
  registry.gauge("queue", "Queue length.", ["name"], { aggregation: "max" }).set(openFds, { name: "a" });
  const latency = new Histogram({ name: "latency_seconds", help: "Latency.", buckets: [0.1], registers: [registry.prom] });
  latency.observe(0.05);
  return decodeFamilies(encodeFamilies(await registry.json()));
}

describe("mergeWorkers (src/main/_merge_metrics.ts)", () => {
  test("each family combined as it says: counters and histograms summed, `worker` kept per worker under a worker label, max, first", async () => {
    const merged = await mergeWorkers([
      { worker: "0", families: await worker(3, 20, 1) },
      { worker: "1", families: await worker(4, 25, 0) },
    ]).metrics();
    const lines = merged.split("\n").filter((line) => line !== "" && !line.startsWith("#"));
    expect(lines).toEqual([
      'http_requests_total{class="2xx"} 7',
      'http_responses_total{outcome="aborted"} 1',
      'process_open_fds{worker="0"} 20',
      'process_open_fds{worker="1"} 25',
      "limit 200",
      'queue{name="a"} 25',
      'latency_seconds_bucket{le="0.1"} 2',
      'latency_seconds_bucket{le="+Inf"} 2',
      "latency_seconds_sum 0.1",
      "latency_seconds_count 2",
    ]);
    expect(merged).toContain("# TYPE process_open_fds gauge\n");
    expect(merged).toContain("# HELP http_requests_total Requests answered, by status class.\n");
  });

  test("the worker label comes first; a worker that did not answer adds nothing", async () => {
    const registry = createRegistry();
    registry.gauge("queue", "Queue length.", ["name"], { aggregation: "worker" }).set(2, { name: "a" });
    const merged = await mergeWorkers([{ worker: "3", families: await registry.json() }, { worker: "4", families: [] }]).metrics();
    expect(merged).toContain('queue{worker="3",name="a"} 2\n');
    expect(merged).not.toContain('worker="4"');
  });

  test("NaN and infinities survive the JSON between workers", async () => {
    const registry = createRegistry();
    const g = registry.gauge("g", "g", ["k"], { aggregation: "worker" });
    g.set(NaN, { k: "nan" });
    g.set(Infinity, { k: "inf" });
    g.set(-Infinity, { k: "-inf" });
    g.set(0.25, { k: "x" });
    const families = decodeFamilies(encodeFamilies(await registry.json()));
    expect(families[0]!.values.map((v) => v.value)).toEqual([NaN, Infinity, -Infinity, 0.25]);
  });
});

describe("a worker's scrape of its siblings (src/main/_workers.ts)", () => {
  /**
   * A stand-in for the supervisor's control listener: keeps each worker's announcement, and records
   * each `GET /workers`, answered with `list()`.
   */
  async function supervisor(list: () => unknown) {
    const asked: string[] = [];
    const announced = new Map<number, WorkerInfo>();
    const server = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk) => (body += chunk));
      request.on("end", () => {
        if (request.url === "/listening") {
          const info = JSON.parse(body) as WorkerInfo;
          announced.set(info.index, info);
        }
        if (request.url === "/workers") asked.push(request.url);
        response.writeHead(200, { "content-type": "application/json" }).end(request.url === "/workers" ? JSON.stringify(list()) : "{}");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, asked, announced, close: () => server.close() };
  }

  /** A worker whose registry counts `requests`, announced to `control`, with what it announced. */
  async function startOne(index: number, control: Awaited<ReturnType<typeof supervisor>>, requests: number) {
    const registry = createRegistry();
    registry.counter("http_requests_total", "Requests answered.").inc(undefined, requests);
    const started = await startWorker({ index, control: control.url }, registry);
    await started.announce({ pid: process.pid, url: "http://127.0.0.1:1/", engine: "test" });
    return { ...started, info: control.announced.get(index)! };
  }

  test("asks the supervisor once while every worker answers, again after one did not, and again while one is missing", async () => {
    let list: unknown = {};
    const control = await supervisor(() => list);
    try {
      const zero = await startOne(0, control, 3);
      const one = await startOne(1, control, 4);
      // Worker 1 at an address where nothing listens, as after its restart.
      list = { count: 2, workers: [zero.info, { ...one.info, adminUrl: "http://127.0.0.1:9/" }] };
      expect(metric(await zero.metrics(), "http_requests_total")).toBe(3);
      expect(control.asked).toHaveLength(1);
      // Its new address, now that it listens again: asked again, since worker 1 did not answer.
      list = { count: 2, workers: [zero.info, one.info] };
      expect(metric(await zero.metrics(), "http_requests_total")).toBe(7);
      expect(control.asked).toHaveLength(2);
      // Every worker answered: the addresses are kept.
      expect(metric(await zero.metrics(), "http_requests_total")).toBe(7);
      expect(metric(await zero.metrics(), "http_requests_total")).toBe(7);
      expect(control.asked).toHaveLength(2);
      // A list without every worker (one still starting) is not kept.
      const fresh = await startOne(0, control, 5);
      list = { count: 2, workers: [fresh.info] };
      expect(metric(await fresh.metrics(), "http_requests_total")).toBe(5);
      expect(metric(await fresh.metrics(), "http_requests_total")).toBe(5);
      expect(control.asked).toHaveLength(4);
    } finally {
      control.close();
    }
  });
});
