import { describe, expect, test } from "bun:test";
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { fetchOf } from "../../src/policy/app.ts";
import { limitBody } from "../../adapters/_request_body.ts";
import { bodyLimits, overBodyLimit, withDeclaredBodyLimit } from "../../src/policy/body.ts";
import { errorResponse } from "../../src/policy/errors.ts";
import { type Outcome, trackStreamingResponses, withLifecycle } from "../../src/policy/lifecycle.ts";
import { createLogger, type Fields } from "../../src/policy/log.ts";
import type { FetchHandler } from "../../src/policy/types.ts";

/** A logger that keeps what it is given, and the JSON lines it would write. */
function recorder() {
  const events: Array<{ event: string; fields?: Fields }> = [];
  const lines: string[] = [];
  const logger = createLogger((line) => lines.push(line), {}, (event, fields) => events.push({ event, fields }));
  return { logger, events, lines };
}

const post = (url: string, body: BodyInit, headers: Record<string, string> = {}) =>
  new Request(url, { method: "POST", body, headers, duplex: "half" } as RequestInit);

/** A body of `bytes` bytes that declares no length, as a chunked upload arrives. */
function chunked(bytes: number, chunk = 100): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= bytes) return controller.close();
      const size = Math.min(chunk, bytes - sent);
      sent += size;
      controller.enqueue(new Uint8Array(size));
    },
  });
}

describe("the body limit (src/policy/body.ts)", () => {
  test("the longest path prefix wins, other paths get the default", () => {
    const limitOf = bodyLimits(1_000, { "/uploads/": 50_000, "/uploads/small/": 10 });
    const at = (url: string) => new Request(url);
    expect(limitOf(at("http://h/uploads/a"))).toBe(50_000);
    expect(limitOf(at("http://h/uploads/small/a?x=1"))).toBe(10);
    expect(limitOf(at("http://h/other"))).toBe(1_000);
    expect(bodyLimits(7)(at("http://h/uploads/a"))).toBe(7);
  });

  test("a declared Content-Length over the limit is answered 413 JSON before the app runs; at the limit the app runs", async () => {
    let ran = 0;
    const fetch = withDeclaredBodyLimit(() => (ran += 1, new Response("ran")), bodyLimits(5));
    const refused = await fetch(post("http://h/x", "123456", { "content-length": "6" }));
    expect(refused.status).toBe(413);
    expect(refused.headers.get("connection")).toBe("close");
    expect(await refused.json()).toEqual({ error: "payload_too_large", message: "The request body is larger than the limit of 5 bytes" });
    expect(ran).toBe(0);
    expect(await (await fetch(post("http://h/x", "12345", { "content-length": "5" }))).text()).toBe("ran");
    expect(ran).toBe(1);
  });

  test("a per-path limit raises the declared limit for that path only", async () => {
    const fetch = withDeclaredBodyLimit(() => new Response("ran"), bodyLimits(5, { "/big/": 100 }));
    const fifty = { "content-length": "50" };
    expect((await fetch(post("http://h/big/x", "x".repeat(50), fifty))).status).toBe(200);
    expect((await fetch(post("http://h/x", "x".repeat(50), fifty))).status).toBe(413);
  });

  test("a body without a declared length fails to read past the limit, and the request is marked with the 413", async () => {
    const request = limitBody(post("http://h/x", chunked(1_000)), 500);
    const error = await request.text().then(() => undefined, (e: unknown) => e);
    expect(error).toBeDefined();
    expect(overBodyLimit(request)?.status).toBe(413);
    const under = limitBody(post("http://h/x", chunked(500)), 500);
    expect((await under.arrayBuffer()).byteLength).toBe(500);
    expect(overBodyLimit(under)).toBeUndefined();
  });
});

describe("one answer to an error (src/policy/errors.ts)", () => {
  test("an error is 500 internal_error with nothing of it, and one handler_error event with its stack", async () => {
    const { logger, events, lines } = recorder();
    const res = errorResponse(new Error("secret detail"), new Request("http://h/p?q=1"), logger);
    expect(res.status).toBe(500);
    const body = await res.text();
    expect(JSON.parse(body).error).toBe("internal_error");
    expect(body).not.toContain("secret");
    expect(events.map((e) => e.event)).toEqual(["handler_error"]);
    const line = JSON.parse(lines[0]!);
    expect(line.path).toBe("/p");
    expect(line.error.message).toBe("secret detail");
    expect(line.error.stack).toContain("secret detail");
  });

  test("an HTTPException is its own response, and nothing is logged", async () => {
    const { logger, events } = recorder();
    const res = errorResponse(new HTTPException(418, { message: "teapot" }), new Request("http://h/"), logger);
    expect(res.status).toBe(418);
    expect(await res.text()).toBe("teapot");
    expect(events).toEqual([]);
  });

  test("any error while reading a body cut at the limit is the 413", async () => {
    const { logger, events } = recorder();
    const request = limitBody(post("http://h/x", chunked(100)), 10);
    await request.text().catch(() => {});
    const res = errorResponse(new TypeError("the runtime's own words"), request, logger);
    expect(res.status).toBe(413);
    expect(events).toEqual([]);
  });

  test("a Hono app with Hono's default error handler answers with it; its middleware still sees the response", async () => {
    const { logger, events } = recorder();
    const app = new Hono();
    app.use(async (c, next) => {
      await next();
      c.header("x-after", "seen");
    });
    app.get("/throw", () => {
      throw new Error("boom");
    });
    const fetch = withLifecycle(fetchOf(app), { logger });
    const res = await fetch(new Request("http://h/throw"));
    expect(res.status).toBe(500);
    expect(res.headers.get("x-after")).toBe("seen");
    expect((await res.json()).error).toBe("internal_error");
    expect(events.map((e) => e.event)).toEqual(["handler_error"]);
  });

  test("an app's own onError wins", async () => {
    const { logger, events } = recorder();
    const app = new Hono().get("/throw", () => {
      throw new Error("boom");
    });
    app.onError((_error, c) => c.text("mine", 503));
    const res = await withLifecycle(fetchOf(app), { logger })(new Request("http://h/throw"));
    expect(res.status).toBe(503);
    expect(await res.text()).toBe("mine");
    expect(events).toEqual([]);
  });

  test("a fetch handler that throws or rejects gets the same answer", async () => {
    const { logger, events } = recorder();
    const throws: FetchHandler = () => {
      throw new Error("sync");
    };
    const rejects = withLifecycle<FetchHandler>(() => Promise.reject(new Error("async")), { logger });
    const sync = withLifecycle(throws, { logger });
    expect((await sync(new Request("http://h/a"))).status).toBe(500);
    expect((await rejects(new Request("http://h/b"))).status).toBe(500);
    expect(events.map((e) => e.event)).toEqual(["handler_error", "handler_error"]);
  });
});

describe("every stream followed to its end (src/policy/lifecycle.ts)", () => {
  trackStreamingResponses();

  test("instanceof Response holds for every response once responses are marked", () => {
    expect(new Response("x") instanceof Response).toBe(true);
    expect(Response.json({}) instanceof Response).toBe(true);
    const base = Object.getPrototypeOf(Response) as typeof Response;
    expect(new base("x") instanceof Response).toBe(true);
  });

  test("a client that leaves a stream the app made without any helper is aborted, once; one read to its end is finished", async () => {
    const { logger, events } = recorder();
    const outcomes: Outcome[] = [];
    const app = new Hono().get(
      "/stream",
      (c) => c.body(new ReadableStream({ pull: (controller) => controller.enqueue(new Uint8Array(1)) })),
    )
      .get("/short", (c) => c.body(chunked(3, 1)));
    const fetch = withLifecycle(fetchOf(app), { logger, onOutcome: (outcome) => outcomes.push(outcome) });
    const left = await fetch(new Request("http://h/stream"));
    const reader = left.body!.getReader();
    await reader.read();
    await reader.cancel("gone");
    const whole = await fetch(new Request("http://h/short"));
    expect((await whole.arrayBuffer()).byteLength).toBe(3);
    expect(outcomes).toEqual(["aborted", "finished"]);
    expect(events.map((e) => e.event)).toEqual(["request_aborted"]);
  });

  test("a response with a body of fixed size is finished as it returns", async () => {
    const outcomes: Outcome[] = [];
    const fetch = withLifecycle(fetchOf(new Hono().get("/", (c) => c.text("now"))), {
      logger: recorder().logger,
      onOutcome: (outcome) => outcomes.push(outcome),
    });
    const res = await fetch(new Request("http://h/"));
    expect(outcomes).toEqual(["finished"]);
    expect(await res.text()).toBe("now");
  });
});
