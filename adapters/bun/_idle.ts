import { trackBody } from "../../src/policy/lifecycle.ts";

/** Bun's timers fire on a global 4 s clock (docs/runtimes.md#bun-timers-tick-every-4-seconds). */
export const BUN_TICK_MS = 4_000;

/** Bun's largest idle timeout: `server.timeout()` accepts more but closes at 255 s (docs/runtimes.md#bun-caps-idletimeout-at-255-seconds). */
export const BUN_MAX_IDLE_SECONDS = 255;
/** The longest IDLE_TIMEOUT Bun's own timer can honour without closing early: see bunIdleSeconds. */
export const BUN_MAX_IDLE_MS = 252_000;

/**
 * The per-request `server.timeout()` value for IDLE_TIMEOUT `idleTimeoutMs`, or 0 to disable.
 *
 * Bun's timers tick on a global 4 s clock: a timeout of s seconds fires in (4(k-1), 4k] seconds
 * after the last activity, k = ceil(s/4), so it can fire up to 4 s *early*. Choosing
 * k = ceil(T/4) + 1 puts the close in (4*ceil(T/4), 4*ceil(T/4) + 4]: never before T, at most
 * 4 s late when T is a multiple of 4 s. Capped at 255 s, which keeps k (and the window) for every
 * T up to 252 s.
 */
export function bunIdleSeconds(idleTimeoutMs: number): number {
  if (idleTimeoutMs === 0) return 0;
  const ticks = Math.ceil(idleTimeoutMs / BUN_TICK_MS) + 1;
  return Math.min((ticks * BUN_TICK_MS) / 1_000, BUN_MAX_IDLE_SECONDS);
}

/**
 * Passes a streaming body through and calls `beforeEnd` synchronously before its end reaches Bun.
 * Bun ignores `server.timeout()` once a response has completed, so re-arming the idle timer only
 * works while the last chunk is still ours to hand over.
 */
export function rearmBeforeEnd(body: ReadableStream<Uint8Array>, beforeEnd: () => void): ReadableStream<Uint8Array> {
  return trackBody(body, (outcome) => {
    if (outcome === "finished") beforeEnd();
  });
}
