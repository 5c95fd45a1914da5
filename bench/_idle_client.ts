/**
 * The idle-connection client of `bench/run.ts`, run as its own process (under a raised fd limit)
 * so its event loop does not share a thread with the measuring one:
 *
 *   bun bench/_idle_client.ts PORT COUNT BATCH hold|wait WAIT_MS
 *
 * Opens COUNT keep-alive connections to 127.0.0.1:PORT, BATCH at a time, sends one `GET /` on
 * each, reads the response, and leaves the connection idle. Prints JSON lines on stdout:
 * - `ready`: every connection answered (or failed), with the first and last response times;
 * - `hold`: then waits for `close` on stdin, closes everything itself, prints `closed`;
 * - `wait`: then waits up to WAIT_MS after the last response for the server to close them and
 *   prints `done` with each connection's close time minus its response time.
 * Times are milliseconds on this process's clock (performance.timeOrigin + performance.now()).
 */
import { connect, type Socket } from "node:net";
import { get } from "../harness/http.ts";

const [portArg, countArg, batchArg, mode, waitArg] = process.argv.slice(2);
const PORT = Number(portArg);
const COUNT = Number(countArg);
const BATCH = Number(batchArg);
const WAIT_MS = Number(waitArg ?? "0");
/** How long one batch may take to connect and be answered. */
const BATCH_TIMEOUT_MS = 20_000;
const REQUEST = get("/");

if (!(PORT > 0) || !(COUNT > 0) || !(BATCH > 0) || (mode !== "hold" && mode !== "wait")) {
  process.stderr.write("usage: bun bench/_idle_client.ts PORT COUNT BATCH hold|wait WAIT_MS\n");
  process.exit(2);
}

const now = () => performance.timeOrigin + performance.now();
const emit = (event: string, fields: Record<string, unknown>) => console.log(JSON.stringify({ event, ...fields }));

interface Conn {
  socket: Socket;
  data: string;
  responseAt: number | null;
  closeAt: number | null;
  closed: Promise<void>;
}

/** True once `data` holds one complete response (Content-Length or chunked). */
function complete(data: string): boolean {
  const headEnd = data.indexOf("\r\n\r\n");
  if (headEnd < 0) return false;
  const head = data.slice(0, headEnd).toLowerCase();
  const length = /content-length:\s*(\d+)/.exec(head);
  if (length) return data.length - headEnd - 4 >= Number(length[1]);
  return data.endsWith("0\r\n\r\n");
}

/** Opens one connection, sends the request, resolves once the response is read (or it failed). */
function open(): Promise<Conn> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port: PORT });
    socket.setEncoding("latin1");
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(conn);
    };
    let markClosed = () => {};
    const conn: Conn = {
      socket,
      data: "",
      responseAt: null,
      closeAt: null,
      closed: new Promise<void>((r) => (markClosed = r)),
    };
    const timer = setTimeout(settle, BATCH_TIMEOUT_MS);
    socket.once("connect", () => socket.write(REQUEST));
    socket.on("data", (chunk: string) => {
      if (conn.responseAt !== null) return;
      conn.data += chunk;
      if (complete(conn.data)) {
        conn.responseAt = now();
        settle();
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      conn.closeAt = now();
      markClosed();
      settle();
    });
  });
}

const conns: Conn[] = [];
const started = now();
for (let i = 0; i < COUNT; i += BATCH) {
  const batch = await Promise.all(Array.from({ length: Math.min(BATCH, COUNT - i) }, open));
  conns.push(...batch);
}
const answered = conns.filter((c) => c.responseAt !== null);
const responseTimes = answered.map((c) => c.responseAt!);
const firstResponseAt = Math.min(...responseTimes);
const lastResponseAt = Math.max(...responseTimes);
emit("ready", {
  opened: answered.filter((c) => c.closeAt === null).length,
  answered: answered.length,
  failed: COUNT - answered.length,
  openMs: Math.round(now() - started),
  firstResponseAt,
  lastResponseAt,
  now: now(),
});

if (mode === "hold") {
  // Wait for `close` on stdin (bounded: the parent kills us anyway).
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 600_000);
    process.stdin.on("data", (chunk) => {
      if (String(chunk).includes("close")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  for (const c of conns) c.socket.destroy();
  emit("closed", { at: now() });
  process.exit(0);
} else {
  const deadline = lastResponseAt + WAIT_MS - now();
  await Promise.race([
    Promise.all(answered.map((c) => c.closed)),
    new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline))),
  ]);
  const closed = answered.filter((c) => c.closeAt !== null);
  emit("done", {
    stillOpen: answered.length - closed.length,
    lastCloseAt: closed.length > 0 ? Math.max(...closed.map((c) => c.closeAt!)) : null,
    lastResponseAt,
    closedAfterResponseMs: closed.map((c) => Math.round((c.closeAt! - c.responseAt!) * 10) / 10),
  });
  for (const c of conns) c.socket.destroy();
  process.exit(0);
}
