import type { Target } from "../harness/servers.ts";
import type { Engine } from "../src/policy/types.ts";
import { PLATFORM_OWNED, WORKERD_LIMITS } from "../src/main/_workerd_platform.ts";

export type { Target };

/** The policy's clauses a platform can own instead of the server: the suite skips their scenarios there. */
export type Clause = "idle" | "slowClients" | "shutdown";

/** What an adapter can and cannot do on its runtime; the conformance suite reads these. */
export interface Capabilities {
  /**
   * The clauses the platform owns instead of the server (Cloudflare Workers: no socket, no signal,
   * no setting), each with why and where it is checked instead: the suite skips their scenarios,
   * naming it. Empty for a server engine, which owns every clause.
   */
  platformOwns: Partial<Record<Clause, string>>;
  /**
   * The variables the platform owns, each refused at startup in one line: its name, its value
   * quoted, then this. None on a server engine.
   */
  ownedVariables: Readonly<Record<string, string>>;
  /**
   * An idle timeout the runtime imposes whatever IDLE_TIMEOUT says (workerd's 15 s, which cannot be
   * set), or null when IDLE_TIMEOUT applies. Work must outlast its `max` (clause 2).
   */
  fixedIdleTimeoutMs: { min: number; max: number } | null;
  /**
   * How late the app hears of a client that closed (FIN) while its response was in flight: null
   * when within 100 ms of the close, as for a reset; else within this many ms of the server's next
   * write after the close (workerd learns of a close only when it writes).
   */
  closeNoticeAfterNextWriteMs: number | null;
  /** How late an idle connection may close after IDLE_TIMEOUT, for a timeout of `idleTimeoutMs`. */
  idleCloseLateMs(idleTimeoutMs: number): number;
  /** Whether the adapter logs `idle_timeout` when it closes an idle connection. */
  logsIdleTimeout: boolean;
  /** A fixed limit the runtime imposes on a connection that never completes a request head, or null when HEADERS_TIMEOUT applies. */
  fixedHeadersTimeoutMs: { min: number; max: number } | null;
  /** How late HEADERS_TIMEOUT and REQUEST_TIMEOUT may fire. */
  deadlineLateMs: number;
  /** Whether a head that misses HEADERS_TIMEOUT is answered with 408 before the close. */
  headersTimeoutSends408: boolean;
  /** The longest IDLE_TIMEOUT this engine can honour; a longer one is refused at startup. */
  maxIdleTimeoutMs: number | null;
  /** Behaviour the runtime itself breaks and the adapter cannot repair, with the reason. */
  unsupported: Partial<
    Record<
      | "pipelineBehindSlowResponse"
      | "unfinishedGetBody"
      | "fdExhaustionRecovery"
      | "keepAliveHint"
      | "keepAliveHintOnClose"
      | "closeNoticeWhileSilent"
      | "metrics"
      | "listeningAddress"
      | "trustProxy",
      string
    >
  >;
  /**
   * What this target cannot do of the long-lived policy (#20), each with why: the WebSocket and
   * SSE block (test/_long_lived.ts) skips those scenarios naming it. Absent: it does all of it.
   */
  longLived?: Partial<Record<LongLivedGap, string>>;
}

/** The parts of the long-lived policy a target may be unable to hold (test/_long_lived.ts). */
export type LongLivedGap =
  | "pings"
  | "tooBigBeforeBuffered"
  | "slowReader"
  | "connectionLimit"
  | "closingHandshake"
  | "honoHelper"
  | "honoHelperRefused";

/** What a server engine's parser does with hostile input, which the hardening suite reads. */
export interface EngineCapabilities extends Capabilities {
  /**
   * What the runtime's parser answers to a malformed request, which the app never sees: 400, and
   * on some runtimes 505 for a request line it cannot read, or 0 for a close without an answer.
   */
  malformedStatuses: number[];
  /** What the runtime's parser answers to a request head too large for it (the app never sees it). */
  headTooLargeStatus: 431 | 400;
}

/** What every server engine declares alike: it owns its connections, and hears of a close at once. */
const serverEngine = {
  platformOwns: {},
  ownedVariables: {},
  fixedIdleTimeoutMs: null,
  closeNoticeAfterNextWriteMs: null,
} satisfies Partial<Capabilities>;

import { BUN_TICK_MS } from "../adapters/bun/_idle.ts";

export { BUN_TICK_MS };
/** How late past its tick a Bun timer has been seen to fire. */
export const BUN_TICK_SLOP_MS = 100;

/**
 * When this engine closes a connection whose head never completes: its own fixed limit where it
 * has one (Bun.serve), else HEADERS_TIMEOUT; at the latest its declared lateness after that.
 */
export function headDeadlineWindow(caps: Capabilities, headersTimeoutMs: number): { min: number; max: number } {
  const fixed = caps.fixedHeadersTimeoutMs;
  return fixed
    ? { min: fixed.min, max: fixed.max + caps.deadlineLateMs }
    : { min: headersTimeoutMs, max: headersTimeoutMs + caps.deadlineLateMs };
}

/** node:http's own numbers, on Node and under Deno's node:http compatibility. */
const nodeHttp: EngineCapabilities = {
  ...serverEngine,
  idleCloseLateMs: () => 1_000,
  logsIdleTimeout: true,
  fixedHeadersTimeoutMs: null,
  deadlineLateMs: 1_000,
  headersTimeoutSends408: true,
  maxIdleTimeoutMs: null,
  malformedStatuses: [400],
  headTooLargeStatus: 431,
  unsupported: {},
  longLived: {
    honoHelper:
      "Hono's WebSocket helper for Node (@hono/node-ws) must be injected into the node:http server, which serve() owns: on Node the one import is upgradeWebSocket from src/policy/realtime.ts (docs/policy.md#websockets)",
  },
};

/**
 * Every engine's declared precision and runtime-fixed limits, in one place: the README's table
 * and the conformance suite's bounds both come from here.
 */
export const capabilities: Record<Engine, EngineCapabilities> & Record<"workerd", Capabilities> = {
  "node-http": nodeHttp,
  "bun-serve": {
    ...serverEngine,
    // The close lands in (T, 4*ceil(T/4) + 4] s (adapters/bun/_idle.ts), plus the tick's own slop:
    // Bun closes the connections due at one tick one after another (bench/README.md, Bun's reap).
    idleCloseLateMs: (idleTimeoutMs) =>
      BUN_TICK_MS * Math.ceil(idleTimeoutMs / BUN_TICK_MS) + BUN_TICK_MS - idleTimeoutMs + BUN_TICK_SLOP_MS,
    logsIdleTimeout: false,
    // Bun.serve closes a connection that has not completed a head after about 12 s, whatever
    // idleTimeout says, and writes nothing back; no option changes it
    // (docs/runtimes.md#bun-head-limit-of-about-12-seconds).
    fixedHeadersTimeoutMs: { min: 8_000, max: 13_500 },
    deadlineLateMs: 1_000,
    headersTimeoutSends408: false,
    // server.timeout() accepts more, and still closes at 255 s.
    maxIdleTimeoutMs: 252_000,
    // Bun answers 505 to a request line it cannot read: a control byte in the target, bare LF line
    // ends, a version other than HTTP/1.0 or 1.1 (docs/policy.md#what-the-template-cannot-remove).
    malformedStatuses: [400, 505],
    headTooLargeStatus: 431,
    longLived: {
      connectionLimit:
        "Bun.serve cannot count its connections, so bun-serve refuses MAX_CONNECTIONS at startup (BUN_ENGINE=bun-node-http enforces it, WebSockets included)",
      closingHandshake:
        "Bun.serve's ws.close() sends the close frame and the FIN at once, and reports the socket closed within the call, with no way to wait for the client's answer: the server is done once every 1001 is sent, and exits then (docs/runtimes.md#bun-closes-a-websocket-without-waiting-for-the-answer)",
    },
    unsupported: {
      keepAliveHintOnClose:
        "a response that closes the connection (the client or the app said Connection: close) carries Keep-Alive: timeout=N too, and Bun.serve then closes as asked: the adapter reads no header to leave it out, since each one costs Bun.serve on every response (docs/runtimes.md#bunserve-sends-no-keep-alive-header)",
      pipelineBehindSlowResponse:
        "Bun.serve closes the connection when a pipelined request arrives while an async or streaming response is in flight, aborting both (docs/runtimes.md#bun-pipelining-bug; BUN_ENGINE=bun-node-http answers them)",
    },
  },
  "bun-node-http": {
    // The idle timer is the adapter's own (adapters/node/_idle_reaper.ts); Bun's node:http checks
    // headersTimeout about once a second (docs/runtimes.md#bun-node-http-compatibility).
    ...nodeHttp,
    deadlineLateMs: 1_500,
    longLived: {},
  },
  "deno-per-connection": {
    ...serverEngine,
    idleCloseLateMs: () => 1_000,
    logsIdleTimeout: true,
    fixedHeadersTimeoutMs: null,
    deadlineLateMs: 1_000,
    // The connection belongs to Deno's HTTP server: the adapter can close it, not write to it.
    headersTimeoutSends408: false,
    maxIdleTimeoutMs: null,
    // Deno closes a connection whose chunked framing is broken without answering
    // (docs/policy.md#what-the-template-cannot-remove).
    malformedStatuses: [400, 0],
    // Deno's parser accepts heads up to about 64 KiB and answers a larger one with a bare 400.
    headTooLargeStatus: 400,
    longLived: {
      tooBigBeforeBuffered:
        "Deno.upgradeWebSocket fixes the largest message at 64 MiB, with no option: a message over WEBSOCKET_MAX_MESSAGE still gets 1009, but only once Deno has buffered it whole (src/policy/websocket.ts checks its size then)",
    },
    unsupported: {
      keepAliveHint:
        "Deno's HTTP server sends no Keep-Alive header, and one more header costs it 4-5 µs of CPU per response: a fifth to a third of a small response's throughput, measured side by side (docs/runtimes.md#deno-serve-sends-no-keep-alive-header). Clients are not told the idle timeout on this engine; DENO_ENGINE=deno-node-http tells them",
      unfinishedGetBody:
        "Deno gives JavaScript no body for a GET or HEAD, and neither shutdown nor abort of the connection closes it while such a body is unfinished: a GET declaring a body that never arrives holds its connection until the client leaves (docs/runtimes.md#deno-get-body-on-a-per-connection-server; MAX_CONNECTIONS bounds how many; DENO_ENGINE=deno-node-http closes it at REQUEST_TIMEOUT)",
    },
  },
  "deno-node-http": {
    ...nodeHttp,
    longLived: {
      honoHelperRefused:
        "hono/deno's helper calls Deno.upgradeWebSocket, which cannot upgrade a request served by node:http: the engine answers 501 websocket_unsupported naming the import that works on every engine (docs/policy.md#websockets)",
    },
    unsupported: {
      fdExhaustionRecovery:
        "Deno's node:http stops accepting for good at its first EMFILE (docs/runtimes.md#deno-node-http-stops-accepting-at-its-first-emfile); the connection limit keeps it below the fd limit in steady state, but a burst of new connections can still reach it. The default per-connection engine recovers",
    },
  },
  // Cloudflare's runtime, locally: the platform owns the connection (src/main/_workerd_platform.ts,
  // docs/policy.md#cloudflare-workers-workerd). Its own limits are checked, as declared there, by
  // test/workerd.test.ts; what the worker itself holds runs through the shared suite.
  workerd: {
    platformOwns: {
      idle:
        `the platform's on Cloudflare Workers: ${PLATFORM_OWNED.IDLE_TIMEOUT}; test/workerd.test.ts checks local workerd's close as declared`,
      slowClients:
        `the platform's on Cloudflare Workers: ${PLATFORM_OWNED.HEADERS_TIMEOUT}, and ${PLATFORM_OWNED.REQUEST_TIMEOUT}; test/workerd.test.ts checks both as declared`,
      shutdown:
        `the platform's on Cloudflare Workers: ${PLATFORM_OWNED.SHUTDOWN_TIMEOUT}; test/workerd.test.ts checks local workerd's drain on SIGTERM as declared`,
    },
    // PORT and HOST are the local runner's: it binds the socket it asks workerd for.
    ownedVariables: Object.fromEntries(
      Object.entries(PLATFORM_OWNED)
        .filter(([name]) => name !== "PORT" && name !== "HOST")
        .map(([name, why]) => [name, `cannot be set on Cloudflare Workers: ${why}`]),
    ),
    fixedIdleTimeoutMs: WORKERD_LIMITS.idleCloseMs,
    closeNoticeAfterNextWriteMs: WORKERD_LIMITS.abortAfterNextWriteMs,
    // The platform's own close is the window above, at its latest.
    idleCloseLateMs: () => 0,
    logsIdleTimeout: false,
    fixedHeadersTimeoutMs: WORKERD_LIMITS.headCloseMs,
    deadlineLateMs: 0,
    headersTimeoutSends408: false,
    maxIdleTimeoutMs: null,
    longLived: {
      pings:
        "the platform's on Cloudflare Workers: a worker's WebSocket has no ping(), and workerd answers a client's pings itself and sends none, so WEBSOCKET_PING_INTERVAL has nothing to drive (adapters/cloudflare/_websocket.ts)",
      tooBigBeforeBuffered:
        "workerd hands a worker only whole messages, under a size limit of its own that a worker cannot set: WEBSOCKET_MAX_MESSAGE is applied once a message has arrived whole",
      honoHelper:
        "Hono's helper for Workers (hono/cloudflare-workers) makes its own WebSocketPair and answers the 101 itself, which the platform carries: its sockets are not the worker's policy's, and the pings and shutdown are the platform's anyway (docs/policy.md#cloudflare-workers-workerd)",
    },
    unsupported: {
      closeNoticeWhileSilent:
        "workerd hears of a client that closed (FIN) only when it next writes to it, and a handler at work or a body with only its end left writes nothing (docs/runtimes.md#workerd-learns-of-a-client-that-left-when-it-writes); the mid-stream scenario holds it to its next write, and test/workerd.test.ts checks the silence as declared",
      trustProxy: `the platform's on Cloudflare Workers: TRUST_PROXY ${PLATFORM_OWNED.TRUST_PROXY}`,
      metrics:
        "no /metrics on Cloudflare Workers: a scrape would reach one isolate of many, whose counters neither add up nor last (docs/policy.md#cloudflare-workers-workerd); test/workerd.test.ts checks its 404",
    },
  },
};
