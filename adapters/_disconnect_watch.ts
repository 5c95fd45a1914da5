import { reportClientGone } from "../src/lifecycle.ts";

/** How long a request runs before its AbortSignal is watched. */
export const WATCH_AFTER_MS = 25;

/**
 * Tells the lifecycle when a client leaves before its response is done, for runtimes whose only
 * per-request word of it is the request's AbortSignal (Bun.serve; Deno while a handler works). A
 * listener on every request's signal costs ~14% of Bun's throughput and more on Deno (measured),
 * and most requests are answered before anyone could leave, so a request's signal is watched
 * only once it has run for WATCH_AFTER_MS: a sweep attaches the listener then (or reports at once
 * if the signal has already aborted). A handler that reads `c.req.raw.signal` itself learns at
 * once.
 */
export interface DisconnectWatch {
  /** Starts watching `request` (the one the app sees) through `raw` (the runtime's); returns the stop. */
  start(request: Request, raw: Request): () => void;
}

/** Starts the sweep; one per server. */
export function watchDisconnects(): DisconnectWatch {
  const pending = new Map<Request, { raw: Request; since: number; watched: boolean }>();
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [request, entry] of pending) {
      if (entry.watched || now - entry.since < WATCH_AFTER_MS) continue;
      entry.watched = true;
      const signal = entry.raw.signal;
      if (signal.aborted) reportClientGone(request);
      else signal.addEventListener("abort", () => pending.has(request) && reportClientGone(request), { once: true });
    }
  }, WATCH_AFTER_MS);
  sweep.unref?.();
  return {
    start(request, raw) {
      pending.set(request, { raw, since: Date.now(), watched: false });
      return () => pending.delete(request);
    },
  };
}
