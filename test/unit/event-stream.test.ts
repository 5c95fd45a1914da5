import { describe, expect, test } from "bun:test";
import { eventStreamBody, isEventStream } from "../../src/policy/event_stream.ts";
import type { Outcome } from "../../src/policy/lifecycle.ts";
import { LONG_LIVED_DEFAULTS, LongLived, SSE_RETRY_MS } from "../../src/policy/long_lived.ts";

/** SSE_HEARTBEAT here: short, so that a test waits a few of them. */
const HEARTBEAT_MS = 50;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * An app's event stream whose chunks the test writes by hand, passed through the event-stream
 * policy as the lifecycle does it, and read as a runtime reads a response body.
 */
function harness(longLived = new LongLived({ ...LONG_LIVED_DEFAULTS, sseHeartbeatMs: HEARTBEAT_MS })) {
  let app!: ReadableStreamDefaultController<Uint8Array>;
  const source = { cancelled: false };
  const appStream = new ReadableStream<Uint8Array>({
    start: (c) => void (app = c),
    cancel: () => void (source.cancelled = true),
  });
  const outcomes: Outcome[] = [];
  const body = eventStreamBody(appStream, longLived, (outcome) => outcomes.push(outcome));
  const reader = body.getReader();
  let text = "";
  let done = false;
  const reading = (async () => {
    for (;;) {
      const chunk = await reader.read().catch(() => ({ done: true as const, value: undefined }));
      if (chunk.done) return void (done = true);
      text += decoder.decode(chunk.value);
    }
  })();
  return {
    longLived,
    source,
    outcomes,
    write: (s: string) => app.enqueue(encoder.encode(s)),
    get text() {
      return text;
    },
    get done() {
      return done;
    },
    reading,
    cancel: (reason?: unknown) => reader.cancel(reason),
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const count = (text: string, part: string) => text.split(part).length - 1;

describe("the event-stream policy on any text/event-stream body (src/policy/event_stream.ts)", () => {
  test("the content type is recognised with parameters and in any case, and nothing else is", () => {
    expect(isEventStream(new Headers({ "content-type": "text/event-stream" }))).toBe(true);
    expect(isEventStream(new Headers({ "content-type": "Text/Event-Stream; charset=utf-8" }))).toBe(true);
    expect(isEventStream(new Headers({ "content-type": "text/plain" }))).toBe(false);
    expect(isEventStream(new Headers())).toBe(false);
  }, 1_000);

  test("a quiet stream gets a comment line every SSE_HEARTBEAT, counted from the last write", async () => {
    const s = harness();
    s.write("data: a\n\n");
    await sleep(HEARTBEAT_MS * 3.5);
    // Three quiet heartbeats; allow one either side for timer scheduling on a loaded machine.
    expect(count(s.text, ": heartbeat\n")).toBeGreaterThanOrEqual(2);
    expect(count(s.text, ": heartbeat\n")).toBeLessThanOrEqual(4);
    expect(s.text.startsWith("data: a\n\n: heartbeat\n")).toBe(true);
    s.longLived.cut();
  }, 2_000);

  test("a stream that writes more often than SSE_HEARTBEAT gets no heartbeat", async () => {
    const s = harness();
    for (let i = 0; i < 8; i++) {
      s.write(`data: ${i}\n\n`);
      await sleep(HEARTBEAT_MS / 3);
    }
    expect(s.text).not.toContain("heartbeat");
    s.longLived.cut();
  }, 2_000);

  test("no heartbeat splits a line the app has not finished; it comes once the line ends", async () => {
    const s = harness();
    s.write("data: par");
    await sleep(HEARTBEAT_MS * 3);
    expect(s.text).toBe("data: par");
    s.write("tial\n");
    await sleep(HEARTBEAT_MS * 2);
    // A comment line inside an unfinished event is ignored by the client and dispatches nothing.
    expect(s.text.startsWith("data: partial\n: heartbeat\n")).toBe(true);
    expect(s.text).not.toContain("\n\n");
    s.longLived.cut();
  }, 2_000);

  test("shutdown at a line's start: retry: and the end at once, the app's stream cancelled, finished", async () => {
    const s = harness();
    s.write("id: 1\ndata: a\n\n");
    await sleep(10);
    const closed = s.longLived.closeAll();
    await s.reading;
    expect(s.text).toBe(`id: 1\ndata: a\n\nretry: ${SSE_RETRY_MS}\n`);
    expect(s.source.cancelled).toBe(true);
    expect(s.outcomes).toEqual(["finished"]);
    await closed;
    expect(s.longLived.size).toBe(0);
  }, 2_000);

  test("shutdown in the middle of a line waits for its end: the client never parses a split line", async () => {
    const s = harness();
    s.write("data: par");
    await sleep(10);
    void s.longLived.closeAll();
    await sleep(20);
    expect(s.done).toBe(false);
    s.write("tial\n");
    await s.reading;
    // No empty line after it: the unfinished event is dropped by the client, as the format says.
    expect(s.text).toBe(`data: partial\nretry: ${SSE_RETRY_MS}\n`);
    expect(s.outcomes).toEqual(["finished"]);
  }, 2_000);

  test("a stream that begins after step 5 is ended at once", async () => {
    const longLived = new LongLived({ ...LONG_LIVED_DEFAULTS, sseHeartbeatMs: HEARTBEAT_MS });
    await longLived.closeAll();
    const s = harness(longLived);
    await s.reading;
    expect(s.text).toBe(`retry: ${SSE_RETRY_MS}\n`);
    expect(s.source.cancelled).toBe(true);
  }, 2_000);

  test("a client that leaves cancels the app's stream, is aborted, and leaves the server's count", async () => {
    const s = harness();
    s.write("data: a\n\n");
    await sleep(10);
    expect(s.longLived.size).toBe(1);
    await s.cancel(new Error("client gone"));
    expect(s.source.cancelled).toBe(true);
    expect(s.outcomes).toEqual(["aborted"]);
    expect(s.longLived.size).toBe(0);
  }, 2_000);

  test("cut at SHUTDOWN_TIMEOUT: the body fails, the app's stream is cancelled, counted once", async () => {
    const s = harness();
    s.write("data: par");
    await sleep(10);
    void s.longLived.closeAll();
    expect(s.longLived.cut()).toBe(1);
    await s.reading;
    expect(s.source.cancelled).toBe(true);
    expect(s.outcomes).toEqual(["aborted"]);
  }, 2_000);

  test("an app's stream that ends by itself is finished, with nothing added", async () => {
    let app!: ReadableStreamDefaultController<Uint8Array>;
    const outcomes: Outcome[] = [];
    const body = eventStreamBody(new ReadableStream({ start: (c) => void (app = c) }), undefined, (o) => outcomes.push(o));
    app.enqueue(encoder.encode("data: a\n\n"));
    app.close();
    expect(await new Response(body).text()).toBe("data: a\n\n");
    expect(outcomes).toEqual(["finished"]);
  }, 2_000);
});
