/**
 * The hostile-client side of `bench/run.ts`, run as its own process (pinned to the load core) so
 * its event loop does not share a thread with the measuring one:
 *
 *   bun bench/_hostile_client.ts slowloris PORT TRICKLERS MEASURE_S WAIT_MS
 *   bun bench/_hostile_client.ts churn PORT SERVER_PID CYCLES PARALLEL
 *
 * - `slowloris`: measures the latency of well-behaved keep-alive clients for MEASURE_S, then
 *   opens TRICKLERS connections that send one byte of a never-ending head every 500 ms each, and
 *   measures again while they trickle; then waits up to WAIT_MS from their opening for the server
 *   to close them. Prints `done` with both latency distributions and each trickler's lifetime.
 * - `churn`: CYCLES of connect, `GET /healthz`, close (the client half-closes, the server
 *   closes), PARALLEL at a time, after a warm-up; samples the server's fds and RSS every 2,500
 *   cycles. Prints `done` with the samples and the rate.
 */
import { connect, type Socket } from "node:net";
import { get } from "../harness/http.ts";
import { openFds, rss } from "../harness/proc.ts";
import { percentile } from "./_stats.ts";

const emit = (event: string, fields: Record<string, unknown>) => console.log(JSON.stringify({ event, ...fields }));
const REQUEST = get("/");
const HEALTHZ = get("/healthz");
/** The end of one complete `GET /` response: the template answers `Hello World`. */
const BODY = "Hello World";

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** `clients` keep-alive connections sending `GET /` back to back for `seconds`; per-request latency. */
async function latency(port: number, clients: number, seconds: number) {
  const samples: number[] = [];
  let errors = 0;
  const until = performance.now() + seconds * 1_000;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < until) {
        let socket: Socket;
        try {
          socket = await open(port);
        } catch {
          errors += 1;
          continue;
        }
        // One connection for as long as it lasts; a close or error mid-request counts as an error.
        const ok = await new Promise<boolean>((resolve) => {
          let data = "";
          let sentAt = 0;
          const send = () => {
            if (performance.now() >= until) return resolve(true);
            data = "";
            sentAt = performance.now();
            socket.write(REQUEST);
          };
          socket.setEncoding("latin1");
          socket.on("data", (chunk: string) => {
            data += chunk;
            if (data.endsWith(BODY)) {
              samples.push(performance.now() - sentAt);
              send();
            }
          });
          socket.on("error", () => resolve(false));
          socket.on("close", () => resolve(performance.now() >= until));
          send();
        });
        socket.destroy();
        if (!ok) errors += 1;
      }
    }),
  );
  return { requests: samples.length, errors, p50Ms: percentile(samples, 50), p99Ms: percentile(samples, 99), maxMs: Math.max(...samples) };
}

async function slowloris(port: number, tricklers: number, measureS: number, waitMs: number): Promise<void> {
  const baseline = await latency(port, 4, measureS);
  const head = `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: ${"a".repeat(10_000)}`;
  const conns: Array<{ socket: Socket; openedAt: number; closedAt: number | null; data: string }> = [];
  const openedAt = performance.now();
  for (let i = 0; i < tricklers; i += 100) {
    const batch = await Promise.all(Array.from({ length: Math.min(100, tricklers - i) }, () => open(port).catch(() => null)));
    for (const socket of batch) {
      if (!socket) continue;
      const conn = { socket, openedAt: performance.now(), closedAt: null as number | null, data: "" };
      socket.setEncoding("latin1");
      socket.on("data", (chunk: string) => (conn.data += chunk));
      socket.on("error", () => {});
      socket.on("close", () => (conn.closedAt = performance.now()));
      conns.push(conn);
    }
  }
  // A byte per connection every 500 ms, spread over the interval rather than all at once.
  let sent = 0;
  const drip = setInterval(() => {
    const slice = Math.ceil(conns.length / 10);
    const start = (sent % 10) * slice;
    for (const conn of conns.slice(start, start + slice)) {
      if (conn.closedAt === null) conn.socket.write(head[Math.floor(sent / 10) % head.length]!);
    }
    sent += 1;
  }, 50);
  const flood = await latency(port, 4, measureS);
  while (conns.some((c) => c.closedAt === null) && performance.now() - openedAt < waitMs) await Bun.sleep(50);
  clearInterval(drip);
  const lifetimes = conns.filter((c) => c.closedAt !== null).map((c) => c.closedAt! - c.openedAt);
  emit("done", {
    baseline,
    flood,
    tricklers: {
      opened: conns.length,
      failedToOpen: tricklers - conns.length,
      closed: lifetimes.length,
      answered408: conns.filter((c) => c.data.startsWith("HTTP/1.1 408")).length,
      minLifetimeMs: Math.min(...lifetimes),
      maxLifetimeMs: Math.max(...lifetimes),
    },
  });
  for (const conn of conns) conn.socket.destroy();
}

function serverSample(pid: number) {
  return { fds: openFds(pid), rssKb: rss(pid) / 1_024 };
}

async function churn(port: number, pid: number, cycles: number, parallel: number): Promise<void> {
  let errors = 0;
  const cycle = async () => {
    let socket: Socket;
    try {
      socket = await open(port);
    } catch {
      errors += 1;
      return;
    }
    await new Promise<void>((resolve) => {
      let data = "";
      socket.setEncoding("latin1");
      socket.on("data", (chunk: string) => {
        data += chunk;
        if (data.endsWith('{"status":"ok"}')) socket.end();
      });
      socket.on("error", () => {});
      socket.on("close", () => {
        if (!data.endsWith('{"status":"ok"}')) errors += 1;
        resolve();
      });
      socket.write(HEALTHZ);
    });
    socket.destroy();
  };
  const runCycles = async (n: number, onDone?: (done: number) => void) => {
    let next = 0;
    let done = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next < n) {
          next += 1;
          await cycle();
          done += 1;
          onDone?.(done);
        }
      }),
    );
  };
  await runCycles(1_000);
  const samples = [{ cycles: 0, ...serverSample(pid) }];
  const started = performance.now();
  await runCycles(cycles, (done) => {
    if (done % 2_500 === 0) samples.push({ cycles: done, ...serverSample(pid) });
  });
  const seconds = (performance.now() - started) / 1_000;
  emit("done", { cycles, errors, cyclesPerSecond: Math.round(cycles / seconds), samples });
}

const [mode, ...args] = process.argv.slice(2);
const n = args.map(Number);
if (mode === "slowloris" && n.length === 4 && n.every((x) => x > 0)) await slowloris(n[0]!, n[1]!, n[2]!, n[3]!);
else if (mode === "churn" && n.length === 4 && n.every((x) => x > 0)) await churn(n[0]!, n[1]!, n[2]!, n[3]!);
else {
  process.stderr.write(
    "usage: bun bench/_hostile_client.ts slowloris PORT TRICKLERS MEASURE_S WAIT_MS | churn PORT SERVER_PID CYCLES PARALLEL\n",
  );
  process.exit(2);
}
