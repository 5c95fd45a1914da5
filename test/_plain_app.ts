/**
 * A user's plain Hono app, as issue #18 has it: it imports nothing from the template (no body
 * helper, no lifecycle helper, no error handler of ours), so that what the policy suites check
 * against it is what `serve()` and the entries do on their own. Served through the real entry
 * points: `npm start -- test/_plain_app.ts`.
 */
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { streamSSE } from "hono/streaming";

const encoder = new TextEncoder();

/** Request bodies the handlers began to read: a refused body must leave it unchanged. */
let reads = 0;

const bytesOf = (text: string) => encoder.encode(text).byteLength;

/** A stream that fails after its first chunk, as a broken upstream does. */
function brokenStream(): ReadableStream<Uint8Array> {
  let pulls = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      pulls += 1;
      if (pulls === 1) return controller.enqueue(encoder.encode("first\n"));
      await new Promise((resolve) => setTimeout(resolve, 50));
      controller.error(new Error("stream broke"));
    },
  }, { highWaterMark: 0 });
}

const app = new Hono()
  .get("/", (c) => c.text("plain"))
  .post("/text", async (c) => {
    reads += 1;
    return c.json({ bytes: bytesOf(await c.req.text()) });
  })
  .post("/json", async (c) => {
    reads += 1;
    return c.json({ bytes: bytesOf(JSON.stringify(await c.req.json())) });
  })
  .post("/form", async (c) => {
    reads += 1;
    const form = await c.req.formData();
    const fields: string[][] = [];
    form.forEach((value, key) => fields.push([key, typeof value === "string" ? value : value.name]));
    return c.json({ bytes: bytesOf(new URLSearchParams(fields).toString()) });
  })
  .post("/array", async (c) => {
    reads += 1;
    return c.json({ bytes: (await c.req.arrayBuffer()).byteLength });
  })
  .post("/raw", async (c) => {
    reads += 1;
    let bytes = 0;
    const body = c.req.raw.body;
    if (body) {
      const reader = body.getReader();
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) bytes += chunk.value.byteLength;
    }
    return c.json({ bytes });
  })
  .get("/reads", (c) => c.json({ reads }))
  // Endless events, every `interval` ms, through Hono's own helper only.
  .get("/sse", (c) =>
    streamSSE(c, async (stream) => {
      let id = 0;
      while (!stream.aborted) {
        await stream.writeSSE({ data: "tick", id: String(id++) });
        await stream.sleep(Number(c.req.query("interval") ?? 1000));
      }
    }))
  // `parts` lines (50 by default), the first at once and one every 200 ms after: a stream of the
  // app's own, which listens for nothing.
  .get("/stream", (c) => {
    const parts = Number(c.req.query("parts") ?? 50);
    let sent = 0;
    return c.body(
      new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (sent > 0) await new Promise((resolve) => setTimeout(resolve, 200));
          controller.enqueue(encoder.encode("part\n"));
          sent += 1;
          if (sent === parts) controller.close();
        },
      }, { highWaterMark: 0 }),
      200,
      { "content-type": "text/plain; charset=utf-8" },
    );
  })
  .get("/throw", () => {
    throw new Error("boom: secret detail");
  })
  .get("/throw-http", () => {
    throw new HTTPException(418, { message: "teapot" });
  })
  .get("/throw-async", async () => {
    await new Promise((resolve) => setTimeout(resolve, 10));
    throw new Error("boom: async detail");
  })
  .post("/echo-raw", (c) => new Response(c.req.raw.body))
  .delete("/x", (c) => c.text("ok"))
  .post("/ignore", (c) => c.text("ok"))
  .get("/url", (c) => c.json({ url: c.req.url }))
  // On node:http engines c.env.outgoing is the ServerResponse: a status message with a line break
  // makes writing the head throw. Elsewhere a plain throw.
  .get("/bad-head", (c) => {
    const out = (c.env as { outgoing?: { statusMessage: string } } | undefined)?.outgoing;
    if (out) out.statusMessage = "OK\r\nX: y";
    throw new Error("bad head");
  })
  .get("/broken-stream", (c) => c.body(brokenStream(), 200, { "content-type": "text/plain; charset=utf-8" }));

export default app;
