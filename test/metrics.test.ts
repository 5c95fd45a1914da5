/**
 * `/metrics` on each runtime's default engine, served by prom-client: the policy's series and
 * prom-client's default metrics, with what each runtime cannot fill stated as data
 * (docs/observability.md#what-each-runtime-fills). One scrape with WORKERS=2 is in workers.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { fetchOnce, metric } from "../harness/http.ts";
import { runtimeOf, startServer } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import { serve } from "../adapters/bun/mod.ts";
import { createLogger } from "../src/policy/log.ts";
import { createRegistry, METRICS_CONTENT_TYPE } from "../src/policy/metrics.ts";
import type { Engine, Runtime } from "../src/policy/types.ts";
import { expectBetween } from "./_suite.ts";

/** What a runtime leaves out of prom-client's default metrics, or reports without a sample. */
const CANNOT: Record<Runtime, { heapSpaces: "omitted" | null; gcSamples: boolean; openConnections: boolean }> = {
  // Node fills every family.
  node: { heapSpaces: null, gcSamples: true, openConnections: true },
  // Bun's v8.getHeapSpaceStatistics() walks the heap: the adapter leaves the family out. No GC
  // performance entries; Bun.serve cannot count its connections.
  bun: { heapSpaces: "omitted", gcSamples: false, openConnections: false },
  // No GC performance entries on Deno.
  deno: { heapSpaces: null, gcSamples: false, openConnections: true },
};

/** Every family of an exposition with its sample lines. */
function families(text: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) found.set(line.split(" ")[2]!, current = []);
    else if (line !== "" && !line.startsWith("#")) current.push(line);
  }
  return found;
}

for (const engine of ["node-http", "bun-serve", "deno-per-connection"] as const satisfies readonly Engine[]) {
  const runtime = runtimeOf(engine);
  const cannot = CANNOT[runtime];

  describe(`${engine}: /metrics`, () => {
    test.concurrent(
      "serves the policy's counters and prom-client's default metrics, in prom-client's content type",
      () =>
        using(async (defer) => {
          const spawnedS = Date.now() / 1_000;
          const server = await startServer(engine, {});
          defer(() => server.kill());
          const REQUESTS = 1_000;
          // Keep-alive requests: garbage for the GC histogram, and a busy event loop for the lag one.
          for (let i = 0; i < REQUESTS; i++) expect(await (await fetch(`${server.url}/`)).text()).toBe("Hello World");
          const response = await fetchOnce(`${server.url}/metrics`);
          expect(response.headers.get("content-type")).toBe(METRICS_CONTENT_TYPE);
          const text = await response.text();
          const found = families(text);

          expect(metric(text, 'http_requests_total{class="2xx"}')).toBe(REQUESTS);
          expect(metric(text, "connections_idle_closed_total")).toBe(0);
          expect(found.has("connections_open")).toBe(cannot.openConnections);

          // Whole seconds, from the runtime's own start: after npm's, before the scrape.
          expectBetween(metric(text, "process_start_time_seconds"), Math.floor(spawnedS) - 1, Date.now() / 1_000 + 1);
          expect(metric(text, "process_cpu_seconds_total")).toBeGreaterThan(0);
          expect(metric(text, "process_resident_memory_bytes")).toBeGreaterThan(1_000_000);
          expect(metric(text, "process_open_fds")).toBeGreaterThan(2);
          expect(metric(text, "process_max_fds")).toBeGreaterThan(metric(text, "process_open_fds"));
          expect(metric(text, "nodejs_heap_size_used_bytes")).toBeGreaterThan(0);
          expect(metric(text, "nodejs_eventloop_lag_p99_seconds")).toBeGreaterThanOrEqual(0);
          expect(found.get("nodejs_version_info")).toHaveLength(1);
          for (const family of ["nodejs_active_resources_total", "nodejs_active_handles_total", "nodejs_external_memory_bytes"]) {
            expect(found.get(family), family).toHaveLength(1);
          }

          const heapSpaces = found.get("nodejs_heap_space_size_used_bytes");
          if (cannot.heapSpaces === "omitted") expect(heapSpaces).toBeUndefined();
          else expect(heapSpaces!.some((line) => line.startsWith('nodejs_heap_space_size_used_bytes{space="old"} '))).toBe(true);
          // The histogram is there everywhere; only Node reports collections into it.
          expect(found.has("nodejs_gc_duration_seconds")).toBe(true);
          expect(found.get("nodejs_gc_duration_seconds")!.length > 0).toBe(cannot.gcSamples);
        }),
      30_000,
    );
  });
}

// In this process, on Bun's engine: the warm-up is serveWith()'s (adapters/_serve.ts), the same on every engine.
test(
  "serve() renders its registry once after listening, with no scrape, so that the first scrape finds it warm",
  () =>
    using(async (defer) => {
      const registry = createRegistry();
      const lines: string[] = [];
      let read!: () => void;
      const collected = new Promise<void>((resolve) => (read = resolve));
      registry.collect("warmed", "Read at each render.", "gauge", () => {
        lines.push("collected");
        read();
        return [];
      });
      const server = await serve(() => new Response("ok"), {
        host: "127.0.0.1",
        port: 0,
        registry,
        logger: createLogger((line) => lines.push(JSON.parse(line).event)),
      });
      defer(() => server.shutdown());
      await collected;
      expect(lines.slice(0, lines.indexOf("collected") + 1)).toEqual(["listening", "collected"]);
    }),
  10_000,
);
