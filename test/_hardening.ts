import { describe, expect, test } from "bun:test";
import type { Engine } from "../src/policy/types.ts";
import { completeResponses, fetchOnce, get, metric } from "../harness/http.ts";
import { connect, type RawClient } from "../harness/raw_client.ts";
import { openFds, rss } from "../harness/proc.ts";
import { spawnServer, startServer } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import { type ServerProcess } from "../harness/process.ts";
import { EARLY_MS, expectBetween, suiteSetup } from "./_suite.ts";
import { malformedRequests, mulberry32 } from "./_malformed.ts";

/** "Back to baseline" means within this many descriptors of it (the issue's bound). */
const FD_SLACK = 5;

/** Waits (bounded) until `pid` has at most `max` open descriptors; returns the last count. */
async function fdsSettle(pid: number, max: number, timeoutMs: number): Promise<number> {
  const until = Date.now() + timeoutMs;
  let fds = openFds(pid);
  while (fds > max && Date.now() < until) {
    await Bun.sleep(50);
    fds = openFds(pid);
  }
  return fds;
}

/** Runs `work` over `items` with at most `parallel` at once. */
async function pool<T>(items: T[], parallel: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < items.length) {
        const index = next++;
        await work(items[index]!, index);
      }
    }),
  );
}

/** The status code of the first response in `data`, or 0 when there is none. */
function statusOf(data: string): number {
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(data);
  return match ? Number(match[1]) : 0;
}

/**
 * Hostile clients, faults and load, against a real server process per scenario. The scenarios run
 * one at a time (not concurrently with each other or the conformance suite's timing tests): each
 * one loads the machine on purpose.
 */
export function hardening(target: Engine): void {
  const { runtime, caps, env, IDLE_MS, REQUEST_MS, SHUTDOWN_MS, IDLE_LATE_MS, headersWindow } = suiteSetup(target, 3_000);
  /** The longest a connection with an incomplete head may stay open, on this engine. */
  const headCloseMaxMs = headersWindow.max;

  /** Starts a server for one test and stops it afterwards, whatever happens. */
  function withServer(
    fn: (server: ServerProcess, pid: number, defer: (cleanup: () => unknown) => void) => Promise<void>,
    extraEnv: Record<string, string> = {},
    nofile?: number,
  ) {
    return () =>
      using(async (defer) => {
        const server = await startServer(target, { ...env, ...extraEnv }, 15_000, { nofile });
        defer(() => server.kill());
        await fn(server, Number(server.named("listening")[0]!.pid), defer);
        expect(server.proc.exitCode).toBeNull();
        expect(server.nonJsonLines).toEqual([]);
      });
  }

  /** Opens `n` raw connections, `batch` at a time; every one is destroyed when the test ends. */
  async function openMany(port: number, n: number, defer: (cleanup: () => unknown) => void, batch = 50): Promise<RawClient[]> {
    const clients: RawClient[] = [];
    defer(() => clients.forEach((c) => c.destroy()));
    for (let i = 0; i < n; i += batch) {
      clients.push(...(await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => connect(port)))));
    }
    return clients;
  }

  describe(`${target}: hardening`, () => {
    const TRICKLERS = 300;
    test(
      `slowloris flood: ${TRICKLERS} trickling connections are closed by the head deadline while well-behaved clients see no errors`,
      withServer(async (server, pid, defer) => {
        const baseline = openFds(pid);
        const tricklers = await openMany(server.port, TRICKLERS, defer);
        // One timer for all of them: a byte each every 100 ms, a head that never ends.
        const head = `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: ${"a".repeat(1_000)}`;
        let sent = 0;
        const drip = setInterval(() => {
          for (const client of tricklers) if (client.closedAt === null) client.socket.write(head[sent % head.length]!);
          sent += 1;
        }, 100);
        defer(() => clearInterval(drip));

        // Well-behaved clients: 4 loops of fresh-connection GETs for as long as the flood lasts.
        const allClosed = Promise.all(tricklers.map((c) => c.closed));
        let flooding = true;
        void allClosed.then(() => (flooding = false));
        const outcomes: string[] = [];
        const goodClient = async () => {
          while (flooding) {
            const response = await fetchOnce(`${server.url}/healthz`).then(
              async (r) => `${r.status} ${await r.text()}`,
              (error: Error) => `error ${error.message}`,
            );
            outcomes.push(response);
          }
        };
        const good = Promise.all(Array.from({ length: 4 }, goodClient));
        await Promise.race([allClosed, Bun.sleep(headCloseMaxMs + 2_000)]);
        flooding = false;
        await good;

        const open = tricklers.filter((c) => c.closedAt === null).length;
        expect(open).toBe(0);
        const lifetimes = tricklers.map((c) => c.closedAt! - c.openedAt);
        expectBetween(Math.min(...lifetimes), headersWindow.min, headersWindow.max);
        expectBetween(Math.max(...lifetimes), headersWindow.min, headersWindow.max);
        if (caps.headersTimeoutSends408) {
          expect(tricklers.filter((c) => !c.data.startsWith("HTTP/1.1 408")).length).toBe(0);
        }
        expect(outcomes.length).toBeGreaterThanOrEqual(20);
        expect(outcomes.filter((o) => o !== '200 {"status":"ok"}')).toEqual([]);
        expect(await fdsSettle(pid, baseline + FD_SLACK, 2_000)).toBeLessThanOrEqual(baseline + FD_SLACK);
      }),
      headCloseMaxMs + 20_000,
    );

    const CYCLES = 2_000;
    test(
      `connection churn: ${CYCLES} cycles of connect, request, close leave fds at baseline and memory flat`,
      withServer(async (server, pid) => {
        const cycle = async () => {
          const client = await connect(server.port);
          try {
            client.write(get("/healthz"));
            await client.waitFor((d) => completeResponses(d) === 1, 2_000, "a response");
            client.socket.end();
            await client.waitForClose(2_000);
          } finally {
            client.destroy();
          }
        };
        const indices = (n: number) => Array.from({ length: n }, (_, i) => i);
        // Warm up first: the first thousand cycles compile code and size the heaps to the load.
        await pool(indices(1_000), 8, cycle);
        const fdsBefore = await fdsSettle(pid, Infinity, 0);
        const samples: number[] = [rss(pid)];
        await pool(indices(CYCLES), 8, async (_, i) => {
          await cycle();
          if (i % 250 === 249) samples.push(rss(pid));
        });
        const fdsAfter = await fdsSettle(pid, fdsBefore + FD_SLACK, 2_000);
        expect(fdsAfter).toBeLessThanOrEqual(fdsBefore + FD_SLACK);
        // Flat: the lowest reading of the second half against the lowest of the first (the lows are
        // between collections; the highs are wherever the collector happens to be). Node's heap is
        // still sizing itself here (4.8-6.3 MiB measured), so this catches only gross leaks (over
        // 12 KB a cycle); npm run bench's 50,000 cycles catch leaks down to about 1 KB a cycle.
        const half = samples.length >> 1;
        const growth = Math.min(...samples.slice(half)) - Math.min(...samples.slice(0, half));
        expect(growth).toBeLessThan(12 * 1_048_576);
      }),
      60_000,
    );

    const incident =
      "the incident: more idle connections than the fd limit; exhaustion is logged, nothing crashes, and new clients are served once idle ones are reaped";
    const noRecovery = caps.unsupported.fdExhaustionRecovery;
    (noRecovery ? (name: string, fn: () => Promise<void>, _timeoutMs: number) => test.skip(`${name} (skipped: ${noRecovery})`, fn) : test)(
      incident,
      withServer(
        async (server, pid, defer) => {
          const NOFILE = 256;
          const CONNECTIONS = 300;
          const baseline = openFds(pid);
          const listening = server.named("listening")[0]!;
          const clients = await openMany(server.port, CONNECTIONS, defer);
          const sentAt = Date.now();
          for (const client of clients) client.write(get("/"));
          if (listening.maxConnections !== null) {
            // An engine that counts connections closes the extra ones at once, before the limit.
            expect(listening.maxConnectionsFrom).toBe("fd limit");
            expect(Number(listening.maxConnections)).toBeLessThan(NOFILE);
            const refused = await server.waitForEvent("connections_refused", 3_000);
            expect(refused.level).toBe("warn");
          } else {
            // Bun.serve cannot count its connections: it stops accepting at the limit, and the
            // descriptor watchdog says so.
            const exhausted = await server.waitForEvent("fd_exhausted", 3_000);
            expect(exhausted.limit).toBe(NOFILE);
          }
          // Every connection either got its answer and then idled, or was turned away without one;
          // once IDLE_TIMEOUT has reaped the idle ones (and Bun has accepted its waiting backlog,
          // which then idles too), all are closed.
          const settleBy = IDLE_MS + IDLE_LATE_MS + 1_000;
          const until = sentAt + 2 * settleBy + 2_000;
          await Promise.race([Promise.all(clients.map((c) => c.closed)), Bun.sleep(until - Date.now())]);
          expect(clients.filter((c) => c.closedAt === null).length).toBe(0);
          const answered = clients.filter((c) => completeResponses(c.data) === 1).length;
          const turnedAway = clients.filter((c) => c.data === "").length;
          expect(answered + turnedAway).toBe(CONNECTIONS);
          expect(answered).toBeGreaterThanOrEqual(NOFILE / 2);
          expect(server.proc.exitCode).toBeNull();
          const fresh = await fetchOnce(`${server.url}/healthz`);
          expect(fresh.status).toBe(200);
          expect(await fdsSettle(pid, baseline + FD_SLACK, 2_000)).toBeLessThanOrEqual(baseline + FD_SLACK);
          expect(server.stderr).toBe("");
        },
        {},
        256,
      ),
      60_000,
    );

    test(SHUTDOWN_UNDER_LOAD, shutdownUnderLoad(target, env, SHUTDOWN_MS), 30_000);

    /** Writes `bytes` on a fresh connection; resolves with what came back once the server closed it. */
    async function exchange(port: number, bytes: string | Buffer, closeWithinMs: number, defer: (cleanup: () => unknown) => void) {
      const client = await connect(port);
      defer(() => client.destroy());
      const sentAt = Date.now();
      client.socket.write(bytes);
      const closedAt = await client.waitForClose(closeWithinMs);
      const headEnd = client.data.indexOf("\r\n\r\n");
      return {
        status: statusOf(client.data),
        head: client.data.slice(0, Math.max(headEnd, 0)).toLowerCase(),
        body: headEnd < 0 ? "" : client.data.slice(headEnd + 4),
        closedAfterMs: closedAt - sentAt,
      };
    }

    test(
      "bad input, case by case: broken request lines and headers get 400 (or the runtime's own answer), oversized heads the runtime's 431 (or 400), oversized bodies 413 JSON, and each connection is closed at once",
      withServer(async (server, pid, defer) => {
        const baseline = openFds(pid);
        const head = (line: string, ...headers: string[]) => [line, "Host: 127.0.0.1", ...headers, "", ""].join("\r\n");
        for (
          const bytes of [
            "GARBAGE\r\n\r\n",
            head("GET / HTTP/1.1", "Bad Header: v"),
            head("GET / HTTP/1.1", "X-A: a\x00b"),
            head("GET /\x01path HTTP/1.1"),
            head("POST /echo HTTP/1.1", "Content-Length: abc"),
            head("POST /echo HTTP/1.1", "Transfer-Encoding: chunked") + "ZZ\r\nhello\r\n0\r\n\r\n",
          ]
        ) {
          const answer = await exchange(server.port, Buffer.from(bytes, "latin1"), 1_000, defer);
          expect(caps.malformedStatuses).toContain(answer.status);
          // Node's parser errors are answered by the adapter, with a JSON body like the app's.
          if (runtime === "node") expect(JSON.parse(answer.body).error).toBe("bad_request");
        }
        const big = await exchange(server.port, head("GET / HTTP/1.1", `X-Big: ${"a".repeat(70_000)}`), 1_000, defer);
        expect(big.status).toBe(caps.headTooLargeStatus);

        // BODY_LIMIT (1 MiB by default): a declared length over it is refused before it is read,
        // and a chunked body once it grows past it; both close the connection.
        const tooLong = head("POST /echo HTTP/1.1", `Content-Length: ${2 * 1_048_576}`);
        const chunk = `${(500_000).toString(16)}\r\n${"x".repeat(500_000)}\r\n`;
        const chunked = head("POST /echo HTTP/1.1", "Transfer-Encoding: chunked") + chunk.repeat(3) + "0\r\n\r\n";
        for (const bytes of [tooLong + "x".repeat(100_000), chunked]) {
          const answer = await exchange(server.port, bytes, 1_000, defer);
          expect(answer.status).toBe(413);
          expect(JSON.parse(answer.body)).toEqual({
            error: "payload_too_large",
            message: "The request body is larger than the limit of 1048576 bytes",
          });
        }

        // The app's own errors: JSON that names what was wrong.
        const query = await fetchOnce(`${server.url}/slow?ms=abc`);
        expect(query.status).toBe(400);
        expect((await query.json()).issues).toEqual([{ parameter: "ms", message: "ms must be an integer from 0 to 600000" }]);
        const missing = await fetchOnce(`${server.url}/nope`);
        expect(missing.status).toBe(404);
        expect(await missing.json()).toEqual({ error: "not_found", message: "No route for GET /nope" });

        expect(server.named("handler_error")).toEqual([]);
        expect(await fdsSettle(pid, baseline + FD_SLACK, 2_000)).toBeLessThanOrEqual(baseline + FD_SLACK);
      }),
      30_000,
    );

    const unfinishedGet = caps.unsupported.unfinishedGetBody;
    const unfinishedGetName =
      "a GET declaring a body that never arrives is closed with its response, or by REQUEST_TIMEOUT or the idle timer";
    if (unfinishedGet) test.skip(`${unfinishedGetName} (skipped: ${unfinishedGet})`, () => {});
    else {
      test(
        unfinishedGetName,
        withServer(async (server, _pid, defer) => {
          const answer = await exchange(
            server.port,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nab",
            Math.max(REQUEST_MS + caps.deadlineLateMs, IDLE_MS + IDLE_LATE_MS) + 1_000,
            defer,
          );
          expect(answer.status).toBe(200);
          // The node:http engines answer such a GET with `Connection: close` and end the
          // connection with the response; otherwise a deadline closes it, never earlier.
          if (/^connection: close$/m.test(answer.head)) expect(answer.closedAfterMs).toBeLessThanOrEqual(1_000);
          else {
            expectBetween(
              answer.closedAfterMs,
              Math.min(REQUEST_MS, IDLE_MS) - EARLY_MS,
              Math.max(REQUEST_MS + caps.deadlineLateMs, IDLE_MS + IDLE_LATE_MS),
            );
          }
        }),
        20_000,
      );
    }

    const MALFORMED = 1_000;
    const seed = Number(process.env.HARDENING_SEED ?? 20_261_126);
    test(
      `bad input: ${MALFORMED} seeded malformed requests (seed ${seed}, HARDENING_SEED to change) get a 4xx, a 505 or a close, never a server error; the server still answers and its fds return to baseline`,
      withServer(async (server, pid) => {
        const baseline = openFds(pid);
        const requests = malformedRequests(mulberry32(seed), MALFORMED);
        const statuses = new Map<number, number>();
        const stuck: string[] = [];
        const serverErrors: string[] = [];
        await pool(requests, 16, async (bytes) => {
          const client = await connect(server.port);
          try {
            client.socket.write(bytes);
            // Half-close, as a client that has said all it will say: the server must close too,
            // at the latest when the head or body deadline passes.
            client.socket.end();
            await client.waitForClose(headCloseMaxMs + REQUEST_MS + 1_000).catch(() => {
              stuck.push(JSON.stringify(bytes.toString("latin1").slice(0, 120)));
            });
            const status = statusOf(client.data);
            statuses.set(status, (statuses.get(status) ?? 0) + 1);
            // 505 (HTTP Version Not Supported) is a protocol answer, not a failure: Bun gives it to a
            // version it cannot parse, bare-LF heads included.
            if (status >= 500 && status !== 505) {
              serverErrors.push(`${JSON.stringify(bytes.toString("latin1").slice(0, 200))} -> ${client.data.slice(0, 300)}`);
            }
          } finally {
            client.destroy();
          }
        });
        expect(stuck).toEqual([]);
        expect(serverErrors).toEqual([]);
        // The generator's mix must actually reach the error paths, not only the happy one.
        expect([...statuses.keys()].filter((s) => s >= 400 && s < 500).length).toBeGreaterThanOrEqual(2);
        expect(server.proc.exitCode).toBeNull();
        const health = await fetchOnce(`${server.url}/healthz`);
        expect(health.status).toBe(200);
        expect(await fdsSettle(pid, baseline + FD_SLACK, 2_000)).toBeLessThanOrEqual(baseline + FD_SLACK);
        expect(server.named("handler_error")).toEqual([]);
      }),
      90_000,
    );

    test(
      "MAX_CONNECTIONS: connections past the limit are closed at once and counted; room frees up as connections close",
      withServer(async (server, pid, defer) => {
        const MAX = 20;
        const listening = server.named("listening")[0]!;
        expect(listening.maxConnections).toBe(MAX);
        expect(listening.maxConnectionsFrom).toBe("MAX_CONNECTIONS");
        const held = await openMany(server.port, MAX, defer);
        for (const client of held) client.write(get("/"));
        await Promise.all(held.map((c) => c.waitFor((d) => completeResponses(d) === 1, 2_000, "a response")));
        const extra = await openMany(server.port, 10, defer);
        for (const client of extra) client.write(get("/"));
        const closedAt = await Promise.all(extra.map((c) => c.waitForClose(1_000)));
        expect(Math.max(...closedAt.map((t, i) => t - extra[i]!.openedAt))).toBeLessThanOrEqual(500);
        expect(extra.map((c) => c.data)).toEqual(extra.map(() => ""));
        const refused = await server.waitForEvent("connections_refused", 2_000);
        expect(refused.max).toBe(MAX);
        const refusedSoFar = () => server.named("connections_refused").reduce((n, e) => n + Number(e.count), 0);
        // The first refusal is logged at once, the rest in a summary within a second.
        await server.waitForEvent("connections_refused", 2_500, () => refusedSoFar() >= 10);
        expect(refusedSoFar()).toBe(10);
        if (runtime === "bun") expect(listening.engine).toBe("bun-node-http");
        // Room again once held connections close.
        const fdsHeld = openFds(pid);
        held.slice(0, 5).forEach((c) => c.destroy());
        expect(await fdsSettle(pid, fdsHeld - 5, 2_000)).toBeLessThanOrEqual(fdsHeld - 5);
        const metrics = await fetchOnce(`${server.url}/metrics`).then((r) => r.text());
        expect(metric(metrics, "connections_refused_total")).toBe(10);
        // Bun.serve cannot count its connections: on Bun, a limit is the auto engine's cue to pick bun-node-http.
      }, { MAX_CONNECTIONS: "20", ...(runtime === "bun" ? { BUN_ENGINE: "auto" } : {}) }),
      20_000,
    );

    test(
      "a MAX_CONNECTIONS the fd limit cannot hold stops the server at startup, naming the variable",
      () =>
        using(async (defer) => {
          const server = spawnServer(target, { ...env, MAX_CONNECTIONS: "1000" }, { nofile: 256 });
          defer(() => server.kill());
          expect(await server.exitCode()).toBe(2);
          expect(server.stderr).toStartWith('MAX_CONNECTIONS "1000" is more than this process can open: its file-descriptor limit is 256');
          expect(server.named("listening")).toEqual([]);
        }),
      15_000,
    );
  });
}

export const SHUTDOWN_UNDER_LOAD =
  "shutdown under load: every request completes or is turned away before a byte; none is cut mid-body; exit within SHUTDOWN_TIMEOUT";

/**
 * Twelve clients keep keep-alive connections busy with short, slow and streaming requests, and
 * reconnect when closed; SIGTERM comes in the middle. Shared with the WORKERS=2 suite.
 */
export function shutdownUnderLoad(target: Engine, env: Record<string, string>, SHUTDOWN_MS: number): () => Promise<void> {
  return () =>
    using(async (defer) => {
      const server = await startServer(target, env);
      defer(() => server.kill());
      const paths = ["/", "/slow?ms=400", "/stream?chunks=4&interval=100", "/healthz"];
      const tally = { completed: 0, turnedAway: 0, refused: 0, cut: [] as string[] };
      let running = true;
      // A client keeps one keep-alive connection busy, and reconnects when it is closed.
      const loadClient = async (w: number) => {
        for (let i = w; running; i++) {
          let client: RawClient;
          try {
            client = await connect(server.port);
          } catch {
            tally.refused += 1; // nothing listens any more: refused at connect
            return;
          }
          try {
            for (let done = 0; running; done++) {
              client.write(get(paths[i++ % paths.length]!));
              const before = client.data.length;
              try {
                await client.waitFor((d) => completeResponses(d) === done + 1, 5_000, "a response");
                tally.completed += 1;
              } catch {
                if (client.data.length === before) tally.turnedAway += 1;
                else tally.cut.push(client.data.slice(before, before + 200));
                break;
              }
            }
          } finally {
            client.destroy();
          }
        }
      };
      const clients = Promise.all(Array.from({ length: 12 }, (_, w) => loadClient(w)));
      // Let the load run, then signal while requests are in flight.
      await Bun.sleep(800);
      const completedBeforeSignal = tally.completed;
      const signalledAt = Date.now();
      server.signal("SIGTERM");
      const code = await server.exited;
      const exitedAfter = Date.now() - signalledAt;
      // Keep the load on until connecting is refused: the clients stop by themselves then.
      await Promise.race([clients, Bun.sleep(3_000)]);
      running = false;
      await clients;

      expect(code).toBe(0);
      expect(exitedAfter).toBeLessThanOrEqual(SHUTDOWN_MS + 1_000);
      // Each server's (every worker's, with WORKERS) in flight and cut; a supervisor's killed none.
      const started = server.named("shutdown_started").filter((e) => e.inFlight !== undefined);
      expect(started.reduce((n, e) => n + Number(e.inFlight), 0)).toBeGreaterThanOrEqual(1);
      const complete = server.named("shutdown_complete");
      expect(complete.filter((e) => e.cut !== undefined).map((e) => e.cut)).toEqual(started.map(() => 0));
      expect(complete.filter((e) => e.killed !== undefined && e.killed !== 0)).toEqual([]);
      expect(tally.cut).toEqual([]);
      // The load was on when the signal came: as many answers as clients by then, whatever the
      // machine's speed (a count of answers would be a throughput floor, which a busy machine misses).
      expect(completedBeforeSignal).toBeGreaterThanOrEqual(12);
      expect(tally.refused).toBeGreaterThanOrEqual(1);
    });
}
