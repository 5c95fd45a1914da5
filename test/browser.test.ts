import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Browser, CHROMIUM, launchChromium } from "../harness/chromium.ts";
import { freePort } from "../harness/ports.ts";
import { ServerProcess } from "../harness/process.ts";
import { BUN, DENO, PROJECT_PATH, serverNode, startListening } from "../harness/servers.ts";
import { using, within } from "../harness/wait.ts";
import type { Runtime } from "../src/policy/types.ts";

/**
 * A real browser across a shutdown (issue #20): two servers share one port (`reusePort`, as WORKERS
 * does, or two instances behind a balancer), headless Chromium holds an EventSource and a WebSocket
 * on one of them, and that one gets SIGTERM. The page's EventSource must be told to reconnect
 * (`retry:` and a clean end), reconnect to the other server and resume after the last event id it
 * saw; its WebSocket must see `1001 server shutting down`; and the server must exit as soon as both
 * have ended, far within SHUTDOWN_TIMEOUT (10 s here).
 */

const SKIP = CHROMIUM ? undefined : "chromium is not installed: apt-get install chromium";
const ENTRY = "test/_reuse_port_entry.ts";
const COMMANDS: Record<Runtime, () => string[]> = {
  node: () => [serverNode(), ENTRY],
  bun: () => [BUN, ENTRY],
  deno: () => [DENO, "run", "--allow-all", "--config", "deno.json", ENTRY],
};

interface Results {
  events: Array<{ id: string; n: number; pid: number }>;
  opens: number;
  errors: number;
  ws: { pid: number; open: boolean; code?: number; reason?: string } | null;
}

/** Polls the page's results until `ready` holds (bounded). */
async function until(page: { evaluate<T>(e: string): Promise<T> }, ready: (r: Results) => boolean, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Undefined until the page has loaded.
    const results = await page.evaluate<Results | undefined>("window.results");
    if (results && ready(results)) return results;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs}ms: ${JSON.stringify(results)}`);
    await Bun.sleep(50);
  }
}

let browser: Browser | undefined;
beforeAll(async () => {
  if (!SKIP) browser = await launchChromium();
}, 20_000);
afterAll(async () => {
  await browser?.close();
});

describe.skipIf(SKIP !== undefined)(`headless Chromium across a SIGTERM${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  for (const runtime of ["node", "bun", "deno"] as const) {
    test(
      `${runtime}: the page's EventSource resumes on the other server after the last id, its WebSocket sees 1001, and the server exits at once`,
      () =>
        using(async (defer) => {
          const port = await freePort();
          const env = { ...process.env, PATH: PROJECT_PATH, PORT: String(port) } as Record<string, string>;
          const servers = await Promise.all([0, 1].map(() => startListening(() => new ServerProcess(COMMANDS[runtime](), env))));
          for (const server of servers) defer(() => server.kill());
          const pidOf = (server: ServerProcess) => Number(server.named("listening")[0]!.pid);

          const page = await browser!.open(`http://127.0.0.1:${port}/page`);
          const before = await until(page, (r) => r.events.length >= 3, 10_000, "three events");
          const holder = before.events.at(-1)!.pid;
          const leaving = servers.find((server) => pidOf(server) === holder)!;
          const staying = servers.find((server) => server !== leaving)!;
          await page.evaluate(`openSocketTo(${holder}), true`);
          await until(page, (r) => r.ws?.open === true, 10_000, "a WebSocket on the same server");

          const signalledAt = Date.now();
          leaving.signal("SIGTERM");
          const code = await within(leaving.exited, 5_000, "the signalled server's exit");
          const exitedAfterMs = Date.now() - signalledAt;
          const after = await until(
            page,
            (r) => r.events.some((e) => e.pid === pidOf(staying) && e.n > before.events.at(-1)!.n) && r.ws?.open === false,
            10_000,
            "events from the other server, and the WebSocket's close",
          );

          expect(code).toBe(0);
          // Both ended at step 5, in milliseconds, not at SHUTDOWN_TIMEOUT (10 s).
          expect(exitedAfterMs).toBeLessThan(3_000);
          expect(leaving.named("shutdown_complete")[0]).toMatchObject({ cut: 0 });
          expect(after.ws).toEqual({ pid: holder, open: false, code: 1001, reason: "server shutting down" });
          // The stream ended cleanly and the EventSource reconnected: one more open, to the other server.
          expect(after.opens).toBe(2);
          const lastFromLeaving = after.events.filter((e) => e.pid === holder).at(-1)!;
          const firstFromStaying = after.events.find((e) => e.pid === pidOf(staying))!;
          // Resumed after the last id the page saw: nothing lost, nothing repeated.
          expect(firstFromStaying.n).toBe(lastFromLeaving.n + 1);
          expect(after.events.map((e) => e.n)).toEqual(after.events.map((_, i) => i + 1));
        }),
      40_000,
    );
  }
});
