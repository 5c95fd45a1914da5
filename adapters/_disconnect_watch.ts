import { isSettled, reportClientGone } from "../src/lifecycle.ts";

/** How long a request runs before its AbortSignal is watched. */
export const WATCH_AFTER_MS = 25;

/**
 * Tells the lifecycle when a client leaves before its response is done, for runtimes whose only
 * per-request word of it is the request's AbortSignal (Bun.serve; Deno while a handler works). A
 * listener on every request's signal costs ~14% of Bun's throughput and more on Deno (measured),
 * and most requests are answered before anyone could leave, so a request's signal is watched
 * only once it has run for WATCH_AFTER_MS to twice that: a sweep attaches the listener then (or
 * reports at once if the signal has already aborted). A handler that reads `c.req.raw.signal` itself learns at
 * once.
 */
export interface DisconnectWatch {
  /** Starts watching `request` (the one the app sees) through `raw` (the runtime's), until its response is complete. */
  start(request: Request, raw: Request): void;
}

/**
 * Starts the sweep; one per server. Requests wait in two generations rather than with a timestamp
 * each: those started since the last sweep, and those started before it, which the next sweep
 * watches (they have run 25 to 50 ms by then) unless the lifecycle says their response is already
 * complete. Per request that is two array pushes: no map, object, clock read or closure, and no
 * call when it ends (a report for a completed request is ignored anyway).
 */
export function watchDisconnects(): DisconnectWatch {
  let young: Request[] = [];
  let youngRaw: Request[] = [];
  let old: Request[] = [];
  let oldRaw: Request[] = [];
  const sweep = setInterval(() => {
    for (let i = 0; i < old.length; i++) {
      const request = old[i]!;
      if (isSettled(request)) continue;
      const signal = oldRaw[i]!.signal;
      if (signal.aborted) reportClientGone(request);
      else signal.addEventListener("abort", () => reportClientGone(request), { once: true });
    }
    old = young;
    oldRaw = youngRaw;
    young = [];
    youngRaw = [];
  }, WATCH_AFTER_MS);
  sweep.unref?.();
  return {
    start(request, raw) {
      young.push(request);
      youngRaw.push(raw);
    },
  };
}
