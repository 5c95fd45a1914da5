/**
 * The WebSocket client of the bench's websocket phase, run with Bun (its client WebSocket is
 * native, answers pings by itself, and keeps up with the servers it loads), as its own process on
 * the load core:
 *
 *   bun bench/_ws_client.ts hold URL COUNT BATCH
 *   bun bench/_ws_client.ts echo URL CLIENTS SECONDS BYTES
 *
 * `hold` opens COUNT WebSockets to URL (ws://...), BATCH at a time, prints `ready` (opened,
 * failed, openMs), then holds them idle. On stdin, `count` prints `count` (still open, closed by
 * the server so far) and `close` closes them all, prints `closed` and exits.
 *
 * `echo` opens CLIENTS WebSockets, prints `ready`, and on `go` (stdin) runs one loop per socket
 * for SECONDS: send a text message of BYTES bytes, wait for its echo, send the next. Prints `done`
 * with the echoes received, the elapsed ms and its own CPU time over them, and exits.
 *
 * Every line on stdout is JSON. The process ends by itself after 15 minutes, whatever it was told.
 */
export {};

const [mode, url, countArg, fourth, fifth] = process.argv.slice(2);
const COUNT = Number(countArg);
const OPEN_TIMEOUT_MS = 30_000;

if ((mode !== "hold" && mode !== "echo") || !url?.startsWith("ws") || !(COUNT > 0) || !(Number(fourth) > 0)) {
  process.stderr.write("usage: bun bench/_ws_client.ts hold URL COUNT BATCH | echo URL CLIENTS SECONDS BYTES\n");
  process.exit(2);
}

const emit = (event: string, fields: Record<string, unknown> = {}) => console.log(JSON.stringify({ event, ...fields }));
setTimeout(() => process.exit(3), 15 * 60_000).unref();

/** Lines on stdin, one command each. */
const commands: string[] = [];
let wake: (() => void) | undefined;
process.stdin.on("data", (chunk) => {
  commands.push(...String(chunk).split("\n").map((s) => s.trim()).filter(Boolean));
  wake?.();
});
async function command(): Promise<string> {
  while (commands.length === 0) await new Promise<void>((resolve) => (wake = resolve));
  return commands.shift()!;
}

let closedByServer = 0;
/** Closes this client did not ask for, by code and reason. */
const closeCodes: Record<string, number> = {};
let closing = false;

/** Opens one WebSocket; resolves with it once open, or with undefined if it fails or takes too long. */
function open(): Promise<WebSocket | undefined> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url!);
    const timer = setTimeout(() => {
      ws.close();
      resolve(undefined);
    }, OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(timer);
      resolve(ws);
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      clearTimeout(timer);
      if (!closing) {
        closedByServer += 1;
        const key = `${event.code} ${event.reason}`.trim();
        closeCodes[key] = (closeCodes[key] ?? 0) + 1;
      }
      resolve(undefined);
    };
  });
}

/** Opens `count` WebSockets, `batch` at a time. */
async function openAll(count: number, batch: number): Promise<{ sockets: WebSocket[]; failed: number; openMs: number }> {
  const started = performance.now();
  const sockets: WebSocket[] = [];
  for (let i = 0; i < count; i += batch) {
    const opened = await Promise.all(Array.from({ length: Math.min(batch, count - i) }, open));
    for (const ws of opened) if (ws) sockets.push(ws);
  }
  return { sockets, failed: count - sockets.length, openMs: Math.round(performance.now() - started) };
}

if (mode === "hold") {
  const { sockets, failed, openMs } = await openAll(COUNT, Number(fourth));
  emit("ready", { opened: sockets.length, failed, openMs });
  for (;;) {
    const what = await command();
    if (what === "count") {
      emit("count", { open: sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length, closedByServer, closeCodes });
    } else if (what === "close") {
      closing = true;
      for (const ws of sockets) ws.close();
      emit("closed", { closedByServer, closeCodes });
      process.exit(0);
    }
  }
} else {
  const seconds = Number(fourth);
  const bytes = Number(fifth ?? 32);
  const message = "x".repeat(bytes);
  const { sockets, failed, openMs } = await openAll(COUNT, COUNT);
  emit("ready", { opened: sockets.length, failed, openMs });
  while ((await command()) !== "go");
  let echoes = 0;
  let wrong = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const end = started + seconds * 1_000;
  await Promise.all(sockets.map((ws) =>
    new Promise<void>((resolve) => {
      ws.onmessage = (event) => {
        if (event.data === message) echoes += 1;
        else wrong += 1;
        if (performance.now() < end) ws.send(message);
        else resolve();
      };
      ws.onclose = () => resolve();
      ws.send(message);
    })
  ));
  const elapsedMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  closing = true;
  for (const ws of sockets) ws.close();
  emit("done", { clients: sockets.length, echoes, wrong, elapsedMs, cpuMs: (cpu.user + cpu.system) / 1_000, closedByServer, closeCodes });
  process.exit(0);
}
