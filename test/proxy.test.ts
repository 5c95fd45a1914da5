import { describe, expect, test } from "bun:test";
import { spawn, spawnSync, type Subprocess } from "bun";
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Engine } from "../src/policy/types.ts";
import { completeResponses } from "../harness/http.ts";
import { connect, type RawClient } from "../harness/raw_client.ts";
import { freePort } from "../harness/ports.ts";
import { ROOT } from "../harness/process.ts";
import { runtimeOf, startServer } from "../harness/servers.ts";
import { using, within } from "../harness/wait.ts";
import { BUN_TICK_MS } from "./_capabilities.ts";
import { EARLY_MS, expectBetween } from "./_suite.ts";

/**
 * deploy/nginx/nginx.conf, run for real: Debian's nginx in front of each runtime's default engine,
 * with short timeouts. The recommended ordering (nginx's upstream keepalive_timeout shorter than
 * the app's IDLE_TIMEOUT) gives no 5xx whatever the gaps between requests; the inverted one makes
 * nginx reuse connections the app is closing, and a POST on one becomes a 502 (nginx retries GETs).
 * docs/deployment.md states the rule and the numbers these tests measured. And the public server
 * serves the app's routes only: /metrics, /readyz and /healthz answer 404 there without reaching
 * the app, and only the internal server serves them.
 */

/** nginx from PATH, or where Debian puts it (/usr/sbin is not on a non-root user's PATH). */
const NGINX = Bun.which("nginx") ?? Bun.which("nginx", { PATH: "/usr/sbin:/sbin" });
const SKIP_REASON = "nginx is not installed: apt-get install nginx";
const DEBUG = Boolean(process.env.PROXY_TEST_DEBUG);

const GET = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const POST = "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

/** Replaces the one match of `pattern` in `text`; fails if deploy/nginx/nginx.conf no longer has exactly one. */
function replaceOnce(text: string, pattern: RegExp, replacement: string): string {
  const matches = text.match(new RegExp(pattern.source, "gm"))?.length ?? 0;
  if (matches !== 1) throw new Error(`deploy/nginx/nginx.conf: expected one ${pattern} but found ${matches}`);
  return text.replace(new RegExp(pattern.source, "m"), replacement);
}

/**
 * deploy/nginx/nginx.conf as shipped, with only what a test must change: its ports (the public
 * server's, the internal server's, the app's), the upstream keepalive_timeout, one worker (one
 * keep-alive pool), and every file inside `dir`.
 */
export function renderConfig(
  dir: string,
  listenPort: number,
  internalPort: number,
  upstreamPort: number,
  keepaliveTimeoutMs: number,
  readTimeoutMs?: number,
): string {
  let conf = readFileSync(join(ROOT, "deploy/nginx/nginx.conf"), "utf8");
  // Workers run as root in CI (a fresh container) rather than as a user that may not exist.
  conf = replaceOnce(conf, /^user .*;$/, process.getuid?.() === 0 ? "user root;" : "");
  conf = replaceOnce(conf, /^worker_processes .*;$/, "worker_processes 1;");
  conf = replaceOnce(conf, /^pid .*;$/, `pid ${dir}/nginx.pid;`);
  conf = replaceOnce(conf, /^error_log .*;$/, `error_log ${dir}/error.log warn;`);
  conf = replaceOnce(conf, /^(\s*)access_log \S+ upstream;$/, `$1access_log ${dir}/access.log upstream;`);
  conf = replaceOnce(
    conf,
    /^http \{$/,
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].reduce(
      (head, kind) => `${head}\n    ${kind}_temp_path ${dir}/${kind}_temp;`,
      "http {",
    ),
  );
  conf = replaceOnce(conf, /^(\s*)server 127\.0\.0\.1:8080;$/, `$1server 127.0.0.1:${upstreamPort};`);
  conf = replaceOnce(conf, /^(\s*)listen 80;$/, `$1listen 127.0.0.1:${listenPort};`);
  conf = replaceOnce(conf, /^(\s*)listen 127\.0\.0\.1:8081;$/, `$1listen 127.0.0.1:${internalPort};`);
  conf = replaceOnce(conf, /^(\s*)keepalive_timeout 60s;$/, `$1keepalive_timeout ${keepaliveTimeoutMs}ms;`);
  if (readTimeoutMs !== undefined) conf = replaceOnce(conf, /^(\s*)proxy_read_timeout 60s;$/, `$1proxy_read_timeout ${readTimeoutMs}ms;`);
  return conf;
}

interface Nginx {
  port: number;
  /** The internal server's port: the operational routes only. */
  internalPort: number;
  dir: string;
  /** The access log: one line per request, with the upstream's status. */
  accessLog(): string;
  errorLog(): string;
  kill(): Promise<void>;
}

/**
 * Starts nginx in the foreground (`-g 'daemon off;'`) with its own process group, every file in a
 * scratch folder, listening on a port found free just before; retries a few times if another
 * process took that port in between. Resolves once it accepts connections.
 */
async function startNginx(
  upstreamPort: number,
  keepaliveTimeoutMs: number,
  defer: (cleanup: () => unknown) => void,
  readTimeoutMs?: number,
): Promise<Nginx> {
  const dir = mkdtempSync(join(tmpdir(), "hono-policy-nginx-"));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  // Workers that are not root must be able to reach their temp folders.
  chmodSync(dir, 0o755);
  const confPath = join(dir, "nginx.conf");
  const errorLog = join(dir, "error.log");
  const read = (path: string) => (existsSync(path) ? readFileSync(path, "utf8") : "");
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = await freePort();
    let internalPort = await freePort();
    while (internalPort === port) internalPort = await freePort();
    writeFileSync(confPath, renderConfig(dir, port, internalPort, upstreamPort, keepaliveTimeoutMs, readTimeoutMs));
    const args = [NGINX!, "-p", dir, "-c", confPath, "-e", errorLog];
    const check = spawnSync([...args, "-t", "-q"]);
    if (check.exitCode !== 0) throw new Error(`nginx -t refused the rendered config: ${check.stderr.toString()}`);
    const stderrFd = openSync(join(dir, "stderr.log"), "a");
    let proc: Subprocess<"ignore", "ignore", number>;
    try {
      proc = spawn([...args, "-g", "daemon off;"], { stdin: "ignore", stdout: "ignore", stderr: stderrFd, detached: true });
    } finally {
      closeSync(stderrFd);
    }
    const kill = async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      try {
        process.kill(-proc.pid, "SIGKILL"); // the master and its worker share the group
      } catch {
        proc.kill("SIGKILL");
      }
      await Promise.race([proc.exited, Bun.sleep(5_000)]);
    };
    defer(kill);
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && proc.exitCode === null) {
      const client = await connect(port, 500).catch(() => undefined);
      if (client) {
        client.destroy();
        // The master binds every listener before it forks a worker, so the internal one is up too.
        return { port, internalPort, dir, accessLog: () => read(join(dir, "access.log")), errorLog: () => read(errorLog), kill };
      }
      await Bun.sleep(20);
    }
    await kill();
    if (!read(errorLog).includes("Address already in use")) {
      throw new Error(`nginx did not start within 5 s: ${read(errorLog)}${read(join(dir, "stderr.log"))}`);
    }
  }
  throw new Error("nginx found no free port in 5 attempts");
}

/** A keep-alive client connection through nginx that sends one request at a time. */
class Lane {
  readonly client: RawClient;

  constructor(client: RawClient) {
    this.client = client;
  }

  /** The status of the answer to `request`; fails if none comes within `timeoutMs`. */
  async send(request: string, timeoutMs = 5_000): Promise<number> {
    this.client.data = "";
    this.client.write(request);
    await this.client.waitFor((d) => completeResponses(d) >= 1, timeoutMs, "a response");
    return Number(/^HTTP\/1\.1 (\d{3})/.exec(this.client.data)?.[1]);
  }
}

function lanes(port: number, n: number, defer: (cleanup: () => unknown) => void): Promise<Lane[]> {
  return Promise.all(Array.from({ length: n }, async () => {
    const client = await connect(port);
    defer(() => client.destroy());
    return new Lane(client);
  }));
}

/** One request on a connection of its own (`Connection: close`), target as written: its status and body. */
async function ask(port: number, method: string, target: string, defer: (cleanup: () => unknown) => void) {
  const client = await connect(port);
  defer(() => client.destroy());
  const body = method === "POST" ? "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello" : "\r\n";
  client.write(`${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${body}`);
  await client.waitForClose(5_000);
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(client.data)?.[1]);
  return { status, body: client.data.slice(client.data.indexOf("\r\n\r\n") + 4) };
}

interface Tally {
  get: number[];
  post: number[];
}

const count = (statuses: number[], test: (status: number) => boolean) => statuses.filter(test).length;
const summary = (t: Tally) =>
  `GETs ${t.get.length} (5xx ${count(t.get, (s) => s >= 500)}), POSTs ${t.post.length} (5xx ${count(t.post, (s) => s >= 500)}, 502 ${
    count(t.post, (s) => s === 502)
  })`;

/** Per runtime: IDLE_TIMEOUT (Bun's a multiple of its 4 s tick) and nginx's upstream keepalive_timeout, shorter. */
const ENGINES: Array<{ engine: Engine; idleMs: number; keepaliveMs: number }> = [
  { engine: "node-http", idleMs: 2_000, keepaliveMs: 1_000 },
  { engine: "bun-serve", idleMs: 4_000, keepaliveMs: 3_000 },
  { engine: "deno-per-connection", idleMs: 2_000, keepaliveMs: 1_000 },
];
/** The inverted ordering: nginx keeps idle upstream connections far longer than the app. */
const INVERTED_KEEPALIVE_MS = 30_000;

/** Requests in one burst through nginx: half GETs, half POSTs, each taking its own pooled upstream connection. */
const WIDTH = 24;
/** How long the app's event loop is held around the pool's idle close: far wider than the close's wander. */
const BUSY_MS = 400;
/** The hold starts this long before the expected close; the burst goes this long after it. */
const BUSY_LEAD_MS = 150;
const BURST_LAG_MS = 50;

/**
 * Fills nginx's upstream pool with WIDTH connections, waits until the app is about to close them
 * for being idle, and sends WIDTH requests through nginx then, while the app's event loop is held
 * (GET /busy, as CPU-bound work on a loaded server holds it) from BUSY_LEAD_MS before the close
 * to well after it. The idle timeouts that came due meanwhile run before the app reads what nginx
 * wrote (timers before sockets, on every runtime), so each pooled connection the app still had
 * open closes with nginx's request unread: the race the ordering rule is about, made hundreds of
 * milliseconds wide instead of a matter of microseconds, and the same on every engine. With the
 * recommended ordering nginx has dropped its pooled connections before then, and opens new ones.
 *
 * Node and Deno close IDLE_TIMEOUT after the last response. Bun.serve closes on its global 4 s
 * tick: a direct connection to the app, filled with the pool, tells where the tick is.
 */
async function burstAtIdleClose(
  engine: Engine,
  idleMs: number,
  appPort: number,
  nginxPort: number,
  defer: (cleanup: () => unknown) => void,
) {
  const pool = await lanes(nginxPort, WIDTH, defer);
  const fill = async () => {
    const statuses = await Promise.all(pool.map((lane) => lane.send(GET)));
    expect(statuses.every((s) => s === 200)).toBe(true);
    return performance.now();
  };
  let closeAt: number;
  if (runtimeOf(engine) === "bun") {
    // Bun's tick runs only while some connection has a timer; a direct connection that asks every
    // second keeps it running (and is never idle long enough to be closed), so the tick found by
    // one idle close is still where it was when the burst goes.
    const keeper = await connect(appPort);
    defer(() => keeper.destroy());
    const keep = setInterval(() => keeper.write(GET), 1_000);
    defer(() => clearInterval(keep));
    const probe = await connect(appPort);
    defer(() => probe.destroy());
    probe.write(GET);
    let tick = await within(probe.closed.then(() => performance.now()), 9_000, "Bun's idle close");
    // Filled just before a tick, the pool closes on the tick after next: (4, 8] s after its last response.
    while (tick - 150 < performance.now()) tick += BUN_TICK_MS;
    await Bun.sleep(tick - 150 - performance.now());
    await fill();
    closeAt = tick + BUN_TICK_MS;
  } else {
    closeAt = (await fill()) + idleMs;
  }
  await Bun.sleep(Math.max(0, closeAt - BUSY_LEAD_MS - 20 - performance.now()));
  // Connected only now: a connection that has sent nothing meets HEADERS_TIMEOUT.
  const busy = await connect(appPort);
  defer(() => busy.destroy());
  await Bun.sleep(Math.max(0, closeAt - BUSY_LEAD_MS - performance.now()));
  busy.write(`GET /busy?ms=${BUSY_MS} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  await Bun.sleep(Math.max(0, closeAt + BURST_LAG_MS - performance.now()));
  const statuses = await Promise.all(pool.map((lane, i) => lane.send(i % 2 ? POST : GET)));
  await busy.waitFor((d) => completeResponses(d) === 1, 5_000, "the busy response");
  expect(busy.data).toStartWith("HTTP/1.1 200");
  const tally: Tally = { get: [], post: [] };
  statuses.forEach((status, i) => (i % 2 ? tally.post : tally.get).push(status));
  return tally;
}

const appEnv = (idleMs: number) => ({
  IDLE_TIMEOUT: `${idleMs}ms`,
  HEADERS_TIMEOUT: "1500ms",
  REQUEST_TIMEOUT: "2500ms",
  SHUTDOWN_TIMEOUT: "1000ms",
});

if (!NGINX) {
  test.skip(`keep-alive through nginx, both orderings of the idle timeouts (skipped: ${SKIP_REASON})`, () => {});
} else {
  for (const { engine, idleMs, keepaliveMs } of ENGINES) {
    describe(`${engine} behind nginx`, () => {
      test.concurrent(
        `upstream keepalive_timeout ${keepaliveMs}ms < IDLE_TIMEOUT ${idleMs}ms: no 5xx with gaps around IDLE_TIMEOUT`,
        () =>
          using(async (defer) => {
            const server = await startServer(engine, appEnv(idleMs));
            defer(() => server.kill());
            const nginx = await startNginx(server.port, keepaliveMs, defer);
            const tally: Tally = { get: [], post: [] };
            // Gaps on both sides of IDLE_TIMEOUT (and of nginx's keepalive_timeout), on 4 lanes at once.
            const gaps = [idleMs - 300, idleMs, idleMs + 300, keepaliveMs, 0];
            await Promise.all((await lanes(nginx.port, 4, defer)).map(async (lane, i) => {
              for (let round = 0; round < gaps.length; round++) {
                const gap = gaps[(round + i) % gaps.length]! + Math.round(Math.random() * 100) - 50;
                await Bun.sleep(Math.max(0, gap));
                tally.get.push(await lane.send(GET));
                tally.post.push(await lane.send(POST));
              }
            }));
            // And the burst that the inverted ordering turns into 502s: here nginx has dropped its
            // pooled connections before the app's close, and opens new ones.
            const busy = await burstAtIdleClose(engine, idleMs, server.port, nginx.port, defer);
            tally.get.push(...busy.get);
            tally.post.push(...busy.post);
            if (DEBUG) console.log(`${engine} recommended ordering: ${summary(tally)}`);
            expect(tally.get.length + tally.post.length).toBe(40 + WIDTH);
            expect({ ordering: "recommended", fiveXX: count([...tally.get, ...tally.post], (s) => s >= 500), log: nginx.errorLog() })
              .toEqual({ ordering: "recommended", fiveXX: 0, log: expect.any(String) });
          }),
        60_000,
      );

      test.concurrent(
        `upstream keepalive_timeout ${INVERTED_KEEPALIVE_MS}ms > IDLE_TIMEOUT ${idleMs}ms: POSTs on reused connections become 502s, GETs are retried`,
        () =>
          using(async (defer) => {
            const server = await startServer(engine, appEnv(idleMs));
            defer(() => server.kill());
            const nginx = await startNginx(server.port, INVERTED_KEEPALIVE_MS, defer);
            const tally = await burstAtIdleClose(engine, idleMs, server.port, nginx.port, defer);
            console.log(`${engine} behind nginx, inverted ordering: ${summary(tally)}`);
            // nginx retries a GET on a fresh connection, so no GET fails...
            expect({ getsFailed: count(tally.get, (s) => s >= 500) }).toEqual({ getsFailed: 0 });
            // ...but not a POST: the same burst that passes with the recommended ordering loses POSTs.
            expect({ posts502: count(tally.post, (s) => s === 502) > 0, errorLog: nginx.errorLog() }).toMatchObject({ posts502: true });
          }),
        40_000,
      );
    });
  }

  // The ordering rule for silence (docs/deployment.md#long-lived-connections-the-ordering-rule-for-silence):
  // nginx cuts a proxied connection from which nothing arrived for proxy_read_timeout (2 s here),
  // and the app's pings and heartbeats (every 1 s) keep it from ever seeing that much silence.
  const READ_TIMEOUT_MS = 2_000;
  const QUIET_MS = 5_000;
  for (const { engine } of ENGINES) {
    describe(`${engine}: long-lived connections behind nginx (proxy_read_timeout ${READ_TIMEOUT_MS}ms)`, () => {
      /** The example app behind nginx, with `env`; a WebSocket through nginx that answers pings as browsers do. */
      async function behindNginx(env: Record<string, string>, defer: (cleanup: () => unknown) => void) {
        const server = await startServer(engine, { ...env, SHUTDOWN_TIMEOUT: "1s" }, 15_000, { app: null });
        defer(() => server.kill());
        return await startNginx(server.port, 1_000, defer, READ_TIMEOUT_MS);
      }
      function openSocket(port: number, defer: (cleanup: () => unknown) => void) {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
        defer(() => ws.close());
        const closed = new Promise<{ code: number; at: number }>((resolve) =>
          ws.addEventListener("close", (e) => resolve({ code: e.code, at: Date.now() }))
        );
        const opened = new Promise<number>((resolve, reject) => {
          ws.addEventListener("open", () => resolve(Date.now()));
          ws.addEventListener("error", () => reject(new Error("the WebSocket through nginx did not open")));
        });
        return { ws, opened: within(opened, 5_000, "the WebSocket's open"), closed };
      }

      test.concurrent(
        `a WebSocket quiet for ${QUIET_MS}ms stays open: the app's pings (WEBSOCKET_PING_INTERVAL=1s) flow through nginx`,
        () =>
          using(async (defer) => {
            const nginx = await behindNginx({ WEBSOCKET_PING_INTERVAL: "1s" }, defer);
            const { ws, opened, closed } = openSocket(nginx.port, defer);
            await opened;
            const cut = await Promise.race([closed, Bun.sleep(QUIET_MS).then(() => undefined)]);
            expect(cut).toBeUndefined();
            const echoed = new Promise<string>((resolve) => ws.addEventListener("message", (e) => resolve(String(e.data))));
            ws.send("still here");
            expect(await within(echoed, 2_000, "the echo")).toBe("still here");
          }),
        30_000,
      );

      test.concurrent(
        `without pings (WEBSOCKET_PING_INTERVAL=0) nginx cuts the quiet WebSocket at proxy_read_timeout: what the pings prevent`,
        () =>
          using(async (defer) => {
            const nginx = await behindNginx({ WEBSOCKET_PING_INTERVAL: "0" }, defer);
            const { opened, closed } = openSocket(nginx.port, defer);
            const openedAt = await opened;
            const { at } = await within(closed, QUIET_MS, "nginx's cut");
            expectBetween(at - openedAt, READ_TIMEOUT_MS - EARLY_MS, READ_TIMEOUT_MS + 1_500);
          }),
        30_000,
      );

      test.concurrent(
        `an event stream quiet for ${QUIET_MS}ms stays open: its heartbeats (SSE_HEARTBEAT=1s) flow through nginx`,
        () =>
          using(async (defer) => {
            const nginx = await behindNginx({ SSE_HEARTBEAT: "1s" }, defer);
            const client = await connect(nginx.port);
            defer(() => client.destroy());
            client.write("GET /events?interval=60000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            await client.waitFor((d) => d.includes("event: tick"), 2_000, "the first event");
            await Bun.sleep(QUIET_MS);
            expect(client.closedAt).toBeNull();
            expect(client.data).toStartWith("HTTP/1.1 200");
            expect(client.data.split(": heartbeat").length - 1).toBeGreaterThanOrEqual(QUIET_MS / 1_000 - 1);
          }),
        30_000,
      );
    });
  }

  describe("what nginx makes public", () => {
    test.concurrent(
      "the public server answers 404 for /metrics, /readyz and /healthz without asking the app and serves the app's routes; the internal server serves those three and nothing else",
      () =>
        using(async (defer) => {
          const server = await startServer("node-http", appEnv(2_000));
          defer(() => server.kill());
          const nginx = await startNginx(server.port, 1_000, defer);
          // The three, and the same paths written so that only nginx's decoding and normalizing
          // makes them the same: each must be refused, and none may reach the app.
          const refused: Array<[method: string, target: string]> = [
            ["GET", "/metrics"],
            ["GET", "/readyz"],
            ["GET", "/healthz"],
            ["HEAD", "/metrics"],
            ["GET", "/metrics?format=text"],
            ["GET", "//metrics"],
            ["GET", "/%6Detrics"],
            ["GET", "/healthz/../readyz"],
            ["GET", "/./metrics"],
          ];
          const publicSide: string[] = [];
          for (const [method, target] of refused) {
            publicSide.push(`${method} ${target} ${(await ask(nginx.port, method, target, defer)).status}`);
          }
          expect(publicSide).toEqual(refused.map(([method, target]) => `${method} ${target} 404`));
          // nginx answered each itself: its access log names no upstream for any of them.
          const logged = nginx.accessLog().trim().split("\n");
          expect(logged).toHaveLength(refused.length);
          for (const line of logged) expect(line).toMatch(/" 404 upstream=- upstream_status=- /);

          // The app's routes are public as before.
          const hello = await ask(nginx.port, "GET", "/", defer);
          expect({ status: hello.status, hello: hello.body.includes("Hello World") }).toEqual({ status: 200, hello: true });
          expect((await ask(nginx.port, "POST", "/echo", defer)).status).toBe(200);

          // The internal server: the three, answered by the app; anything else 404, from nginx.
          const metrics = await ask(nginx.internalPort, "GET", "/metrics", defer);
          expect({ status: metrics.status, exposition: metrics.body.includes("http_requests_total") })
            .toEqual({ status: 200, exposition: true });
          expect((await ask(nginx.internalPort, "GET", "/readyz", defer)).body).toContain(`{"status":"ready"}`);
          expect((await ask(nginx.internalPort, "GET", "/healthz", defer)).body).toContain(`{"status":"ok"}`);
          expect((await ask(nginx.internalPort, "GET", "/", defer)).status).toBe(404);
          expect((await ask(nginx.internalPort, "POST", "/echo", defer)).status).toBe(404);
        }),
      30_000,
    );
  });
}
