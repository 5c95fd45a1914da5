/** Slowloris flood: well-behaved clients' latency alone and while many connections trickle header bytes. */
import { capabilities, headDeadlineWindow } from "../../test/_capabilities.ts";
import type { Runtime } from "../../src/policy/types.ts";
import { DEFAULT_ENGINE, SLOWLORIS_CONNECTIONS, SLOWLORIS_HEADERS_TIMEOUT_MS, SLOWLORIS_MEASURE_S } from "../_config.ts";
import { hostileClient } from "../_clients.ts";
import { raisedNofile } from "../_machine.ts";
import { startServer } from "../_servers.ts";

export interface LatencyStats {
  requests: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface SlowlorisRow {
  runtime: Runtime;
  engine: string;
  baseline: LatencyStats;
  flood: LatencyStats;
  tricklers: { opened: number; failedToOpen: number; closed: number; answered408: number; minLifetimeMs: number; maxLifetimeMs: number };
  /** Where the head deadline may close a trickler on this engine (Bun's is fixed by Bun). */
  windowMs: { min: number; max: number };
}

export async function slowlorisFlood(runtime: Runtime): Promise<SlowlorisRow> {
  const windowMs = headDeadlineWindow(capabilities[DEFAULT_ENGINE[runtime]], SLOWLORIS_HEADERS_TIMEOUT_MS);
  const server = await startServer(runtime, "template", {
    HEADERS_TIMEOUT: `${SLOWLORIS_HEADERS_TIMEOUT_MS}ms`,
    REQUEST_TIMEOUT: "10s",
    IDLE_TIMEOUT: "8s",
  }, raisedNofile());
  try {
    const port = new URL(server.url).port;
    const waitMs = windowMs.max + 2_000;
    const done = await hostileClient<Omit<SlowlorisRow, "runtime" | "engine" | "windowMs">>(
      ["slowloris", port, SLOWLORIS_CONNECTIONS, SLOWLORIS_MEASURE_S, waitMs],
      2 * SLOWLORIS_MEASURE_S * 1_000 + waitMs + 30_000,
    );
    return { runtime, engine: server.engine, ...done, windowMs };
  } finally {
    await server.stop();
  }
}
