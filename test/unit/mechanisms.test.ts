import { describe, expect, test } from "bun:test";
import { createServer } from "node:http";
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { BUN_MAX_IDLE_MS, BUN_MAX_IDLE_SECONDS, bunIdleSeconds, rearmBeforeEnd } from "../../adapters/bun/_idle.ts";
import { BUN_TICK_MS, BUN_TICK_SLOP_MS, capabilities } from "../_capabilities.ts";
import { reapIdleConnections } from "../../adapters/node/_idle_reaper.ts";
import {
  acceptFailures,
  checkConnectionLimit,
  connectionLimit,
  FD_RESERVE,
  fdBudget,
  fdWatchDelayMs,
  refusals,
} from "../../adapters/_connection_limit.ts";
import { bodyWithLimits, guardBody, releaseBody } from "../../adapters/_request_body.ts";
import { overBodyLimit } from "../../src/policy/body.ts";
import { optionWording, resolveServeOptions } from "../../src/policy/config.ts";
import { notifyFinish, type Outcome, reportClientGone, requestLifecycle, withLifecycle } from "../../src/policy/lifecycle.ts";
import { createLogger } from "../../src/policy/log.ts";
import { createRegistry } from "../../src/policy/metrics.ts";
import { countEvents, POLICY_EVENTS } from "../../src/policy/telemetry.ts";
import { completeResponses, get } from "../../harness/http.ts";
import { spawnFollowed } from "../../harness/process.ts";
import { connect } from "../../harness/raw_client.ts";
import { using } from "../../harness/wait.ts";

const encoder = new TextEncoder();

function streamOf(chunks: string[], gapMs = 0): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (i > 0 && gapMs > 0) await Bun.sleep(gapMs);
      if (i === chunks.length) controller.close();
      else controller.enqueue(encoder.encode(chunks[i++]));
    },
  });
}

describe("withLifecycle (src/lifecycle.ts)", () => {
  /** An app with a synchronous route, an async one that waits for `release`, and one that asks for its lifecycle. */
  function lifecycleApp() {
    const outcomes: Outcome[] = [];
    const events: string[] = [];
    let release = () => {};
    const app = new Hono();
    app.get("/sync", (c) => c.text("now"));
    app.get("/async", async (c) => {
      await new Promise<void>((resolve) => (release = resolve));
      return c.text("later");
    });
    app.get("/asks", async (c) => {
      const before = requestLifecycle(c);
      await Bun.sleep(1);
      expect(requestLifecycle(c)).toBe(before);
      return c.text("asked");
    });
    const logger = createLogger(() => {}, {}, (event) => events.push(event));
    const fetch = withLifecycle(app.fetch, { logger, onOutcome: (outcome) => outcomes.push(outcome) });
    return { fetch, outcomes, events, release: () => release() };
  }

  test("a response returned synchronously is finished as it returns; a report after that changes nothing", async () => {
    const { fetch, outcomes, events } = lifecycleApp();
    const request = new Request("http://127.0.0.1/sync");
    const res = fetch(request);
    expect(res).toBeInstanceOf(Response);
    expect(outcomes).toEqual(["finished"]);
    reportClientGone(request);
    expect(await (res as Response).text()).toBe("now");
    expect(outcomes).toEqual(["finished"]);
    expect(events).toEqual([]);
  });

  test("a client reported gone while the handler works is aborted once, and its late response is not finished", async () => {
    const { fetch, outcomes, events, release } = lifecycleApp();
    const request = new Request("http://127.0.0.1/async");
    const pending = fetch(request);
    expect(pending).toBeInstanceOf(Promise);
    reportClientGone(request);
    reportClientGone(request);
    expect(outcomes).toEqual(["aborted"]);
    expect(events).toEqual(["request_aborted"]);
    release();
    expect((await pending).status).toBe(200);
    expect(outcomes).toEqual(["aborted"]);
  });

  test("a handler sees one lifecycle before and after its first await, and it finishes", async () => {
    const { fetch, outcomes } = lifecycleApp();
    const res = await fetch(new Request("http://127.0.0.1/asks"));
    expect(await res.text()).toBe("asked");
    expect(outcomes).toEqual(["finished"]);
  });

  test("requestLifecycle() outside a wrapped fetch says what it needs", async () => {
    const app = new Hono();
    app.get("/", (c) => c.text(String(notifyFinish(c))));
    app.onError((error, c) => c.text(error.message, 500));
    const res = await app.request("/");
    expect(res.status).toBe(500);
    expect(await res.text()).toContain("needs the app.fetch that withLifecycle() wraps");
  });
});

describe("bunIdleSeconds (adapters/bun/_idle.ts)", () => {
  test("0 disables", () => {
    expect(bunIdleSeconds(0)).toBe(0);
  });

  test("the close window (4(k-1), 4k] s never opens before IDLE_TIMEOUT and ends by 4*ceil(T/4)+4 s", () => {
    for (let ms = 1; ms <= BUN_MAX_IDLE_MS; ms += ms < 20_000 ? 250 : 997) {
      const seconds = bunIdleSeconds(ms);
      expect(seconds).toBeLessThanOrEqual(BUN_MAX_IDLE_SECONDS);
      const k = Math.ceil((seconds * 1000) / BUN_TICK_MS);
      expect(BUN_TICK_MS * (k - 1)).toBeGreaterThanOrEqual(ms);
      expect(BUN_TICK_MS * k).toBeLessThanOrEqual(BUN_TICK_MS * Math.ceil(ms / BUN_TICK_MS) + BUN_TICK_MS);
    }
  });

  test("examples", () => {
    expect(bunIdleSeconds(2_000)).toBe(8);
    expect(bunIdleSeconds(4_000)).toBe(8);
    expect(bunIdleSeconds(4_001)).toBe(12);
    expect(bunIdleSeconds(75_000)).toBe(80);
    expect(bunIdleSeconds(252_000)).toBe(255);
  });

  test("the declared lateness matches the window", () => {
    expect(capabilities["bun-serve"].idleCloseLateMs(4_000)).toBe(4_000 + BUN_TICK_SLOP_MS);
    expect(capabilities["bun-serve"].idleCloseLateMs(2_000)).toBe(6_000 + BUN_TICK_SLOP_MS);
    expect(capabilities["bun-serve"].idleCloseLateMs(75_000)).toBe(5_000 + BUN_TICK_SLOP_MS);
  });
});

describe("rearmBeforeEnd (adapters/bun/_idle.ts)", () => {
  test("calls beforeEnd once, before the reader sees the end", async () => {
    const calls: string[] = [];
    const reader = rearmBeforeEnd(streamOf(["a", "b"]), () => calls.push("rearm")).getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      calls.push(done ? "done" : decoder.decode(value));
      if (done) break;
    }
    expect(calls).toEqual(["a", "b", "rearm", "done"]);
  });

  test("a cancel reaches the source and does not re-arm", async () => {
    let cancelled: unknown;
    let rearmed = false;
    const source = new ReadableStream<Uint8Array>({ cancel: (reason) => void (cancelled = reason) });
    await rearmBeforeEnd(source, () => (rearmed = true)).cancel("gone");
    expect(cancelled).toBe("gone");
    expect(rearmed).toBe(false);
  });
});

describe("bodyWithLimits (adapters/_request_body.ts)", () => {
  const guard = (timeoutMs: number, onExpire = () => {}, limitBytes = 1_000) => ({ timeoutMs, limitBytes, onExpire });

  test("a body that ends in time passes through unchanged", async () => {
    let expired = false;
    const body = bodyWithLimits(streamOf(["ab", "cd"], 20), guard(1_000, () => (expired = true))).body;
    expect(await new Response(body).text()).toBe("abcd");
    expect(expired).toBe(false);
  });

  test("a body still arriving at the deadline fails with a 408 HTTPException, on time", async () => {
    let expiredAt = 0;
    const started = Date.now();
    const body = bodyWithLimits(streamOf(["a", "b", "c", "d"], 150), guard(300, () => (expiredAt = Date.now()))).body;
    const error = await new Response(body).text().then(() => null, (e: unknown) => e);
    expect(error).toBeInstanceOf(HTTPException);
    expect((error as HTTPException).status).toBe(408);
    expect((error as HTTPException).getResponse().headers.get("connection")).toBe("close");
    expect(expiredAt - started).toBeGreaterThanOrEqual(295);
    expect(expiredAt - started).toBeLessThan(450);
  });

  test("a body past its limit fails with a 413 HTTPException at the first byte over, and says so once", async () => {
    const cuts: HTTPException[] = [];
    const body = bodyWithLimits(streamOf(["abc", "def", "ghi"], 5), guard(1_000, () => {}, 5), (cut) => cuts.push(cut)).body;
    const error = await new Response(body).text().then(() => null, (e: unknown) => e);
    expect((error as HTTPException).status).toBe(413);
    expect(cuts).toEqual([error as HTTPException]);
    const answer = (error as HTTPException).getResponse();
    expect(answer.headers.get("content-type")).toContain("application/json");
    expect((await answer.json()).error).toBe("payload_too_large");
  });

  test("a body exactly at its limit passes", async () => {
    const body = bodyWithLimits(streamOf(["abc", "de"], 5), guard(1_000, () => {}, 5)).body;
    expect(await new Response(body).text()).toBe("abcde");
  });

  test("cancelling the body stops the deadline", async () => {
    let expired = false;
    const body = bodyWithLimits(streamOf(["a"], 10), guard(50, () => (expired = true))).body;
    await body.cancel();
    await Bun.sleep(100);
    expect(expired).toBe(false);
  });
});

describe("guardBody and releaseBody (adapters/_request_body.ts)", () => {
  const post = (body: ReadableStream<Uint8Array>) =>
    new Request("http://127.0.0.1/echo", { method: "POST", body, duplex: "half" } as RequestInit);
  const guard = (timeoutMs: number, onExpire = () => {}, limitBytes = 1_000) => ({ timeoutMs, limitBytes, onExpire });

  test("the rest of a body the app did not read is drained once, and the connection can go on", async () => {
    let expired = false;
    const request = guardBody(post(streamOf(["a", "b"], 20)), guard(1_000, () => (expired = true)));
    const drained = releaseBody(request);
    expect(releaseBody(request)).toBeUndefined();
    expect(await drained).toBe(true);
    expect(expired).toBe(false);
  });

  test("a rest that does not arrive by the deadline cannot be drained: the adapter closes the connection", async () => {
    let expired = false;
    const request = guardBody(post(streamOf(["a", "b", "c"], 60)), guard(80, () => (expired = true)));
    expect(await releaseBody(request)).toBe(false);
    expect(expired).toBe(true);
  });

  test("a rest over the limit cannot be drained, and marks the request over its limit", async () => {
    const request = guardBody(post(streamOf(["abc", "def"], 5)), guard(1_000, () => {}, 4));
    expect(await releaseBody(request)).toBe(false);
    expect(overBodyLimit(request)?.status).toBe(413);
  });

  test("a body read to its end, or no body at all, is nothing to release", async () => {
    const request = guardBody(post(streamOf(["ab"], 5)), guard(1_000));
    expect(await request.text()).toBe("ab");
    expect(releaseBody(request)).toBeUndefined();
    expect(releaseBody(guardBody(new Request("http://127.0.0.1/"), guard(1_000)))).toBeUndefined();
  });

  test("with REQUEST_TIMEOUT=0 a body is still guarded, with no deadline", async () => {
    let expired = false;
    const request = guardBody(post(streamOf(["a"], 10)), guard(0, () => (expired = true)));
    await Bun.sleep(30);
    expect(await releaseBody(request)).toBe(true);
    expect(expired).toBe(false);
  });
});

describe("reapIdleConnections (adapters/node/_idle_reaper.ts), on this runtime's node:http", () => {
  async function withReapedServer(
    idleMs: number,
    fn: (port: number, reaped: number[], closeIdle: () => void, slowArrived: Promise<void>) => Promise<void>,
  ) {
    let arrived = () => {};
    const slowArrived = new Promise<void>((resolve) => (arrived = resolve));
    const server = createServer((req, res) => {
      if (req.url?.startsWith("/slow")) {
        arrived();
        setTimeout(() => res.end("slow"), idleMs + 500);
      } else {
        res.end("ok");
      }
    });
    const reaped: number[] = [];
    const reaper = reapIdleConnections(server, idleMs, (socket) => reaped.push(socket.remotePort ?? 0));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      await fn((server.address() as { port: number }).port, reaped, () => reaper.closeIdle(), slowArrived);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  }

  test("an idle connection is closed after the timeout and reported", () =>
    withReapedServer(500, (port, reaped) =>
      using(async (defer) => {
        const client = await connect(port);
        defer(() => client.destroy());
        const localPort = client.socket.localPort;
        client.write(get("/"));
        const answeredAt = await client.waitFor((d) => completeResponses(d) === 1, 1_000, "a response");
        const closedAt = await client.waitForClose(2_000);
        expect(closedAt - answeredAt).toBeGreaterThanOrEqual(400);
        expect(closedAt - answeredAt).toBeLessThanOrEqual(1_000);
        expect(reaped).toEqual([localPort!]);
      })), 10_000);

  test("a request in flight longer than the timeout is not reaped", () =>
    withReapedServer(300, (port, reaped) =>
      using(async (defer) => {
        const client = await connect(port);
        defer(() => client.destroy());
        client.write(get("/slow"));
        await client.waitFor((d) => d.includes("slow"), 2_000, "the slow response");
        expect(reaped).toEqual([]);
      })), 10_000);

  test(
    "closeIdle closes idle connections and leaves busy ones",
    () =>
      withReapedServer(5_000, (port, _reaped, closeIdle, slowArrived) =>
        using(async (defer) => {
          const idle = await connect(port);
          defer(() => idle.destroy());
          idle.write(get("/"));
          await idle.waitFor((d) => completeResponses(d) === 1, 1_000, "a response");
          const busy = await connect(port);
          defer(() => busy.destroy());
          busy.write(get("/slow"));
          await slowArrived;
          closeIdle();
          await idle.waitForClose(1_000);
          await busy.waitFor((d) => d.includes("slow"), 7_000, "the busy response, uncut");
        })),
    15_000,
  );
});

describe("connection limit (adapters/_connection_limit.ts)", () => {
  const config = (maxConnections: number | null) => ({ ...baseConfig, maxConnections });
  const baseConfig = resolveServeOptions({});

  test("maxConnections wins; null means the fd limit's room; 0 means none", () => {
    expect(connectionLimit(config(0))).toBeNull();
    expect(connectionLimit(config(50))).toEqual({ max: 50, source: "maxConnections" });
    const fds = fdBudget();
    expect(fds).toBeDefined(); // Linux: /proc/self is there
    expect(connectionLimit(config(null))).toEqual({ max: fds!.budget, source: "fd limit" });
    expect(fds!.budget).toBe(fds!.limit - fds!.open - FD_RESERVE);
  });

  test("the fd watchdog looks before the headroom could run out: every second near the limit, every 10 s far from it", () => {
    expect(fdWatchDelayMs(256, 20, 0)).toBe(1_000); // the incident's ulimit -n 256
    expect(fdWatchDelayMs(1_024, 20, 0)).toBeCloseTo(1_004);
    expect(fdWatchDelayMs(20_000, 20, 0)).toBe(10_000);
    expect(fdWatchDelayMs(5_000, 20, 0)).toBeCloseTo(4_980);
    expect(fdWatchDelayMs(20_000, 20, 10_000)).toBeCloseTo(1_998); // growing fast: sooner
    expect(fdWatchDelayMs(256, 256, 0)).toBe(1_000); // exhausted: every second, to see it recover
  });

  test("a maxConnections above the fd limit's room is refused, naming the option", () => {
    const { budget, limit } = fdBudget()!;
    expect(checkConnectionLimit(config(budget))).toEqual([]);
    const [problem] = checkConnectionLimit(config(budget + 1));
    expect(problem).toMatchObject({ option: "maxConnections", value: budget + 1 });
    expect(problem!.say(optionWording)).toStartWith(
      `maxConnections ${budget + 1} is more than this process can open: its file-descriptor limit is ${limit}`,
    );
    expect(problem!.say(optionWording)).toEndWith(`use at most ${budget}, or raise the limit`);
  });

  test("refusals are logged at once, then summarised at most once a second", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger((line) => lines.push(JSON.parse(line)));
    const refused = refusals(logger, { max: 3, source: "maxConnections" });
    const started = Date.now();
    for (let i = 0; i < 5; i++) refused();
    expect(lines.map((l) => l.count)).toEqual([1]);
    while (lines.length < 2 && Date.now() - started < 1_500) await Bun.sleep(20);
    expect(lines.map((l) => l.count)).toEqual([1, 4]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(lines[1]).toMatchObject({ level: "warn", event: "connections_refused", max: 3, source: "maxConnections" });
  }, 5_000);

  test("the telemetry counts a summary by its count", async () => {
    const registry = createRegistry();
    const logger = countEvents(createLogger(() => {}), registry, POLICY_EVENTS);
    logger.warn("connections_refused", { count: 4 });
    logger.warn("connections_refused", { count: 1 });
    logger.error("accept_failed", { count: 2, code: "EMFILE" });
    const text = await registry.render();
    expect(text).toContain("\nconnections_refused_total 5\n");
    expect(text).toContain("\naccept_failures_total 2\n");
  });

  test("accept failures name the code, Deno's os error 24 included", () => {
    const lines: Array<Record<string, unknown>> = [];
    const failed = acceptFailures(createLogger((line) => lines.push(JSON.parse(line))));
    failed(new Error("Too many open files (os error 24)"));
    expect(lines[0]).toMatchObject({ level: "error", event: "accept_failed", count: 1, code: "EMFILE" });
  });
});

describe("spawnFollowed (harness/process.ts)", () => {
  test("every line of a child that writes far more than a pipe holds arrives, in order, and then its exit code", async () => {
    const stdout: string[] = [];
    const stderr: string[] = [];
    const script = `for (let i = 0; i < 30000; i++) process.stdout.write("line " + i + " ${"x".repeat(90)}\\n");` +
      `process.stderr.write("no newline at the end"); process.exitCode = 3;`;
    const child = spawnFollowed(
      ["node", "-e", script],
      { env: process.env, stdin: "ignore" },
      (line) => stdout.push(line),
      (line) => stderr.push(line),
    );
    expect(await child.done).toBe(3);
    expect(stdout).toHaveLength(30_000);
    expect(stdout[0]).toStartWith("line 0 x");
    expect(stdout[29_999]).toStartWith("line 29999 x");
    expect(stdout.every((line, i) => line.startsWith(`line ${i} `))).toBe(true);
    expect(stderr).toEqual(["no newline at the end"]);
  }, 15_000);

  test("lines are read while the child runs, not only once it has exited", async () => {
    let ready: () => void;
    const sawReady = new Promise<void>((resolve) => (ready = resolve));
    const lines: string[] = [];
    // The child says it is ready, then waits for its stdin to close before it says goodbye.
    const script = `console.log("ready"); process.stdin.resume(); process.stdin.on("end", () => console.log("bye"));`;
    const child = spawnFollowed(["node", "-e", script], { env: process.env, stdin: "pipe" }, (line) => {
      lines.push(line);
      if (line === "ready") ready();
    }, () => {});
    try {
      await sawReady;
      expect(child.proc.exitCode).toBeNull();
      expect(lines).toEqual(["ready"]);
      child.proc.stdin.end();
      expect(await child.done).toBe(0);
      expect(lines).toEqual(["ready", "bye"]);
    } finally {
      child.proc.kill("SIGKILL");
    }
  }, 15_000);
});
