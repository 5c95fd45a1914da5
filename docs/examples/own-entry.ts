// Your own entry file: your app, served with the whole connection policy. `npm run node -- docs/examples/own-entry.ts`
// (on Bun or Deno, import serve from adapters/bun.ts or adapters/deno.ts instead, and run it with npm run bun or npm run deno).
import { Hono } from "hono";
import process from "node:process";
import { serve } from "../../adapters/node/mod.ts";

const app = new Hono()
  .get("/", (c) => c.text("Hello from my app"))
  .get("/users/:id", (c) => c.json({ id: c.req.param("id") }));

const server = await serve(app, {
  port: Number(process.env.PORT ?? 3000),
  host: "127.0.0.1",
  idleTimeoutMs: 15 * 60_000, // what the WebSub incident needed: idle hub connections go after 15 minutes
  shutdownTimeoutMs: 5_000,
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => server.shutdown(signal).then(() => process.exit(0)));
}
