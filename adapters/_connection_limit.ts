import { type Config, type ConfigProblem, refuse } from "../src/policy/config.ts";
import type { Logger } from "../src/policy/log.ts";
import type { ConnectionLimit } from "./_types.ts";
import { countFdsCheaply, maxFds, openFds } from "./_process_metrics.ts";

/**
 * File descriptors kept free for everything but client connections: the log, /proc reads, a
 * WebSub subscription request, DNS. Without a limit the process that runs out of descriptors is
 * the one the incident describes: accept() fails, and Deno's listener throws.
 */
export const FD_RESERVE = 32;

/** How often refusals and accept failures are summarised in the log, at most. */
const REPORT_EVERY_MS = 1_000;

/**
 * How often the descriptor watchdog counts descriptors: before the headroom under the limit could
 * run out, at the rate they were last seen to grow or FD_GROWTH_PER_S, whichever is faster; every
 * second at the least, every 10 s at the most. Under `ulimit -n 1024` that is every second, as
 * before; far from the limit (20,000, say) an idle server looks every 10 s. The count is the size
 * of /proc/self/fd (countFdsCheaply): microseconds at any count, where listing the directory took
 * 10-25 ms at 10,000. What a look costs an idle server: bench/README.md#an-idle-server.
 */
const FD_WATCH_MIN_MS = 1_000;
const FD_WATCH_MAX_MS = 10_000;
/** New descriptors a second the watchdog assumes can come until it has seen them come faster. */
const FD_GROWTH_PER_S = 1_000;

/** When the watchdog looks next, `open` of `limit` in use, after they grew by `grewPerS` a second since the last look. */
export function fdWatchDelayMs(limit: number, open: number, grewPerS: number): number {
  const lastsMs = ((limit - open) / Math.max(FD_GROWTH_PER_S, grewPerS)) * 1_000;
  return Math.min(FD_WATCH_MAX_MS, Math.max(FD_WATCH_MIN_MS, lastsMs));
}

/** Descriptors left for connections under the soft limit, or undefined where it cannot be read. */
export function fdBudget(): { budget: number; limit: number; open: number } | undefined {
  const limit = maxFds();
  const open = openFds();
  if (limit === undefined || open === undefined || !Number.isFinite(limit)) return undefined;
  return { budget: Math.max(1, limit - open - FD_RESERVE), limit, open };
}

/** maxConnections, or (null) what the descriptor limit leaves room for; null for no limit. */
export function connectionLimit(config: Config): ConnectionLimit | null {
  if (config.maxConnections === 0) return null;
  if (config.maxConnections !== null) return { max: config.maxConnections, source: "maxConnections" };
  const fds = fdBudget();
  return fds === undefined ? null : { max: fds.budget, source: "fd limit" };
}

/** A maxConnections the descriptor limit cannot hold is refused at startup, not clamped. */
export function checkConnectionLimit(config: Config): ConfigProblem[] {
  const fds = fdBudget();
  const max = config.maxConnections;
  if (!max || fds === undefined || max <= fds.budget) return [];
  return [
    refuse(
      "maxConnections",
      max,
      (w) =>
        `${
          w.given("maxConnections", max)
        } is more than this process can open: its file-descriptor limit is ${fds.limit} (ulimit -n), ${fds.open} are in use and ${FD_RESERVE} are kept in reserve; use at most ${
          w.value("maxConnections", fds.budget)
        }, or raise the limit`,
    ),
  ];
}

/**
 * Counts connections refused at the limit and logs them as `connections_refused`: the first at
 * once, then at most one summary a second with how many, so a flood cannot flood the log too.
 */
export function refusals(logger: Logger, limit: ConnectionLimit): () => void {
  const why = limit.source === "fd limit" ? "what the file-descriptor limit leaves room for" : limit.source;
  return summarised((count) =>
    logger.warn("connections_refused", {
      count,
      max: limit.max,
      source: limit.source,
      message: `${count} new connection(s) closed at once: ${limit.max} are open, ${why}`,
    })
  );
}

/** Accept errors (EMFILE and the like) logged as `accept_failed`, summarised like refusals. */
export function acceptFailures(logger: Logger): (error: unknown) => void {
  let last: unknown;
  const report = summarised((count) => logger.error("accept_failed", { count, code: codeOf(last), error: last }));
  return (error) => {
    last = error;
    report();
  };
}

function summarised(log: (count: number) => void): () => void {
  let pending = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    timer = undefined;
    if (pending === 0) return;
    log(pending);
    pending = 0;
    timer = setTimeout(flush, REPORT_EVERY_MS);
    unref(timer);
  };
  return () => {
    pending += 1;
    if (timer === undefined) flush();
  };
}

/**
 * Logs `fd_exhausted` when the process has (nearly) no descriptor left, and `fd_recovered` once it
 * is back under 90% of the limit. Works for every engine, including Bun.serve, which stops
 * accepting at the limit without a word (docs/runtimes.md) and cannot be capped by the adapter.
 * Returns what stops it.
 */
export function watchFds(logger: Logger): () => void {
  const limit = maxFds();
  if (limit === undefined || !Number.isFinite(limit)) return () => {};
  let exhausted = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let last = { open: 0, at: Date.now() };
  const look = () => {
    let open: number;
    try {
      open = countFdsCheaply();
    } catch (error) {
      // Where the count falls back to listing the directory, that needs a descriptor too: failing for want of one is the answer.
      if (codeOf(error) !== "EMFILE" && codeOf(error) !== "ENFILE") return next(last.open);
      open = limit;
    }
    if (!exhausted && open >= limit - 2) {
      exhausted = true;
      logger.error("fd_exhausted", {
        openFds: open,
        limit,
        message: "The process is out of file descriptors: new connections wait or fail until some close",
      });
    } else if (exhausted && open < limit * 0.9) {
      exhausted = false;
      logger.info("fd_recovered", { openFds: open, limit });
    }
    next(open);
  };
  const next = (open: number) => {
    const now = Date.now();
    const grewPerS = ((open - last.open) * 1_000) / Math.max(1, now - last.at);
    last = { open, at: now };
    timer = setTimeout(look, fdWatchDelayMs(limit, open, grewPerS));
    unref(timer);
  };
  timer = setTimeout(look, FD_WATCH_MIN_MS);
  unref(timer);
  return () => clearTimeout(timer);
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string") return code;
  // Deno's errors carry the OS error in the message: "Too many open files (os error 24)".
  return error instanceof Error && /os error 24\b/.test(error.message) ? "EMFILE" : undefined;
}

function unref(timer: unknown): void {
  (timer as { unref?: () => void }).unref?.();
}
