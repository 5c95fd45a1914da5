import { describe, expect, test } from "bun:test";
import { completeResponses, fetchOnce, get, metric } from "../harness/http.ts";
import { connect, type RawClient, tryRequest } from "../harness/raw_client.ts";
import { spawnServer, startServer } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import type { Engine } from "../src/policy/types.ts";
import { SHUTDOWN_UNDER_LOAD, shutdownUnderLoad } from "./_hardening.ts";
import { EARLY_MS, expectBetween, suiteSetup } from "./_suite.ts";

/**
 * WORKERS=2: the policy's idle, client-disconnect, shutdown-under-load and bad-configuration
 * scenarios, with two server processes sharing the port behind one supervisor, on each runtime's
 * default engine; plus what only a supervisor does: one `listening`, one scrape for all, restarts.
 */
const WORKERS = "2";

for (const target of ["node-http", "bun-serve", "deno-per-connection"] as const satisfies readonly Engine[]) {
  const { caps, env, IDLE_MS, IDLE_LATE_MS, SHUTDOWN_MS } = suiteSetup(target, 3_000);
  const withWorkers = { ...env, WORKERS };

  describe(`${target}: WORKERS=2`, () => {
    test.concurrent(
      "one listening event names the shared URL and both workers; each serves, and one scrape of /metrics counts both",
      () =>
        using(async (defer) => {
          const server = await startServer(target, withWorkers);
          defer(() => server.kill());
          const listening = server.named("listening");
          expect(listening).toHaveLength(1);
          const workers = listening[0]!.workers as Array<{ worker: number; pid: number }>;
          expect(workers.map((w) => w.worker).sort()).toEqual([0, 1]);
          expect(new Set(workers.map((w) => w.pid)).size).toBe(2);
          expect(server.named("worker_listening")).toHaveLength(2);

          // Fresh connections spread over the workers (the kernel picks one per connection; all 40
          // on one worker has odds of 2^-39), and each is counted before it is answered: the first
          // scrape counts exactly these, which takes both workers' counters summed.
          const REQUESTS = 40;
          for (let i = 0; i < REQUESTS; i++) expect((await fetchOnce(`${server.url}/`)).status).toBe(200);
          const metrics = await (await fetchOnce(`${server.url}/metrics`)).text();
          expect(metric(metrics, 'http_requests_total{class="2xx"}')).toBe(REQUESTS);
          // prom-client's default metrics, combined as docs/workers.md#metrics says: CPU summed into
          // one series, the version once, process gauges per worker.
          expect(metric(metrics, "process_cpu_seconds_total")).toBeGreaterThan(0);
          expect(metrics.match(/^nodejs_version_info\{/gm)).toHaveLength(1);
          for (const worker of ["0", "1"]) {
            expect(metric(metrics, `process_open_fds{worker="${worker}"}`)).toBeGreaterThan(2);
            expect(metric(metrics, `process_start_time_seconds{worker="${worker}"}`)).toBeGreaterThan(0);
            expect(metric(metrics, `nodejs_heap_size_used_bytes{worker="${worker}"}`)).toBeGreaterThan(0);
          }
        }),
      30_000,
    );

    test.concurrent(
      "an idle keep-alive connection is closed after IDLE_TIMEOUT, whichever worker has it",
      () =>
        using(async (defer) => {
          const server = await startServer(target, withWorkers);
          defer(() => server.kill());
          const clients: RawClient[] = await Promise.all(Array.from({ length: 4 }, () => connect(server.port)));
          defer(() => clients.forEach((c) => c.destroy()));
          const answeredAt = await Promise.all(clients.map((c) => {
            c.write(get("/"));
            return c.waitFor((d) => completeResponses(d) === 1, 2_000, "a response");
          }));
          const closedAt = await Promise.all(clients.map((c) => c.waitForClose(IDLE_MS + IDLE_LATE_MS + 1_000)));
          closedAt.forEach((at, i) => expectBetween(at - answeredAt[i]!, IDLE_MS - EARLY_MS, IDLE_MS + IDLE_LATE_MS));
          if (caps.logsIdleTimeout) expect(server.named("idle_timeout").length).toBeGreaterThanOrEqual(4);
        }),
      30_000,
    );

    test.concurrent(
      "a client that leaves mid-response produces one request_aborted within 100 ms",
      () =>
        using(async (defer) => {
          const server = await startServer(target, withWorkers);
          defer(() => server.kill());
          const client = await connect(server.port);
          defer(() => client.destroy());
          client.write(get("/slow?ms=5000"));
          await client.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk");
          const leftAt = Date.now();
          client.destroy();
          const aborted = await server.waitForEvent("request_aborted", 2_000);
          expect(Date.parse(aborted.time) - leftAt).toBeLessThanOrEqual(100);
          expect(server.named("request_aborted")).toHaveLength(1);
        }),
      30_000,
    );

    test.concurrent(
      "SIGTERM to npm start: requests in flight on both workers finish, nothing is cut, new clients are refused, exit 0",
      () =>
        using(async (defer) => {
          const server = await startServer(target, withWorkers);
          defer(() => server.kill());
          const busy = await Promise.all(Array.from({ length: 6 }, () => connect(server.port)));
          defer(() => busy.forEach((c) => c.destroy()));
          for (const client of busy) client.write(get("/slow?ms=1000"));
          await Promise.all(busy.map((c) => c.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk")));
          const signalledAt = Date.now();
          server.signal("SIGTERM");
          await Promise.all(busy.map((c) => c.waitFor((d) => completeResponses(d) === 1, 3_000, "the in-flight response")));
          expect(await server.exitCode(6_000)).toBe(0);
          expect(Date.now() - signalledAt).toBeLessThanOrEqual(3_000);
          expect(["refused", "dropped"]).toContain(await tryRequest(server.port));
          const completes = server.named("shutdown_complete");
          // Each worker's own, with nothing cut, then the supervisor's, with nothing killed.
          expect(completes.filter((e) => e.cut !== undefined).map((e) => e.cut)).toEqual([0, 0]);
          expect(completes.filter((e) => e.killed !== undefined).map((e) => e.killed)).toEqual([0]);
        }),
      30_000,
    );

    // Alone, as in the hardening suite: it loads the machine on purpose, and its floor of completed
    // requests is only meaningful when nothing else does.
    test(SHUTDOWN_UNDER_LOAD, shutdownUnderLoad(target, withWorkers, SHUTDOWN_MS), 30_000);

    test.concurrent(
      "invalid configuration exits 2 before any worker starts, naming each variable",
      () =>
        using(async (defer) => {
          const server = spawnServer(target, { ...withWorkers, IDLE_TIMEOUT: "15" });
          defer(() => server.kill());
          expect(await server.exitCode()).toBe(2);
          expect(server.stderr).toContain('IDLE_TIMEOUT "15" has no unit');
          expect(server.named("worker_listening")).toEqual([]);
        }),
      30_000,
    );

    test.concurrent(
      "a worker that dies is started again, after a pause, and the server goes on serving",
      () =>
        using(async (defer) => {
          const server = await startServer(target, withWorkers);
          defer(() => server.kill());
          const [first] = server.named("listening")[0]!.workers as Array<{ pid: number }>;
          process.kill(first!.pid, "SIGKILL");
          const exited = await server.waitForEvent("worker_exited", 2_000);
          expect(exited).toMatchObject({ level: "error", pid: first!.pid, signal: "SIGKILL" });
          expect(Number(exited.restartInMs)).toBeGreaterThan(0);
          const restarted = await server.waitForEvent("worker_restarted", 5_000);
          expect(restarted.pid).not.toBe(first!.pid);
          await server.waitForEvent("worker_listening", 10_000, (e) => e.pid === restarted.pid);
          expect((await fetchOnce(`${server.url}/`)).status).toBe(200);
        }),
      30_000,
    );
  });
}

test.concurrent(
  "on Bun, an engine that cannot share the port (bun-node-http) is refused with WORKERS=2, and the supervisor exits 2",
  () =>
    using(async (defer) => {
      const server = spawnServer("bun-node-http", { WORKERS });
      defer(() => server.kill());
      expect(await server.exitCode()).toBe(2);
      expect(server.stderr).toContain("which Bun's node:http cannot");
      expect(server.named("worker_refused").length).toBeGreaterThanOrEqual(1);
    }),
  30_000,
);

test.concurrent("WORKERS must be auto or a whole number from 1 to 256", () =>
  using(async (defer) => {
    for (const value of ["0", "257", "many", "1.5"]) {
      const server = spawnServer("node-http", { WORKERS: value });
      defer(() => server.kill());
      expect(await server.exitCode()).toBe(2);
      expect(server.stderr).toStartWith(`WORKERS "${value}"`);
    }
  }), 30_000);
