import { readdirSync, readFileSync } from "node:fs";
import process from "node:process";
import type { Registry } from "../src/policy/metrics.ts";

/**
 * The standard process metrics, read at scrape time the same way on Node, Bun and Deno (all
 * three provide node:fs and node:process). File descriptors come from /proc, so they exist on
 * Linux only; other platforms get resident memory alone.
 */
export function registerProcessMetrics(registry: Registry): void {
  registry.collect("process_open_fds", "Number of open file descriptors.", "gauge", () => {
    const fds = openFds();
    return fds === undefined ? [] : [{ value: fds }];
  });
  registry.collect("process_max_fds", "Maximum number of open file descriptors.", "gauge", () => {
    const max = maxFds();
    return max === undefined ? [] : [{ value: max }];
  });
  registry.collect("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", () => [
    { value: process.memoryUsage().rss },
  ]);
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
