/**
 * What Cloudflare Workers owns, in one place: the variables a worker cannot honour (each with the
 * reason its refusal gives), and the platform's own connection limits as measured on local
 * workerd, which the workerd suite reads for its bounds (docs/runtimes.md#cloudflare-workers-workerd).
 */

const IDLE = "the platform closes idle connections itself (local workerd: after 15 s, whatever the worker asks)";
const HEAD = "the platform closes a connection whose request head is late itself (local workerd: after 15 s, without a 408)";
const NO_PROCESS = "a worker has no process to signal: the platform drains and replaces isolates itself";

/**
 * The server variables that belong to the platform on Cloudflare Workers, each with why a worker cannot honour
 * it. A binding of one of these is refused (docs/policy.md#cloudflare-workers-workerd); the local
 * runner takes PORT and HOST for the socket it asks workerd to bind, before they could become bindings.
 */
export const PLATFORM_OWNED: Readonly<Record<string, string>> = {
  PORT: "the platform routes requests to the worker, which binds no socket (locally, npm run start:workerd reads PORT itself)",
  HOST: "the platform routes requests to the worker, which binds no socket (locally, npm run start:workerd reads HOST itself)",
  IDLE_TIMEOUT: IDLE,
  HEADERS_TIMEOUT: HEAD,
  REQUEST_TIMEOUT: "the platform reads requests itself, and local workerd sets no deadline on a body at all",
  SHUTDOWN_TIMEOUT: NO_PROCESS,
  SHUTDOWN_DELAY: NO_PROCESS,
  MAX_CONNECTIONS: "a worker sees requests, never connections: the platform accepts and limits them",
  TRUST_PROXY: "the request URL is the platform's: Cloudflare's edge terminates TLS and sets the scheme a worker sees",
  WEBSOCKET_PING_INTERVAL:
    "a worker's WebSocket has no ping(): the platform answers a client's pings itself and sends none (local workerd keeps a silent client's socket open, 40 s measured)",
  WORKERS: "the platform runs as many isolates as the load needs",
  BUN_ENGINE: "a worker runs on workerd, not Bun",
  DENO_ENGINE: "a worker runs on workerd, not Deno",
};

/**
 * Why the WebSub module is not offered on Cloudflare Workers; every `WEBSUB_*` binding is refused with it. Its
 * subscriptions live in a SQLite file or Redis, and its lease renewals run on a process's timers.
 */
export const WEBSUB_OUT_OF_SCOPE =
  "WebSub is out of scope there: its subscriptions need a store the isolates share (KV, D1 or a Durable Object, not a SQLite file or Redis) and its lease renewals a Cron Trigger, neither of which it has (docs/policy.md#cloudflare-workers-workerd)";

/**
 * Why WEBSOCKET_MAX_MESSAGE is refused above WORKERD_LIMITS.maxMessageBytes, after its name and
 * value; below it, the policy's own 1009 holds.
 */
export const MAX_MESSAGE_OVER =
  "is over the platform's own limit on Cloudflare Workers: workerd closes a socket with 1009 before the worker sees a message over 32mb (local workerd); use at most 32mb";

/** A window in milliseconds: not earlier than `min`, not later than `max`. */
export interface WindowMs {
  readonly min: number;
  readonly max: number;
}

/**
 * The platform's limits as local workerd enforces them, measured (docs/runtimes.md#cloudflare-workers-workerd).
 * The workerd suite bounds its checks with these, as the other engines' suites read
 * test/_capabilities.ts.
 */
export interface WorkerdLimits {
  /** When workerd closes a keep-alive connection after its last response, whatever the worker wants. */
  readonly idleCloseMs: WindowMs;
  /** When workerd closes a connection that sent nothing, or part of a head: silently, no 408. */
  readonly headCloseMs: WindowMs;
  /**
   * How late the lifecycle helper hears that a client left, counted from the worker's next write
   * after it left: workerd notices a closed connection only when it writes to it.
   */
  readonly abortAfterNextWriteMs: number;
  /**
   * The largest WebSocket message workerd receives: a larger one closes the socket with 1009
   * ("Message is too large") before the worker sees it. WEBSOCKET_MAX_MESSAGE above it is refused.
   */
  readonly maxMessageBytes: number;
}

export const WORKERD_LIMITS: WorkerdLimits = {
  idleCloseMs: { min: 14_900, max: 16_000 },
  headCloseMs: { min: 14_900, max: 16_000 },
  abortAfterNextWriteMs: 100,
  // 32 MiB: a message of 33,554,432 bytes is received, one byte more closes the socket (measured).
  maxMessageBytes: 33_554_432,
};

/**
 * The compatibility date the local run and wrangler.jsonc both give (a test holds them equal): the
 * pinned workerd supports it, and from it on `request.signal` aborts when a client leaves
 * (`enable_request_signal`; docs/runtimes.md#workerd-learns-of-a-client-that-left-when-it-writes).
 * Being 2026-08-04 or later, it also enables `nodejs_compat`: workerd's `node:` built-ins, with no
 * flag (docs/runtimes.md#workerds-nodejs-built-ins).
 */
export const COMPATIBILITY_DATE = "2026-11-17";
