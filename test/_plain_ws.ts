/**
 * A plain Hono app as Hono's docs write it for Bun and for Deno: its WebSocket from Hono's own
 * helper for the runtime (`hono/bun`, `hono/deno`), none of the template's. The long-lived block
 * (test/_long_lived.ts) serves it on the Bun and Deno engines: the WebSocket policy must hold for
 * it too. The app's onClose is logged as a JSON line.
 */
import { Hono } from "hono";
import type { UpgradeWebSocket } from "hono/ws";

// A user's app imports one of them; this one serves on both runtimes.
const { upgradeWebSocket }: { upgradeWebSocket: UpgradeWebSocket } = "Bun" in globalThis
  ? await import("hono/bun")
  : await import("hono/deno");

const app = new Hono();

app.get(
  "/ws",
  upgradeWebSocket(() => ({
    onMessage(event, ws) {
      ws.send(event.data as string);
    },
    onClose(event) {
      console.log(JSON.stringify({ event: "app_onclose", code: event.code, reason: event.reason }));
    },
  })),
);

export default app;
