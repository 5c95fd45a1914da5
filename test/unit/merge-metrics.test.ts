import { describe, expect, test } from "bun:test";
import { mergeExpositions } from "../../src/main/_merge_metrics.ts";
import { createRegistry } from "../../src/policy/metrics.ts";

/** A worker's registry with its own numbers. */
function worker(requests: number, openFds: number, aborted: number) {
  const registry = createRegistry();
  const counter = registry.counter("http_requests_total", "Requests answered, by status class.", ["class"]);
  counter.inc({ class: "2xx" }, requests);
  registry.counter("http_responses_total", "Responses by outcome.", ["outcome"]).inc({ outcome: "aborted" }, aborted);
  registry.collect("process_open_fds", "Number of open file descriptors.", "gauge", () => [{ value: openFds }]);
  return registry.render();
}

describe("mergeExpositions (src/main/_merge_metrics.ts)", () => {
  test("counters are summed across workers; gauges are kept per worker under a worker label", () => {
    const merged = mergeExpositions([{ worker: "0", text: worker(3, 20, 1) }, { worker: "1", text: worker(4, 25, 0) }]);
    expect(merged).toBe(
      [
        "# HELP http_requests_total Requests answered, by status class.",
        "# TYPE http_requests_total counter",
        'http_requests_total{class="2xx"} 7',
        "# HELP http_responses_total Responses by outcome.",
        "# TYPE http_responses_total counter",
        'http_responses_total{outcome="aborted"} 1',
        "# HELP process_open_fds Number of open file descriptors.",
        "# TYPE process_open_fds gauge",
        'process_open_fds{worker="0"} 20',
        'process_open_fds{worker="1"} 25',
        "",
      ].join("\n"),
    );
  });

  test("a gauge that has labels gets the worker label first; an empty exposition adds nothing", () => {
    const registry = createRegistry();
    registry.gauge("queue", "Queue length.", ["name"]).set(2, { name: "a" });
    const merged = mergeExpositions([{ worker: "3", text: registry.render() }, { worker: "4", text: "" }]);
    expect(merged).toContain('queue{worker="3",name="a"} 2\n');
    expect(merged).not.toContain('worker="4"');
  });
});
