/**
 * Readiness (contract clause 8) and SHUTDOWN_DELAY, against real server processes started through
 * the npm scripts: `/readyz` 200 while the server takes work and 503 from the signal on, `/healthz`
 * 200 to the end, and during the delay everything else served as before.
 */
import { describe, expect, test } from "bun:test";
import { completeResponses, fetchOnce, get } from "../harness/http.ts";
import { connect, type RawClient, tryRequest } from "../harness/raw_client.ts";
import { startServer } from "../harness/servers.ts";
import { using, within } from "../harness/wait.ts";
import type { Engine } from "../src/policy/types.ts";
import { EARLY_MS, expectBetween } from "./_suite.ts";

const ENGINES: readonly Engine[] = ["node-http", "bun-serve", "bun-node-http", "deno-per-connection", "deno-node-http"];
const DELAY_MS = 1_500;
/** How late the exit may come after the delay: the drain, the exit, and a loaded machine. */
const EXIT_LATE_MS = 2_000;
/** IDLE_TIMEOUT well past the test, so only the shutdown closes a keep-alive connection. */
const env = { IDLE_TIMEOUT: "30s" };

async function open(port: number, defer: (cleanup: () => unknown) => void): Promise<RawClient> {
  const client = await connect(port);
  defer(() => client.destroy());
  return client;
}

async function status(url: string): Promise<[number, unknown]> {
  const response = await fetchOnce(url, 2_000);
  const body = response.headers.get("content-type")?.startsWith("application/json") ? await response.json() : await response.text();
  return [response.status, body];
}

for (const engine of ENGINES) {
  describe(`${engine}: readiness`, () => {
    test.concurrent(
      "during SHUTDOWN_DELAY /readyz answers 503 while /healthz and the app are still served; then the listener closes and the server exits 0",
      () =>
        using(async (defer) => {
          const server = await startServer(engine, { ...env, SHUTDOWN_DELAY: `${DELAY_MS}ms` });
          defer(() => server.kill());
          expect(await status(`${server.url}/readyz`)).toEqual([200, { status: "ready" }]);
          expect(await status(`${server.url}/healthz`)).toEqual([200, { status: "ok" }]);

          const keep = await open(server.port, defer);
          keep.write(get("/"));
          await keep.waitFor((d) => completeResponses(d) === 1, 2_000, "a response");
          const busy = await open(server.port, defer);
          busy.write(get("/slow?ms=500"));
          await busy.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk");

          const signalledAt = Date.now();
          server.signal("SIGTERM");
          const exited = server.exited.then((code) => ({ code, at: Date.now() }));
          const started = await server.waitForEvent("shutdown_started", 1_000);
          expect(started.shutdownDelayMs).toBe(DELAY_MS);

          // Within the delay: not ready, but alive, and serving new and keep-alive connections alike.
          expect(await status(`${server.url}/readyz`)).toEqual([503, { status: "draining" }]);
          expect(await status(`${server.url}/healthz`)).toEqual([200, { status: "ok" }]);
          expect(await status(`${server.url}/`)).toEqual([200, "Hello World"]);
          keep.write(get("/"));
          await keep.waitFor((d) => completeResponses(d) === 2, 1_000, "a second response on the keep-alive connection");
          await busy.waitFor((d) => completeResponses(d) === 1, 2_000, "the in-flight response");
          expect(Date.now() - signalledAt).toBeLessThan(DELAY_MS - EARLY_MS);

          // Then the drain: the idle keep-alive connections close at the end of the delay, not before.
          const keepClosedAt = await keep.waitForClose(DELAY_MS + 1_000);
          expectBetween(keepClosedAt - signalledAt, DELAY_MS - EARLY_MS, DELAY_MS + 1_000);
          expectBetween((await busy.waitForClose(1_000)) - signalledAt, DELAY_MS - EARLY_MS, DELAY_MS + 1_000);
          // A new client is refused, or dropped unanswered from the backlog of the listener being closed.
          expect(["refused", "dropped"]).toContain(await tryRequest(server.port));

          const exit = await within(exited, DELAY_MS + EXIT_LATE_MS, "exit");
          expect(exit.code).toBe(0);
          expectBetween(exit.at - signalledAt, DELAY_MS - EARLY_MS, DELAY_MS + EXIT_LATE_MS);
          const complete = server.named("shutdown_complete");
          expect(complete).toHaveLength(1);
          expect(complete[0]!.cut).toBe(0);
          expect(server.nonJsonLines).toEqual([]);
        }),
      20_000,
    );

    test.concurrent(
      "with the default SHUTDOWN_DELAY of 0 the server stops being ready and exits at once",
      () =>
        using(async (defer) => {
          const server = await startServer(engine, env);
          defer(() => server.kill());
          expect(await status(`${server.url}/readyz`)).toEqual([200, { status: "ready" }]);
          const signalledAt = Date.now();
          server.signal("SIGTERM");
          const exited = server.exited.then((code) => ({ code, at: Date.now() }));
          const exit = await within(exited, 2_000, "exit");
          expect(exit.code).toBe(0);
          expectBetween(exit.at - signalledAt, 0, 1_000);
          expect(server.named("shutdown_started")[0]?.shutdownDelayMs).toBe(0);
        }),
      20_000,
    );
  });
}
