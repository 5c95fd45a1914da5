/**
 * Contract clause 7, "nothing waits on nothing" (issue #11): on SIGTERM, connections that sent
 * nothing, sent part of a head, or are idle after a response are closed at once; only a request
 * in flight holds the exit back, an upload whose body is still arriving included
 * (docs/runtimes.md#node-close-leaves-some-connections-open).
 */
import { describe, expect, test } from "bun:test";
import { completeResponses, get } from "../harness/http.ts";
import { connect, type RawClient } from "../harness/raw_client.ts";
import { startServer } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import type { Engine } from "../src/policy/types.ts";

const ENGINES: Engine[] = ["node-http", "bun-serve", "bun-node-http", "deno-per-connection", "deno-node-http"];

/** Long, so that only the shutdown can close a connection within the test. */
const ENV = { SHUTDOWN_TIMEOUT: "10s", IDLE_TIMEOUT: "30s", HEADERS_TIMEOUT: "20s", REQUEST_TIMEOUT: "30s" };
const SLOW_MS = 1_500;
/** How soon after the signal a connection with nothing in flight must be closed. */
const AT_ONCE_MS = 500;
/** How soon after its response the busy connection must be closed. */
const AFTER_RESPONSE_MS = 500;
/** When the in-flight upload sends the rest of its body, after the signal. */
const UPLOAD_REST_AFTER_MS = 600;
/** How long past the in-flight request the process may take to exit. */
const EXIT_SLACK_MS = 1_000;

/**
 * Engines that cannot close a half-sent head while a request is in flight: Bun.serve shows no
 * connection without a request, so the adapter closes such connections once no request is left
 * (adapters/bun/mod.ts). They still never hold the exit back.
 */
const PARTIAL_AFTER_WORK = new Set<Engine>(["bun-serve"]);

/** A head without its final blank line: the server is still waiting for the rest. */
const PARTIAL_HEAD = "GET / HTTP/1.1\r\nHost: x\r\n";

/** How long after `since` the connection closed, or null if it was still open at `timeoutMs`. */
async function closedAfter(client: RawClient, since: number, timeoutMs: number): Promise<number | null> {
  try {
    return (await client.waitForClose(timeoutMs)) - since;
  } catch {
    return null;
  }
}

describe("graceful shutdown waits only for requests in flight", () => {
  for (const engine of ENGINES) {
    test.concurrent(
      `${engine}: silent, half-sent-head and idle connections close at once; the in-flight request finishes; exit 0 well before SHUTDOWN_TIMEOUT`,
      () =>
        using(async (defer) => {
          const server = await startServer(engine, ENV);
          defer(() => server.kill());
          const open = async () => {
            const client = await connect(server.port);
            defer(() => client.destroy());
            return client;
          };
          // Opened first, so the server has accepted them by the time the others are answered.
          const silent = await open();
          const partial = await open();
          partial.write(PARTIAL_HEAD);
          const idle = await open();
          idle.write(get("/"));
          await idle.waitFor((d) => completeResponses(d) === 1, 2_000, "a response");
          // In flight too: a head that completed, its body still arriving (the rest comes after the signal).
          const upload = await open();
          upload.write(`POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n12345`);
          const busy = await open();
          busy.write(get(`/slow?ms=${SLOW_MS}`));
          await busy.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk");
          for (const client of [silent, partial, idle, upload, busy]) expect(client.closedAt).toBeNull();

          const signalledAt = Date.now();
          server.signal("SIGTERM");
          const uploaded = Bun.sleep(UPLOAD_REST_AFTER_MS).then(() => {
            upload.write("67890");
            return upload.waitFor((d) => completeResponses(d) === 1, 2_000, "the upload's response").catch(() => null);
          });
          // Measured to the end (up to past SHUTDOWN_TIMEOUT), so a failure shows how late each was.
          const [partialMs, idleMs, uploadedAt, finishedAt, busyClosedAt, [code, exitedAt]] = await Promise.all([
            closedAfter(partial, signalledAt, 12_000),
            closedAfter(idle, signalledAt, 12_000),
            uploaded,
            busy.waitFor((d) => completeResponses(d) === 1, 12_000, "the in-flight response").catch(() => null),
            busy.waitForClose(12_000).catch(() => null),
            server.exitCode(12_000).then((code) => [code, Date.now()] as const),
          ]);
          const exitMs = exitedAt - signalledAt;
          // A silent connection the server never accepted (Bun's listener defers the accept until
          // the first byte) is still open to the client once the server has gone; a request on it
          // then meets no server: it is closed (reset) without an answer.
          const silentMs = await closedAfter(silent, signalledAt, 200);
          let silentUnseen: string | null = null;
          if (silentMs === null) {
            silent.write(get("/"));
            const closed = await closedAfter(silent, signalledAt, 2_000);
            silentUnseen = closed === null ? "still open" : JSON.stringify(silent.data);
          }
          const complete = server.named("shutdown_complete");
          const doneMs = finishedAt === null ? null : finishedAt - signalledAt;
          console.log(
            `${engine}: closed after the signal: silent ${
              silentMs === null ? `never accepted (a request after the exit got ${silentUnseen})` : `${silentMs} ms`
            },` +
              ` partial head ${partialMs} ms, idle ${idleMs} ms; upload answered ${
                uploadedAt === null ? JSON.stringify(upload.data.slice(0, 60)) : `at ${uploadedAt - signalledAt} ms`
              }; in-flight response done at ${doneMs} ms, closed ${
                finishedAt === null || busyClosedAt === null ? null : busyClosedAt - finishedAt
              } ms later; exit ${code} at ${exitMs} ms; shutdown_complete ${
                JSON.stringify(complete.map(({ cut, durationMs }) => ({ cut, durationMs })))
              }`,
          );

          if (silentMs === null) expect(silentUnseen).toBe('""');
          else expect(silentMs).toBeLessThanOrEqual(AT_ONCE_MS);
          expect(partialMs).not.toBeNull();
          expect(partialMs!).toBeLessThanOrEqual(PARTIAL_AFTER_WORK.has(engine) ? (doneMs ?? 0) + AFTER_RESPONSE_MS : AT_ONCE_MS);
          expect(idleMs).not.toBeNull();
          expect(idleMs!).toBeLessThanOrEqual(AT_ONCE_MS);

          expect(uploadedAt).not.toBeNull();
          expect(upload.data).toStartWith("HTTP/1.1 200");
          expect(upload.data).toContain('{"bytes":10}');
          expect(await closedAfter(upload, uploadedAt!, AFTER_RESPONSE_MS)).not.toBeNull();

          expect(finishedAt).not.toBeNull();
          expect(busy.data).toContain("Hello World");
          expect(busyClosedAt).not.toBeNull();
          expect(busyClosedAt! - finishedAt!).toBeLessThanOrEqual(AFTER_RESPONSE_MS);

          expect(code).toBe(0);
          expect(exitMs).toBeLessThanOrEqual(SLOW_MS + EXIT_SLACK_MS);
          expect(complete).toHaveLength(1);
          expect(complete[0]!.cut).toBe(0);
          expect(server.nonJsonLines).toEqual([]);
        }),
      30_000,
    );
  }
});
