/** Reap precision: idle connections closed by the template, close time minus response time minus IDLE_TIMEOUT. */
import type { Runtime } from "../../src/policy/types.ts";
import { REAP_CONNECTIONS, REAP_TIMEOUT_MS, TARGETS } from "../_config.ts";
import { idleClientCommand } from "../_clients.ts";
import { ClientProcess } from "../_process.ts";
import { startServer } from "../_servers.ts";
import { median, percentile } from "../_stats.ts";

export interface ReapRow {
  runtime: Runtime;
  round: number;
  engine: string;
  connections: number;
  closed: number;
  stillOpen: number;
  minMs: number;
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  lateMs: number[];
}

export async function reapPrecision(runtime: Runtime, round: number): Promise<ReapRow> {
  const server = await startServer(runtime, "template", { IDLE_TIMEOUT: `${REAP_TIMEOUT_MS}ms` });
  let client: ClientProcess | undefined;
  try {
    const port = Number(new URL(server.url).port);
    const waitMs = REAP_TIMEOUT_MS + TARGETS.reapLateMs[runtime] + 6_000;
    client = new ClientProcess(idleClientCommand(undefined, port, REAP_CONNECTIONS, "wait", waitMs), process.env);
    const ready = await client.waitFor("ready", 60_000);
    const done = await client.waitFor("done", waitMs + 30_000);
    const late = (done.closedAfterResponseMs as number[]).map((ms) => Math.round((ms - REAP_TIMEOUT_MS) * 10) / 10);
    return {
      runtime,
      round,
      engine: server.engine,
      connections: Number(ready.answered),
      closed: late.length,
      stillOpen: Number(done.stillOpen),
      minMs: Math.min(...late),
      medianMs: median(late),
      p99Ms: percentile(late, 99),
      maxMs: Math.max(...late),
      lateMs: late,
    };
  } finally {
    if (client) await client.stop();
    await server.stop();
  }
}
