/**
 * The headline ratios of `GET /`, co-scheduled (bench/_coscheduled.ts): the template beside bare
 * Hono, then beside the runtime's raw server, each pair started together on the server core and
 * loaded at once; one warm-up of WARMUP_S, then CO_ROUNDS rounds of CO_DURATION_S. Each round's
 * ratio, template / other, is the inverse ratio of their CPU per request.
 */
import type { Runtime } from "../../src/policy/types.ts";
import { CO_DURATION_S, CO_ROUNDS, WARMUP_S } from "../_config.ts";
import { coscheduledRates } from "../_coscheduled.ts";
import { log } from "../_format.ts";
import { loadAverage } from "../_proc.ts";
import { startServer } from "../_servers.ts";
import { median } from "../_stats.ts";

/** What the template is measured beside. */
export type CoscheduledOther = "hono" | "raw";
export const COSCHEDULED_OTHERS: CoscheduledOther[] = ["hono", "raw"];

export interface CoscheduledRow {
  runtime: Runtime;
  other: CoscheduledOther;
  engine: string;
  /** Each round: both servers' req/s and template / other. */
  rounds: Array<{ template: number; other: number; ratio: number }>;
  medianRatio: number;
  minRatio: number;
  maxRatio: number;
  /** 1-minute load average before the pair was started. */
  loadAverage: number;
}

export async function coscheduled(runtime: Runtime): Promise<CoscheduledRow[]> {
  const rows: CoscheduledRow[] = [];
  for (const other of COSCHEDULED_OTHERS) {
    const average = loadAverage();
    const [template, bare] = await Promise.all([startServer(runtime, "template"), startServer(runtime, other)]);
    try {
      // Both JITs settle before anything is counted.
      await coscheduledRates(`${template.url}/`, `${bare.url}/`, WARMUP_S);
      const rounds: CoscheduledRow["rounds"] = [];
      for (let round = 1; round <= CO_ROUNDS; round++) {
        const [t, o] = await coscheduledRates(`${template.url}/`, `${bare.url}/`, CO_DURATION_S);
        rounds.push({ template: t, other: o, ratio: t / o });
        log(
          `  ${runtime} beside ${other.padEnd(4)} round ${round}: template ${Math.round(t)}, ${other} ${Math.round(o)} req/s, ${
            (t / o).toFixed(3)
          }`,
        );
      }
      const ratios = rounds.map((x) => x.ratio);
      rows.push({
        runtime,
        other,
        engine: template.engine,
        rounds,
        medianRatio: median(ratios),
        minRatio: Math.min(...ratios),
        maxRatio: Math.max(...ratios),
        loadAverage: average,
      });
    } finally {
      await Promise.all([template.stop(), bare.stop()]);
    }
  }
  return rows;
}
