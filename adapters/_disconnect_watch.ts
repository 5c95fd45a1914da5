import { reportClientGone } from "../src/policy/lifecycle.ts";

/** How long a request runs before its AbortSignal is watched. */
export const WATCH_AFTER_MS = 25;

/**
 * Tells the lifecycle when a client leaves before its response is done, for runtimes whose only
 * per-request word of it is the request's AbortSignal (Bun.serve; Deno while a handler works). A
 * listener on every request's signal costs a large share of throughput (bench/README.md#per-request-costs-the-code-avoids),
 * and most requests are answered before anyone could leave, so a request's signal is watched
 * only once it has run for WATCH_AFTER_MS to twice that: a sweep attaches the listener then (or
 * reports at once if the signal has already aborted). A handler that reads `c.req.raw.signal` itself learns at
 * once.
 */
export interface DisconnectWatch {
  /** Starts watching `request` (the one the app sees) through `raw` (the runtime's). */
  start(request: Request, raw: Request): void;
  /** Stops watching `request`: its response is done. */
  stop(request: Request): void;
}

/**
 * One per server. Requests wait in two generations rather than with a timestamp each: those
 * started since the last sweep, and those started before it, which the next sweep watches (they
 * have run 25 to 50 ms by then). Per request that is one Map insert and one delete, without an
 * object, a clock read or a closure. The sweep runs only while a request waits: a sweep every
 * 25 ms cost an idle server ~0.5% of a core (bench/README.md#an-idle-server).
 */
export function watchDisconnects(): DisconnectWatch {
  let young = new Map<Request, Request>();
  let old = new Map<Request, Request>();
  const watched = new Set<Request>();
  let sweep: ReturnType<typeof setInterval> | undefined;
  const sweepOnce = () => {
    for (const [request, raw] of old) {
      watched.add(request);
      const signal = raw.signal;
      if (signal.aborted) reportClientGone(request);
      else signal.addEventListener("abort", () => watched.has(request) && reportClientGone(request), { once: true });
    }
    if (young.size === 0) {
      // Nothing left to watch: the next start() sweeps again.
      clearInterval(sweep);
      sweep = undefined;
      old.clear();
      return;
    }
    old = young;
    young = new Map();
  };
  return {
    start(request, raw) {
      young.set(request, raw);
      if (sweep === undefined) {
        sweep = setInterval(sweepOnce, WATCH_AFTER_MS);
        sweep.unref?.();
      }
    },
    stop(request) {
      if (!young.delete(request) && !old.delete(request)) watched.delete(request);
    },
  };
}
