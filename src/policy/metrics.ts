/**
 * The metrics registry: a small facade over prom-client's `Registry`, which holds the families and
 * writes the exposition. The facade keeps what apps and modules call (`counter`, `gauge`,
 * `collect`), checks names and labels with messages that quote the value, starts every declared
 * series at 0, and records how each family is combined across workers (docs/observability.md#metrics).
 */
import { type Aggregator, Counter as PromCounter, Gauge as PromGauge, Registry as PromRegistry } from "prom-client";

/** Content-Type of the text `render()` returns (Prometheus text exposition format 0.0.4). */
export const METRICS_CONTENT_TYPE = PromRegistry.PROMETHEUS_CONTENT_TYPE;

/** What `metricsAnswer()` returns: the answer, and the render that warms it. */
export interface MetricsAnswer {
  (): Promise<Response>;
  /**
   * Renders the registry once and discards the text, so that the first scrape finds every
   * collector run once and compiled (docs/observability.md#cost); for startup, after listening. A
   * scrape that arrives meanwhile waits for it rather than rendering beside it.
   */
  warmUp(): Promise<void>;
}

/** The `/metrics` answer: `exposition()` (by default the registry's own) in Prometheus' text format. */
export function metricsAnswer(
  registry: Registry,
  exposition: () => string | Promise<string> = () => registry.render(),
): MetricsAnswer {
  let warming: Promise<void> | undefined;
  const answer = async () => {
    // Two renders interleave at every await of prom-client's collectors, and the scrape would end
    // with the slower of them.
    if (warming) await warming;
    return new Response(await exposition(), { headers: { "content-type": METRICS_CONTENT_TYPE } });
  };
  return Object.assign(answer, {
    warmUp() {
      // The registry's own render, not `exposition()`: with WORKERS that asks the other workers
      // over the network, which a scrape must not wait for here.
      warming ??= registry.render().then(() => {}, () => {}).finally(() => (warming = undefined));
      return warming;
    },
  });
}

/** Label name to label value for one series. */
export type Labels = Record<string, string>;

/** One series reported by a `collect` family. */
export interface Sample {
  labels?: Labels;
  value: number;
}

/**
 * How a family is combined when several workers answer one scrape (docs/workers.md#metrics): one of
 * prom-client's aggregators (`sum`, `first`, `min`, `max`, `average`, `omit`), or `worker`: each
 * worker's series kept apart under a `worker` label.
 */
export type Aggregation = Aggregator | "worker";

/** Options of a gauge or a collected family. */
export interface FamilyOptions {
  /** How WORKERS > 1 combine it. @default "worker" for a gauge (a sum of each process's heap or descriptors describes no process), "sum" for a counter */
  aggregation?: Aggregation;
}

/** A value that only goes up; `by` defaults to 1 and must not be negative. */
export interface Counter {
  inc(labels?: Labels, by?: number): void;
  /** The value as the next scrape reads it. */
  get(labels?: Labels): Promise<number>;
  /** The series for `labels`, looked up once: for hot paths that count the same series again and again. */
  labels(labels?: Labels): CounterSeries;
}

/** One series of a counter, bound to its labels. */
export interface CounterSeries {
  inc(by?: number): void;
}

/** A value that goes up and down. */
export interface Gauge {
  set(value: number, labels?: Labels): void;
  inc(labels?: Labels, by?: number): void;
  dec(labels?: Labels, by?: number): void;
  get(labels?: Labels): Promise<number>;
}

/** One family as a worker sends it to the worker that answers the scrape: prom-client's `getMetricsAsJSON()` entry. */
export interface FamilyJson {
  name: string;
  help: string;
  type: string;
  aggregator: Aggregation;
  values: Array<{ value: number; labels: Partial<Record<string, string | number>>; metricName?: string }>;
}

/** The metric families of one process, rendered together for a scrape. */
export interface Registry {
  /** name must match ^[a-zA-Z_:][a-zA-Z0-9_:]*$ and end in _total (throw Error otherwise); labelNames declared up front; summed across workers */
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  /** name must match ^[a-zA-Z_:][a-zA-Z0-9_:]*$; labelNames declared up front */
  gauge(name: string, help: string, labelNames?: readonly string[], options?: FamilyOptions): Gauge;
  /** A family whose samples are read at scrape time (e.g. open connections); [] shows no sample. */
  collect(name: string, help: string, type: "gauge" | "counter", read: () => Sample[], options?: FamilyOptions): void;
  /** Sets how the family `name`, registered already (say, one of prom-client's default metrics), is combined across workers. */
  aggregate(name: string, aggregation: Aggregation): void;
  /** The whole exposition, families in registration order: prom-client's `metrics()`. */
  render(): Promise<string>;
  /** Every family with its values and its aggregation: what a worker hands the worker that answers a scrape. */
  json(): Promise<FamilyJson[]>;
  /** prom-client's Registry behind the facade: register histograms, summaries or any prom-client metric on it. */
  readonly prom: PromRegistry;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
// Names starting with `__` are reserved for Prometheus' own use during relabelling.
const LABEL_NAME = /^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$/;

function checkLabelName(metric: string, label: string): void {
  if (!LABEL_NAME.test(label)) {
    throw new Error(`${metric}: label name "${label}" is not valid: use letters, digits and _, not starting with a digit or __`);
  }
}

function checkIncrease(metric: string, by: number): void {
  // `!(by >= 0)` also rejects NaN, which would poison the counter forever.
  if (!(by >= 0)) throw new Error(`${metric}: inc(${by}) would lower a counter: counters only go up`);
}

/** The labels of one series as prom-client gets them: every declared name, in declared order; throws on undeclared or missing names. */
function labelChecker(name: string, labelNames: readonly string[]): (labels?: Labels) => Labels {
  for (const label of labelNames) checkLabelName(name, label);
  if (new Set(labelNames).size !== labelNames.length) throw new Error(`${name}: label names ${JSON.stringify(labelNames)} repeat a name`);
  return (labels = {}) => {
    for (const key of Object.keys(labels)) {
      if (!labelNames.includes(key)) {
        throw new Error(`${name}: label "${key}" was not declared: declared are ${JSON.stringify(labelNames)}`);
      }
    }
    const checked: Labels = {};
    for (const label of labelNames) {
      if (!Object.hasOwn(labels, label)) throw new Error(`${name}: label "${label}" is missing`);
      checked[label] = labels[label]!;
    }
    return checked;
  };
}

/** The value of the series with exactly `labels` in a prom-client family, 0 when it has none. */
async function valueOf(metric: { get(): Promise<{ values: Array<{ value: number; labels: object }> }> }, labels: Labels): Promise<number> {
  const keys = Object.keys(labels);
  const { values } = await metric.get();
  const found = values.find((v) => {
    const have = v.labels as Record<string, unknown>;
    return Object.keys(have).length === keys.length && keys.every((k) => String(have[k]) === labels[k]);
  });
  return found?.value ?? 0;
}

/** A registry backed by `prom` (a new prom-client Registry unless given, e.g. prom-client's global `register`). */
export function createRegistry(prom: PromRegistry = new PromRegistry()): Registry {
  const aggregations = new Map<string, Aggregation>();

  function register(name: string, type: "gauge" | "counter", aggregation: Aggregation): void {
    if (!METRIC_NAME.test(name)) {
      throw new Error(`Metric name "${name}" is not valid: use letters, digits, _ and :, not starting with a digit`);
    }
    // Prometheus only checks the suffix in OpenMetrics, but requiring it keeps names uniform.
    if (type === "counter" && !name.endsWith("_total")) throw new Error(`Counter "${name}" must end in _total`);
    if (prom.getSingleMetric(name)) throw new Error(`Metric "${name}" is registered twice`);
    aggregations.set(name, aggregation);
  }

  return {
    prom,
    counter(name, help, labelNames = []) {
      const check = labelChecker(name, labelNames);
      register(name, "counter", "sum");
      // What bound series counted since the last scrape. prom-client's own inc() hashes and checks
      // the labels each time, a cost the request path does not pay (docs/observability.md#cost).
      const bound: Array<{ labels: Labels; value: number }> = [];
      const counter: PromCounter = new PromCounter({
        name,
        help,
        labelNames,
        registers: [prom],
        collect() {
          for (const series of bound) {
            if (series.value === 0) continue;
            counter.inc(series.labels, series.value);
            series.value = 0;
          }
        },
      });
      return {
        inc(labels, by = 1) {
          checkIncrease(name, by);
          counter.inc(check(labels), by);
        },
        get: (labels) => valueOf(counter, check(labels)),
        labels(labels) {
          const series = { labels: check(labels), value: 0 };
          // The series exists from now on: a scrape shows it at 0 before it first counts.
          counter.inc(series.labels, 0);
          bound.push(series);
          return {
            inc(by = 1) {
              checkIncrease(name, by);
              series.value += by;
            },
          };
        },
      };
    },
    gauge(name, help, labelNames = [], options = {}) {
      const check = labelChecker(name, labelNames);
      register(name, "gauge", options.aggregation ?? "worker");
      const gauge = new PromGauge({ name, help, labelNames, registers: [prom] });
      return {
        set: (value, labels) => gauge.set(check(labels), value),
        inc: (labels, by = 1) => gauge.inc(check(labels), by),
        dec: (labels, by = 1) => gauge.dec(check(labels), by),
        get: (labels) => valueOf(gauge, check(labels)),
      };
    },
    collect(name, help, type, read, options = {}) {
      register(name, type, options.aggregation ?? (type === "counter" ? "sum" : "worker"));
      // A prom-client Gauge or Counter, registered by its own constructor. Its series are what
      // read() reports at each scrape, under whatever label names it reports, which set() and inc()
      // would want declared up front: so they come from its get(), through which the Registry reads
      // every metric, prom-client's own name, help, type and aggregator with them.
      const family = type === "counter"
        ? new PromCounter({ name, help, registers: [prom] })
        : new PromGauge({ name, help, registers: [prom] });
      const own = family.get.bind(family);
      family.get = async () => ({
        ...await own(),
        values: read().map(({ labels = {}, value }) => {
          for (const label of Object.keys(labels)) checkLabelName(name, label);
          return { labels, value };
        }),
      });
    },
    aggregate(name, aggregation) {
      if (!prom.getSingleMetric(name)) {
        throw new Error(`Metric "${name}" is not registered: register it before saying how workers combine it`);
      }
      aggregations.set(name, aggregation);
    },
    render: () => prom.metrics(),
    async json() {
      const families = await prom.getMetricsAsJSON();
      return families.map((family) => ({
        ...family,
        type: String(family.type),
        aggregator: aggregations.get(family.name) ?? family.aggregator,
      }));
    },
  };
}
