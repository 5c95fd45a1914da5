/** Content-Type of the text `render()` returns (Prometheus text exposition format 0.0.4). */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Label name to label value for one series. */
export type Labels = Record<string, string>;

/** One series reported by a `collect` family. */
export interface Sample {
  labels?: Labels;
  value: number;
}

/** A value that only goes up; `by` defaults to 1 and must not be negative. */
export interface Counter {
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
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
  get(labels?: Labels): number;
}

/** The metric families of one process, rendered together for a scrape. */
export interface Registry {
  /** name must match ^[a-zA-Z_:][a-zA-Z0-9_:]*$ and end in _total (throw Error otherwise); labelNames declared up front */
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  /** name must match ^[a-zA-Z_:][a-zA-Z0-9_:]*$; labelNames declared up front */
  gauge(name: string, help: string, labelNames?: readonly string[]): Gauge;
  /** A family whose samples are read at scrape time (e.g. open file descriptors); return [] to omit it. */
  collect(name: string, help: string, type: "gauge" | "counter", read: () => Sample[]): void;
  /** The whole exposition, families in registration order, ending with a newline. */
  render(): string;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
// Names starting with `__` are reserved for Prometheus' own use during relabelling.
const LABEL_NAME = /^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$/;

interface Family {
  name: string;
  help: string;
  type: "gauge" | "counter";
  read: () => Sample[];
}

/** Formats a sample value the way Prometheus' parser (Go ParseFloat plus NaN/±Inf) reads it back. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** Escapes HELP text: only backslash and newline are special there. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Escapes a label value: backslash, double quote and newline. */
export function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Renders one sample line; label pairs are written in the order given. */
function sampleLine(name: string, pairs: readonly (readonly [string, string])[], value: number): string {
  const labels = pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",");
  return `${labels ? `${name}{${labels}}` : name} ${formatValue(value)}`;
}

function checkMetricName(name: string): void {
  if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name "${name}"`);
}

function checkLabelName(metric: string, label: string): void {
  if (!LABEL_NAME.test(label)) throw new Error(`${metric}: invalid label name "${label}"`);
}

function checkIncrease(metric: string, by: number): void {
  // `!(by >= 0)` also rejects NaN, which would poison the counter forever.
  if (!(by >= 0)) throw new Error(`${metric}: counters only go up, got inc(${by})`);
}

/** A labelled set of numbers keyed by declared label values, in first-use order. */
function createSeries(name: string, labelNames: readonly string[]) {
  for (const label of labelNames) checkLabelName(name, label);
  if (new Set(labelNames).size !== labelNames.length) throw new Error(`${name}: duplicate label names`);
  // Map keeps insertion order, which gives first-use order in the output.
  const values = new Map<string, { labelValues: string[]; value: number }>();
  // An unlabelled series always exists so it is scraped as 0 before its first update.
  if (labelNames.length === 0) values.set("[]", { labelValues: [], value: 0 });

  /** Label values in declared order; throws on undeclared or missing label names. */
  function labelValuesOf(labels: Labels = {}): string[] {
    for (const key of Object.keys(labels)) {
      if (!labelNames.includes(key)) throw new Error(`${name}: label "${key}" was not declared`);
    }
    return labelNames.map((label) => {
      if (!Object.hasOwn(labels, label)) throw new Error(`${name}: missing label "${label}"`);
      return labels[label];
    });
  }

  return {
    get(labels?: Labels): number {
      return values.get(JSON.stringify(labelValuesOf(labels)))?.value ?? 0;
    },
    /** The entry of one series, created at 0 when new. */
    entry(labels: Labels | undefined): { labelValues: string[]; value: number } {
      const labelValues = labelValuesOf(labels);
      const key = JSON.stringify(labelValues);
      let entry = values.get(key);
      if (!entry) values.set(key, entry = { labelValues, value: 0 });
      return entry;
    },
    update(labels: Labels | undefined, change: (old: number) => number): void {
      const entry = this.entry(labels);
      entry.value = change(entry.value);
    },
    read(): Sample[] {
      return [...values.values()].map(({ labelValues, value }) => ({
        labels: Object.fromEntries(labelNames.map((label, i) => [label, labelValues[i]])),
        value,
      }));
    },
  };
}

/** Creates an empty registry; families render in the order they were registered. */
export function createRegistry(): Registry {
  const families: Family[] = [];

  function register(family: Family): void {
    checkMetricName(family.name);
    // Prometheus only checks the suffix in OpenMetrics, but requiring it keeps names uniform.
    if (family.type === "counter" && !family.name.endsWith("_total")) {
      throw new Error(`counter "${family.name}" must end in _total`);
    }
    if (families.some((f) => f.name === family.name)) throw new Error(`metric "${family.name}" registered twice`);
    families.push(family);
  }

  return {
    counter(name, help, labelNames = []) {
      const series = createSeries(name, labelNames);
      register({ name, help, type: "counter", read: series.read });
      return {
        inc(labels, by = 1) {
          checkIncrease(name, by);
          series.update(labels, (old) => old + by);
        },
        get: series.get,
        labels(labels) {
          const entry = series.entry(labels);
          return {
            inc(by = 1) {
              checkIncrease(name, by);
              entry.value += by;
            },
          };
        },
      };
    },
    gauge(name, help, labelNames = []) {
      const series = createSeries(name, labelNames);
      register({ name, help, type: "gauge", read: series.read });
      return {
        set: (value, labels) => series.update(labels, () => value),
        inc: (labels, by = 1) => series.update(labels, (old) => old + by),
        dec: (labels, by = 1) => series.update(labels, (old) => old - by),
        get: series.get,
      };
    },
    collect(name, help, type, read) {
      register({ name, help, type, read });
    },
    render() {
      const lines: string[] = [];
      for (const { name, help, type, read } of families) {
        const samples = read();
        if (samples.length === 0) continue;
        lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
        for (const { labels = {}, value } of samples) {
          const pairs = Object.entries(labels);
          for (const [label] of pairs) checkLabelName(name, label);
          lines.push(sampleLine(name, pairs, value));
        }
      }
      // An empty registry renders as "", which is a valid (empty) exposition.
      return lines.length ? `${lines.join("\n")}\n` : "";
    },
  };
}
