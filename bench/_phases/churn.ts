/** Connection churn: cycles of connect, request, close; the template's fds back to baseline, RSS flat. */
import type { Runtime } from "../../src/policy/types.ts";
import { CHURN_CYCLES, CHURN_PARALLEL } from "../_config.ts";
import { hostileClient } from "../_clients.ts";
import { raisedNofile } from "../_machine.ts";
import { fdsSettle } from "../_proc.ts";
import { startServer } from "../_servers.ts";

export interface ChurnRow {
  runtime: Runtime;
  engine: string;
  cycles: number;
  errors: number;
  cyclesPerSecond: number;
  samples: Array<{ cycles: number; fds: number; rssKb: number }>;
  fdsAfterSettle: number;
}

export async function connectionChurn(runtime: Runtime): Promise<ChurnRow> {
  const server = await startServer(runtime, "template", { IDLE_TIMEOUT: "8s" }, raisedNofile());
  try {
    const port = new URL(server.url).port;
    const done = await hostileClient<Omit<ChurnRow, "runtime" | "engine" | "fdsAfterSettle">>(
      ["churn", port, server.pid, CHURN_CYCLES, CHURN_PARALLEL],
      300_000,
    );
    const fdsAfterSettle = await fdsSettle(server.pid, done.samples[0]!.fds, 3_000);
    return { runtime, engine: server.engine, ...done, fdsAfterSettle };
  } finally {
    await server.stop();
  }
}
