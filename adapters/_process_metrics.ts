import { readdirSync, readFileSync, statSync } from "node:fs";
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

/**
 * How often the event-loop-delay monitor behind `nodejs_eventloop_lag_{min,max,mean,stddev,p50,p90,p99}_seconds`
 * samples. Its timer wakes the process whether or not anything scrapes: prom-client's 10 ms cost an
 * idle server 0.6-0.8% of a core on each runtime, 100 ms 0.08-0.15%, 250 ms 0.03-0.1%
 * (docs/observability.md#cost). Bun samples every second: at 250 ms its monitor kept an idle Bun
 * at 0.20-0.22%, over the 0.2% an idle process may use, at 1 s 0.13-0.15%. Deno's costs the same
 * at 1 s as at 10 s (its wake-ups are not the interval's), so Deno keeps 250 ms
 * (bench/README.md#an-idle-server). A stall shorter than the interval is seen only if it holds up
 * a sample: one of 50 ms in 1 of 5 at 250 ms, 1 of 20 at 1 s; one as long as the interval always.
 */
export const LAG_SAMPLE_MS: Record<Runtime, number> = { node: 250, bun: 1_000, deno: 250 };

/**
 * The lag figures that are one sample each. Node's monitor records each whole interval between two
 * of its ticks, the interval included (an idle Node read p50 0.0102 s at 10 ms, 0.100 s at 100 ms); Bun
 * and Deno record only the delay beyond it. Node's are shifted by the interval, so every runtime
 * reports the delay beyond it, and the figures do not move with the interval. The stddev does not move.
 */
const LAG_SHIFTED = [
  "nodejs_eventloop_lag_min_seconds",
  "nodejs_eventloop_lag_max_seconds",
  "nodejs_eventloop_lag_mean_seconds",
  "nodejs_eventloop_lag_p50_seconds",
  "nodejs_eventloop_lag_p90_seconds",
  "nodejs_eventloop_lag_p99_seconds",
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
  collectDefaultMetrics({ register: registry.prom, eventLoopMonitoringPrecision: LAG_SAMPLE_MS[runtime] });
  if (runtime === "bun") { for (const name of BUN_OMITS) registry.prom.removeSingleMetric(name); }
  if (runtime === "node") { for (const name of LAG_SHIFTED) shiftBy(registry.prom.getSingleMetric(name), LAG_SAMPLE_MS.node / 1_000); }
  for (const metric of registry.prom.getMetricsAsArray()) {
    if (before.has(metric.name) || !(metric instanceof Gauge)) continue;
    registry.aggregate(metric.name, metric.name === SAME_IN_EVERY_WORKER ? "first" : "worker");
  }
}

/** Reports `metric`'s samples less `seconds` (at least 0): wraps its get(), which every exposition reads. */
function shiftBy(metric: unknown, seconds: number): void {
  if (!(metric instanceof Gauge)) return;
  const get = metric.get.bind(metric);
  metric.get = async () => {
    const data = await get();
    return { ...data, values: data.values.map((sample) => ({ ...sample, value: Math.max(0, sample.value - seconds) })) };
  };
}

/**
 * Open file descriptors of this process, without opening one: since Linux 6.2 the size of
 * /proc/self/fd is the count, which the kernel takes from its descriptor table, where listing the
 * directory costs 12 ms at 10,000 descriptors. Falls back to countFds() on older kernels (size 0).
 */
export function countFdsCheaply(): number {
  const size = statSync("/proc/self/fd").size;
  return size > 0 ? size : countFds();
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
