import { escapeLabelValue, formatValue } from "../policy/metrics.ts";

/**
 * One exposition for several workers (WORKERS > 1): counters summed across workers, gauges kept per
 * worker with a `worker` label (a sum of, say, open file descriptors would describe no process).
 * Reads the text format the registry writes (src/policy/metrics.ts): `# HELP`, `# TYPE`, then
 * samples `name{labels} value`.
 */
export function mergeExpositions(expositions: ReadonlyArray<{ worker: string; text: string }>): string {
  interface Family {
    help: string;
    type: string;
    /** Series key (`name{labels}`) to value, in first-seen order. */
    samples: Map<string, number>;
  }
  const families = new Map<string, Family>();
  for (const { worker, text } of expositions) {
    let current: Family | undefined;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      if (line.startsWith("# HELP ")) {
        const [name, ...help] = line.slice(7).split(" ");
        current = families.get(name!);
        if (!current) families.set(name!, current = { help: help.join(" "), type: "untyped", samples: new Map() });
        continue;
      }
      if (line.startsWith("# TYPE ")) {
        const [name, type] = line.slice(7).split(" ");
        const family = families.get(name!);
        if (family && type) family.type = type;
        continue;
      }
      if (line.startsWith("#") || !current) continue;
      const space = line.lastIndexOf(" ");
      const series = line.slice(0, space);
      const value = Number(line.slice(space + 1));
      if (current.type === "counter") {
        current.samples.set(series, (current.samples.get(series) ?? 0) + value);
      } else {
        current.samples.set(withLabel(series, "worker", worker), value);
      }
    }
  }
  const lines: string[] = [];
  for (const [name, family] of families) {
    lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`);
    for (const [series, value] of family.samples) lines.push(`${series} ${formatValue(value)}`);
  }
  return lines.length ? `${lines.join("\n")}\n` : "";
}

/** `name{a="1"}` with `label="value"` added first. */
function withLabel(series: string, label: string, value: string): string {
  const brace = series.indexOf("{");
  const pair = `${label}="${escapeLabelValue(value)}"`;
  return brace < 0 ? `${series}{${pair}}` : `${series.slice(0, brace + 1)}${pair},${series.slice(brace + 1)}`;
}
