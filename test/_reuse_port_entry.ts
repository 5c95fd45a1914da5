/**
 * An own entry for the browser test: serve() on this runtime with `reusePort`, so that two of them
 * share PORT, serving a page whose EventSource and WebSocket the test watches across a SIGTERM to
 * one of them. Each answer names the process that gave it.
 */
import process from "node:process";
import { Hono } from "hono";
import { streamSSE, upgradeWebSocket } from "../src/policy/realtime.ts";
import type { Serve } from "../src/policy/types.ts";

const runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";
const { serve } = await import(`../adapters/${runtime}/mod.ts`) as { serve: Serve };

/** The page: an EventSource that keeps what it got, and WebSockets until one lands on `pid`'s process. */
const PAGE = `<!doctype html><title>long-lived</title><script>
window.results = { events: [], opens: 0, errors: 0, ws: null };
const source = new EventSource("/events");
source.onopen = () => results.opens++;
source.onerror = () => results.errors++;
source.addEventListener("tick", (e) => results.events.push({ id: e.lastEventId, ...JSON.parse(e.data) }));
window.openSocketTo = (pid, tries = 40) => {
  const ws = new WebSocket("ws://" + location.host + "/ws");
  ws.onmessage = (e) => {
    const said = JSON.parse(e.data);
    if (said.pid !== pid) { ws.close(); if (tries > 1) openSocketTo(pid, tries - 1); return; }
    results.ws = { pid, open: true };
    ws.onclose = (c) => { results.ws = { pid, open: false, code: c.code, reason: c.reason }; };
  };
};
</script>`;

const app = new Hono();
app.get("/page", (c) => c.html(PAGE));
app.get("/events", (c) =>
  streamSSE(c, async (stream) => {
    let id = Number(stream.lastEventId ?? 0) || 0;
    while (!stream.aborted && !stream.closed) {
      id += 1;
      await stream.writeSSE({ id: String(id), event: "tick", data: JSON.stringify({ n: id, pid: process.pid }) });
      await stream.sleep(200);
    }
  }));
app.get(
  "/ws",
  upgradeWebSocket(() => ({
    onOpen(_event, ws) {
      ws.send(JSON.stringify({ pid: process.pid }));
    },
  })),
);

const server = await serve(app, { port: Number(process.env.PORT), host: "127.0.0.1", reusePort: true, shutdownTimeoutMs: 10_000 });
process.on("SIGTERM", () => void server.shutdown("SIGTERM").then(() => process.exit(0)));
