/**
 * What the template feeds prom-client (src/policy/metrics.ts): names, labels and values through
 * the facade, bound series, scrape-time families, and how each family is to be combined across
 * workers. The exposition format itself is prom-client's, and tested there.
 */
import { describe, expect, test } from "bun:test";
import { collectDefaultMetrics, Gauge, Histogram, Registry as PromRegistry } from "prom-client";
import { registerProcessMetrics } from "../../adapters/_process_metrics.ts";
import { metric } from "../../harness/http.ts";
import { createRegistry, METRICS_CONTENT_TYPE, metricsAnswer } from "../../src/policy/metrics.ts";

/** The sample lines of an exposition, without HELP, TYPE and blank lines. */
async function samples(render: Promise<string>): Promise<string[]> {
  return (await render).split("\n").filter((line) => line !== "" && !line.startsWith("#"));
}

describe("counters", () => {
  test("inc adds `by`, defaulting to 1, and accepts 0; get reads what a scrape would", async () => {
    const c = createRegistry().counter("c_total", "c");
    c.inc();
    c.inc(undefined, 4);
    c.inc({}, 0);
    expect(await c.get()).toBe(5);
  });

  test("labels() binds one series once: it shows at 0 at once, counts with inc(), and checks its labels and `by` like inc", async () => {
    const r = createRegistry();
    const c = r.counter("req_total", "r", ["class"]);
    const ok = c.labels({ class: "2xx" });
    expect(await samples(r.render())).toEqual(['req_total{class="2xx"} 0']);
    ok.inc();
    ok.inc(2);
    c.inc({ class: "2xx" });
    expect(await c.get({ class: "2xx" })).toBe(4);
    expect(metric(await r.render(), 'req_total{class="2xx"}')).toBe(4);
    // What a bound series counted reaches prom-client once, at the scrape that reads it.
    ok.inc();
    expect(metric(await r.render(), 'req_total{class="2xx"}')).toBe(5);
    expect(metric(await r.render(), 'req_total{class="2xx"}')).toBe(5);
    expect(() => ok.inc(-1)).toThrow("counters only go up");
    expect(() => c.labels({ status: "200" })).toThrow('label "status" was not declared');
  });

  test("two bindings of the same series add up", async () => {
    const r = createRegistry();
    const c = r.counter("x_total", "x", ["k"]);
    c.labels({ k: "a" }).inc(2);
    c.labels({ k: "a" }).inc(3);
    expect(await samples(r.render())).toEqual(['x_total{k="a"} 5']);
  });

  test("an unlabelled counter shows 0 before any update; a labelled one shows only the combinations used, in first-use order", async () => {
    const r = createRegistry();
    r.counter("c_total", "c");
    const hits = r.counter("hits_total", "h", ["route"]);
    expect(await samples(r.render())).toEqual(["c_total 0"]);
    hits.inc({ route: "/b" });
    hits.inc({ route: "/a" });
    hits.inc({ route: "/b" });
    expect(await samples(r.render())).toEqual(["c_total 0", 'hits_total{route="/b"} 2', 'hits_total{route="/a"} 1']);
  });

  test("labels print in declared order whatever order the keys were passed in", async () => {
    const r = createRegistry();
    const c = r.counter("req_total", "r", ["method", "status"]);
    c.inc({ status: "200", method: "GET" });
    c.labels({ status: "200", method: "GET" }).inc();
    expect(await samples(r.render())).toEqual(['req_total{method="GET",status="200"} 2']);
  });

  test("a counter refuses a negative or NaN increment and keeps its value", async () => {
    const c = createRegistry().counter("c_total", "c");
    c.inc(undefined, 2);
    expect(() => c.inc(undefined, -1)).toThrow("c_total: inc(-1) would lower a counter");
    expect(() => c.inc(undefined, NaN)).toThrow("counters only go up");
    expect(await c.get()).toBe(2);
  });
});

describe("gauges", () => {
  test("set, inc and dec; get reads back, 0 for an unused combination", async () => {
    const g = createRegistry().gauge("g", "g", ["k"]);
    g.set(5, { k: "a" });
    g.inc({ k: "a" });
    g.inc({ k: "a" }, 2.5);
    g.dec({ k: "a" }, 0.5);
    g.dec({ k: "b" });
    expect(await g.get({ k: "a" })).toBe(8);
    expect(await g.get({ k: "b" })).toBe(-1);
    expect(await g.get({ k: "never" })).toBe(0);
  });

  test("families render in registration order, gauges, counters and collected alike", async () => {
    const r = createRegistry();
    r.gauge("b", "b");
    r.collect("a", "a", "gauge", () => [{ value: 1 }]);
    r.counter("c_total", "c");
    const names = (await r.render()).split("\n").filter((l) => l.startsWith("# TYPE")).map((l) => l.split(" ")[2]);
    expect(names).toEqual(["b", "a", "c_total"]);
  });
});

describe("collect", () => {
  test("samples are read at each scrape, with the labels read() gives", async () => {
    const r = createRegistry();
    let fds = 10;
    r.collect("open_things", "Open things.", "gauge", () => [{ value: fds }]);
    r.collect("things_total", "Things by kind.", "counter", () => [{ labels: { kind: 'a"b' }, value: fds * 2 }]);
    expect(await samples(r.render())).toEqual(["open_things 10", 'things_total{kind="a\\"b"} 20']);
    fds = 12;
    expect(await samples(r.render())).toEqual(["open_things 12", 'things_total{kind="a\\"b"} 24']);
  });

  test("a family whose read() returns [] has no sample", async () => {
    const r = createRegistry();
    r.gauge("before", "b");
    r.collect("absent", "x", "gauge", () => []);
    expect(await samples(r.render())).toEqual(["before 0"]);
  });

  test("collected label names are checked at the scrape", async () => {
    const r = createRegistry();
    r.collect("info", "i", "gauge", () => [{ labels: { "bad-name": "x" }, value: 1 }]);
    await expect(r.render()).rejects.toThrow('info: label name "bad-name" is not valid');
  });
});

describe("validation", () => {
  test("metric names must match the Prometheus name pattern", () => {
    const r = createRegistry();
    for (const bad of ["", "1abc", "a-b", "a b", "é"]) {
      expect(() => r.gauge(bad, "x")).toThrow(`Metric name "${bad}" is not valid`);
      expect(() => r.collect(bad, "x", "gauge", () => [])).toThrow("is not valid");
    }
    expect(() => r.gauge("ns:sub_name:x", "x")).not.toThrow();
  });

  test("counter names must end in _total, including collected counters", () => {
    const r = createRegistry();
    expect(() => r.counter("requests", "x")).toThrow('Counter "requests" must end in _total');
    expect(() => r.counter("a-b_total", "x")).toThrow("is not valid");
    expect(() => r.collect("cpu_seconds", "x", "counter", () => [])).toThrow("must end in _total");
    expect(() => r.counter("requests_total", "x")).not.toThrow();
  });

  test("label names must match the pattern and not start with __, and not repeat", () => {
    const r = createRegistry();
    for (const bad of ["1a", "a-b", "__name", "a:b", ""]) {
      expect(() => r.counter("x_total", "x", [bad])).toThrow(`x_total: label name "${bad}" is not valid`);
    }
    expect(() => r.counter("x_total", "x", ["_ok", "a1"])).not.toThrow();
    expect(() => r.gauge("g", "g", ["a", "a"])).toThrow('g: label names ["a","a"] repeat a name');
  });

  test("registering a family name twice throws, across kinds and against prom-client's own metrics", () => {
    const r = createRegistry();
    r.counter("dup_total", "x");
    expect(() => r.counter("dup_total", "x")).toThrow('Metric "dup_total" is registered twice');
    expect(() => r.collect("dup_total", "x", "counter", () => [])).toThrow("registered twice");
    new Histogram({ name: "h_seconds", help: "h", registers: [r.prom] });
    expect(() => r.gauge("h_seconds", "x")).toThrow("registered twice");
  });

  test("an undeclared label or a missing declared label throws, for updates and reads, and changes nothing", async () => {
    const r = createRegistry();
    const c = r.counter("c_total", "c", ["a", "b"]);
    expect(() => c.inc({ a: "1", b: "2", z: "3" })).toThrow('c_total: label "z" was not declared: declared are ["a","b"]');
    expect(() => c.inc({ a: "1" })).toThrow('c_total: label "b" is missing');
    expect(() => c.inc()).toThrow('label "a" is missing');
    expect(() => c.get({ a: "1" })).toThrow('label "b" is missing');
    const g = r.gauge("g", "g");
    expect(() => g.set(1, { a: "1" })).toThrow('label "a" was not declared');
    expect(await samples(r.render())).toEqual(["g 0"]);
  });
});

describe("prom-client behind the facade", () => {
  test("render() is prom-client's exposition of registry.prom, in its content type", async () => {
    const r = createRegistry();
    r.counter("jobs_total", "Jobs run.").inc();
    expect(await r.render()).toBe(await r.prom.metrics());
    expect(METRICS_CONTENT_TYPE).toBe(r.prom.contentType);
    expect(METRICS_CONTENT_TYPE).toBe("text/plain; version=0.0.4; charset=utf-8");
  });

  test("a prom-client metric registered on registry.prom is served with the rest; a registry of the user's own can back the facade", async () => {
    const own = new PromRegistry();
    const r = createRegistry(own);
    const h = new Histogram({ name: "db_query_seconds", help: "Query time.", buckets: [0.1, 1], registers: [r.prom] });
    h.observe(0.5);
    r.counter("jobs_total", "Jobs run.").inc();
    expect(r.prom).toBe(own);
    const text = await own.metrics();
    expect(metric(text, 'db_query_seconds_bucket{le="1"}')).toBe(1);
    expect(metric(text, "jobs_total")).toBe(1);
  });
});

describe("the /metrics answer and its warm-up", () => {
  /** A registry whose one family logs each collection, the first held until `release()`. */
  function heldRegistry() {
    const registry = createRegistry();
    const log: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let collections = 0;
    new Gauge({
      name: "slow",
      help: "Held on its first collection.",
      registers: [registry.prom],
      async collect() {
        const n = ++collections;
        log.push(`start ${n}`);
        if (n === 1) await held;
        log.push(`end ${n}`);
      },
    });
    return { registry, log, release };
  }

  test("a scrape that arrives while the warm-up renders waits for it, then renders on its own", async () => {
    const { registry, log, release } = heldRegistry();
    const answer = metricsAnswer(registry);
    const warming = answer.warmUp();
    const scrape = answer();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(log).toEqual(["start 1"]);
    release();
    const response = await scrape;
    await warming;
    expect(log).toEqual(["start 1", "end 1", "start 2", "end 2"]);
    expect(response.headers.get("content-type")).toBe(METRICS_CONTENT_TYPE);
    expect(metric(await response.text(), "slow")).toBe(0);
  });

  test("the warm-up renders the registry, not the exposition (with WORKERS that asks the other workers), and once at a time", async () => {
    const { registry, log, release } = heldRegistry();
    let expositions = 0;
    const answer = metricsAnswer(registry, () => `exposition ${++expositions}`);
    const first = answer.warmUp();
    expect(answer.warmUp()).toBe(first);
    release();
    await first;
    expect(log).toEqual(["start 1", "end 1"]);
    expect(expositions).toBe(0);
    expect(await (await answer()).text()).toBe("exposition 1");
  });

  test("a warm-up whose render fails leaves the next scrape to answer as it would", async () => {
    const registry = createRegistry();
    registry.collect("broken", "Throws when read.", "gauge", () => {
      throw new Error("cannot read");
    });
    const answer = metricsAnswer(registry);
    await answer.warmUp();
    await expect(answer()).rejects.toThrow("cannot read");
  });
});

describe("json(): each family with how workers combine it", () => {
  test("counters are summed, gauges kept per worker unless told otherwise, prom-client's own metrics as their aggregator or aggregate() says", async () => {
    const r = createRegistry();
    r.counter("c_total", "c").inc();
    r.gauge("g", "g");
    r.gauge("lag_seconds", "l", [], { aggregation: "max" });
    r.collect("open", "o", "gauge", () => [{ value: 1 }]);
    r.collect("done_total", "d", "counter", () => [{ value: 1 }]);
    r.collect("one", "o", "gauge", () => [{ value: 1 }], { aggregation: "sum" });
    new Histogram({ name: "h_seconds", help: "h", registers: [r.prom] });
    new Histogram({ name: "h2_seconds", help: "h", registers: [r.prom], aggregator: "first" });
    r.aggregate("h_seconds", "worker");
    const families = await r.json();
    expect(families.map((f) => [f.name, f.type, f.aggregator])).toEqual([
      ["c_total", "counter", "sum"],
      ["g", "gauge", "worker"],
      ["lag_seconds", "gauge", "max"],
      ["open", "gauge", "worker"],
      ["done_total", "counter", "sum"],
      ["one", "gauge", "sum"],
      ["h_seconds", "histogram", "worker"],
      ["h2_seconds", "histogram", "first"],
    ]);
    expect(families[0]!.values).toEqual([{ value: 1, labels: {} }]);
    expect(() => r.aggregate("nothing", "sum")).toThrow('Metric "nothing" is not registered');
  });

  test("the default metrics: counters and the GC histogram summed, the version from the first worker, every other gauge per worker", async () => {
    const r = createRegistry();
    r.counter("http_requests_total", "Requests.");
    registerProcessMetrics(r, "node");
    const aggregation = Object.fromEntries((await r.json()).map((f) => [f.name, f.aggregator]));
    expect(aggregation).toMatchObject({
      http_requests_total: "sum",
      process_cpu_seconds_total: "sum",
      nodejs_gc_duration_seconds: "sum",
      nodejs_version_info: "first",
      process_start_time_seconds: "worker",
      process_resident_memory_bytes: "worker",
      process_open_fds: "worker",
      process_max_fds: "worker",
      nodejs_eventloop_lag_p99_seconds: "worker",
      nodejs_heap_space_size_used_bytes: "worker",
    });
  });

  test("a registry that has the default metrics already keeps them as they are", async () => {
    const own = new PromRegistry();
    collectDefaultMetrics({ register: own });
    const r = createRegistry(own);
    expect(() => registerProcessMetrics(r, "bun")).not.toThrow();
    const families = await r.json();
    expect(families.find((f) => f.name === "process_open_fds")?.aggregator).toBe("sum");
    expect(families.some((f) => f.name === "nodejs_heap_space_size_used_bytes")).toBe(true);
  });

  test("on Bun the heap-space families are left out, the rest is there", async () => {
    const r = createRegistry();
    registerProcessMetrics(r, "bun");
    const names = (await r.json()).map((f) => f.name);
    expect(names.filter((n) => n.startsWith("nodejs_heap_space_"))).toEqual([]);
    expect(names).toContain("nodejs_heap_size_used_bytes");
    expect(names).toContain("process_cpu_seconds_total");
  });
});
