import { readdirSync, readFileSync } from "node:fs";
import { collectDefaultMetrics, Gauge } from "prom-client";
import type { Registry } from "../src/policy/metrics.ts";
import type { Runtime } from "../src/policy/types.ts";

/**
 * prom-client's default metrics that Bun leaves out: its v8.getHeapSpaceStatistics() walks the whole
 * JavaScriptCore heap on every call, blocking the server for milliseconds per scrape and more as the
 * heap grows, to fill one "old" space out of V8's thirteen (docs/observability.md#what-each-runtime-fills).
 */
const BUN_OMITS = [
  "nodejs_heap_space_size_total_bytes",
  "nodejs_heap_space_size_used_bytes",
  "nodejs_heap_space_size_available_bytes",
];

/** The one default gauge every worker reports the same: the Node version the runtime reports. */
const SAME_IN_EVERY_WORKER = "nodejs_version_info";

/**
 * prom-client's default metrics (`collectDefaultMetrics()`), read at scrape time on Node, Bun and
 * Deno alike, and how workers combine them (docs/workers.md#metrics): counters and the GC histogram
 * summed, the version taken from the first worker, and every other gauge kept per worker, since a
 * sum or a mean of descriptors, memory or event-loop lag describes no process.
 */
export function registerProcessMetrics(registry: Registry, runtime: Runtime): void {
  // A registry of the user's that has them already (prom-client's global one, say) keeps its own.
  if (registry.prom.getSingleMetric("process_cpu_user_seconds_total")) return;
  const before = new Set(registry.prom.getMetricsAsArray().map((metric) => metric.name));
  collectDefaultMetrics({ register: registry.prom });
  if (runtime === "bun") { for (const name of BUN_OMITS) registry.prom.removeSingleMetric(name); }
  for (const metric of registry.prom.getMetricsAsArray()) {
    if (before.has(metric.name) || !(metric instanceof Gauge)) continue;
    registry.aggregate(metric.name, metric.name === SAME_IN_EVERY_WORKER ? "first" : "worker");
  }
}

/** Open file descriptors of this process; throws where /proc is missing, or with EMFILE when none is left to read it. */
export function countFds(): number {
  return readdirSync("/proc/self/fd").length;
}

/** Open file descriptors of this process, or undefined where they cannot be counted. */
export function openFds(): number | undefined {
  try {
    return countFds();
  } catch {
    return undefined;
  }
}

/** The soft limit on open file descriptors, or undefined where /proc is missing. */
export function maxFds(): number | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined ? undefined : soft === "unlimited" ? Infinity : Number(soft);
  } catch {
    return undefined;
  }
}
