import { expect } from "bun:test";
import { type Capabilities, capabilities, headDeadlineWindow } from "./_capabilities.ts";
import { runtimeOf } from "../harness/servers.ts";
import type { Engine } from "../src/policy/types.ts";

/** Bounds a measurement on both sides: not earlier than `min`, not later than `max`. */
export function expectBetween(value: number, min: number, max: number): void {
  expect(value).toBeGreaterThanOrEqual(min);
  expect(value).toBeLessThanOrEqual(max);
}

/** Slack for the lower bounds: the contract allows a close up to 100 ms early. */
export const EARLY_MS = 100;

/**
 * What the conformance and hardening suites share for one engine: its runtime, its declared
 * capabilities, short policy timeouts (Bun's a multiple of its 4 s tick, as the README advises),
 * the environment that sets them, and the window a head deadline may close a connection in.
 */
export function suiteSetup(engine: Engine, shutdownMs: number) {
  const runtime = runtimeOf(engine);
  const caps: Capabilities = capabilities[engine];
  const IDLE_MS = runtime === "bun" ? 4_000 : 2_000;
  const HEADERS_MS = 1_500;
  const REQUEST_MS = 2_500;
  const env: Record<string, string> = {
    IDLE_TIMEOUT: `${IDLE_MS}ms`,
    HEADERS_TIMEOUT: `${HEADERS_MS}ms`,
    REQUEST_TIMEOUT: `${REQUEST_MS}ms`,
    SHUTDOWN_TIMEOUT: `${shutdownMs}ms`,
  };
  const window = headDeadlineWindow(caps, HEADERS_MS);
  const headersWindow = { min: window.min - EARLY_MS, max: window.max };
  return {
    runtime,
    engine,
    caps,
    env,
    IDLE_MS,
    HEADERS_MS,
    REQUEST_MS,
    SHUTDOWN_MS: shutdownMs,
    IDLE_LATE_MS: caps.idleCloseLateMs(IDLE_MS),
    headersWindow,
  };
}
