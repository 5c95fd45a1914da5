import { expect } from "bun:test";
import { capabilities, headDeadlineWindow, type Target } from "./_capabilities.ts";
import type { ServerProcess } from "../harness/process.ts";
import { completeResponses, get } from "../harness/http.ts";
import type { RawClient } from "../harness/raw_client.ts";
import { runnerOf, spawnServer, startServer } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import { open } from "./_plain.ts";

/** Bounds a measurement on both sides: not earlier than `min`, not later than `max`. */
export function expectBetween(value: number, min: number, max: number): void {
  expect(value).toBeGreaterThanOrEqual(min);
  expect(value).toBeLessThanOrEqual(max);
}

/** Slack for the lower bounds: the contract allows a close up to 100 ms early. */
export const EARLY_MS = 100;

/** Contract: a handler learns of a client that left within 100 ms (on workerd: of a reset; of a close, see closeNoticeAfterNextWriteMs). */
export const ABORT_NOTICE_MS = 100;

/** Registers a cleanup that runs when the test ends, whatever happens. */
export type Defer = (cleanup: () => unknown) => void;

/**
 * A test body that starts `target`'s server serving `app` (null: the entry's own) with `env`, runs
 * `fn` on it and stops it afterwards, whatever happens; the server must print nothing but JSON.
 */
export function serving(
  target: Target,
  app: string | null,
  env: Record<string, string>,
  fn: (server: ServerProcess, defer: Defer) => void | Promise<void>,
): () => Promise<void> {
  return () =>
    using(async (defer) => {
      const server = await startServer(target, env, 15_000, { app });
      defer(() => server.kill());
      await fn(server, defer);
      expect(server.nonJsonLines).toEqual([]);
    });
}

/**
 * Starts `target` with `env`, which it must refuse: exit 2, nothing bound. Resolves with the lines
 * it wrote to stderr, npm's own left out.
 */
export async function refusedAtStart(target: Target, env: Record<string, string>): Promise<string[]> {
  const server = spawnServer(target, env);
  try {
    expect(await server.exitCode()).toBe(2);
    expect(server.named("listening")).toEqual([]);
    return server.stderr.trim().split("\n").filter((line) => !line.startsWith("npm "));
  } finally {
    await server.kill();
  }
}

/**
 * Opens an idle keep-alive connection (one response read) and a busy one (a 1.5 s response begun)
 * to `server`, as the shutdown scenarios signal with both open.
 */
export async function idleAndInFlight(server: ServerProcess, defer: Defer): Promise<{ idle: RawClient; busy: RawClient }> {
  const idle = await open(server.port, defer);
  idle.write(get("/"));
  await idle.waitFor((d) => completeResponses(d) === 1, 2_000, "a response");
  const busy = await open(server.port, defer);
  busy.write(get("/slow?ms=1500"));
  await busy.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk");
  return { idle, busy };
}

/**
 * What the conformance and hardening suites share for one target: its runtime (or workerd), its
 * declared capabilities, short policy timeouts (Bun's a multiple of its 4 s tick, as the README
 * advises), the environment that sets them, and the window a head deadline may close a connection
 * in. Where the platform imposes the idle timeout (workerd), IDLE_MS is its latest close, and the
 * environment sets nothing the platform owns.
 */
export function suiteSetup<T extends Target>(engine: T, shutdownMs: number) {
  const runtime = runnerOf(engine);
  const caps: (typeof capabilities)[T] = capabilities[engine];
  const IDLE_MS = caps.fixedIdleTimeoutMs?.max ?? (runtime === "bun" ? 4_000 : 2_000);
  const HEADERS_MS = 1_500;
  const REQUEST_MS = 2_500;
  const policy: Record<string, string> = {
    IDLE_TIMEOUT: `${IDLE_MS}ms`,
    HEADERS_TIMEOUT: `${HEADERS_MS}ms`,
    REQUEST_TIMEOUT: `${REQUEST_MS}ms`,
    SHUTDOWN_TIMEOUT: `${shutdownMs}ms`,
  };
  const env = Object.fromEntries(Object.entries(policy).filter(([name]) => !Object.hasOwn(caps.ownedVariables, name)));
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
