import { AggregatorRegistry, type Registry as PromRegistry } from "prom-client";
import type { FamilyJson } from "../policy/metrics.ts";

/**
 * One registry for several workers (WORKERS > 1), made by prom-client's
 * `AggregatorRegistry.aggregate()` from every worker's `registry.json()`. Each family is combined
 * the way it says (docs/workers.md#metrics): with one of prom-client's aggregators (counters
 * `sum`), or, for `worker`, each worker's series kept apart under a `worker` label, which the
 * aggregator then has nothing to add up.
 */
export function mergeWorkers(workers: ReadonlyArray<{ worker: string; families: readonly FamilyJson[] }>): PromRegistry {
  return AggregatorRegistry.aggregate(
    workers.map(({ worker, families }) =>
      families.map((family) =>
        family.aggregator === "worker"
          ? { ...family, aggregator: "sum", values: family.values.map((v) => ({ ...v, labels: { worker, ...v.labels } })) }
          : family
      )
    ),
  );
}

/**
 * A worker's families as JSON for the worker answering the scrape. JSON has no NaN or infinities,
 * which gauges do report (an unlimited fd limit, an event-loop lag with no sample yet), so
 * non-finite values travel as strings.
 */
export function encodeFamilies(families: readonly FamilyJson[]): string {
  return JSON.stringify(
    families,
    (key, value) => (key === "value" && typeof value === "number" && !Number.isFinite(value) ? String(value) : value),
  );
}

/** `encodeFamilies()` read back. */
export function decodeFamilies(text: string): FamilyJson[] {
  const families = JSON.parse(text) as FamilyJson[];
  for (const family of families) {
    for (const sample of family.values) sample.value = Number(sample.value);
  }
  return families;
}
