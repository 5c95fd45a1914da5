/**
 * The connection-policy library's public types, in one place. Each runtime's adapter
 * (`adapters/node.ts`, `adapters/bun.ts`, `adapters/deno.ts`) exports a `serve()` of the shape
 * `Serve`; files whose name starts with `_` are internal.
 */
import type { Logger } from "./log.ts";
import type { Registry } from "./metrics.ts";
import type { ProbePaths } from "./routes.ts";

export type { Logger } from "./log.ts";
export type { Registry } from "./metrics.ts";
export type { ProbePaths } from "./routes.ts";

export type Runtime = "node" | "bun" | "deno";

/**
 * What serves connections, spelt the same in `BUN_ENGINE`/`DENO_ENGINE`, the `listening` event,
 * and the test suites: the runtime, then the mechanism.
 */
export type Engine = NodeEngine | BunEngine | DenoEngine;
/** Node's one engine. */
export type NodeEngine = "node-http";
/** Bun's engines: Bun.serve, or Bun's node:http (docs/engines.md). */
export type BunEngine = "bun-serve" | "bun-node-http";
/** Deno's engines: its HTTP server one connection at a time, or its node:http compatibility (docs/engines.md). */
export type DenoEngine = "deno-per-connection" | "deno-node-http";

/**
 * Anything that answers a Request, such as a Hono app's `fetch`. Hono types `env` by the app's
 * bindings, so only `any` lets every app's fetch fit.
 */
// deno-lint-ignore no-explicit-any
export type FetchHandler = (request: Request, env?: any, executionCtx?: any) => Response | Promise<Response>;

/** An app as `serve()` takes it: a Hono app (anything with a `fetch`), or a fetch handler. */
export type App = { fetch: FetchHandler } | FetchHandler;

/**
 * How one server treats its connections. Every duration is in milliseconds; `0` disables it.
 * Runtime support: every option holds on Node, Bun and Deno; how each runtime enforces it is
 * in docs/policy.md.
 */
export interface ServeOptions<E extends Engine = Engine> {
  /** TCP port to bind; 0 picks a free one. @default 8080 */
  port?: number;
  /** Address to bind. @default "0.0.0.0" */
  host?: string;
  /**
   * Close a connection that has had no request in progress for this long.
   * @default 75_000
   * - Node: `keepAliveTimeout` (with `keepAliveTimeoutBuffer` 0 where Node has it, else minus Node's fixed 1 s).
   * - Bun: per-request `server.timeout()` re-armed as each response ends, rounded up to Bun's 4 s tick.
   * - Deno: the adapter's own per-connection idle timer.
   */
  idleTimeoutMs?: number;
  /**
   * The request head must arrive within this long of its first byte (of connection open for the first request).
   * @default 20_000
   * - Node: `headersTimeout`, checked every 250 ms; answers 408.
   * - Bun: not configurable; Bun.serve closes a connection without a complete head after ~12 s.
   * - Deno: the adapter's per-connection timer, from connection open to the first request.
   */
  headersTimeoutMs?: number;
  /**
   * The whole request, head and body, must arrive within this long.
   * @default 60_000
   * - Node: `requestTimeout`; answers 408.
   * - Bun and Deno: a deadline on the request body stream; answers 408 and closes.
   */
  requestTimeoutMs?: number;
  /**
   * How long `shutdown()` lets in-flight requests finish before it cuts them, counted from the end
   * of `shutdownDelayMs`.
   * @default 10_000
   */
  shutdownTimeoutMs?: number;
  /**
   * How long `shutdown()` keeps serving, not ready (`/readyz` 503), before it closes the listener:
   * time for an orchestrator that sends SIGTERM first to take the server out of its endpoints.
   * @default 0
   * - Node, Bun and Deno alike: `shutdown()` itself waits, with nothing closed (new connections and
   *   keep-alive as before), then drains.
   */
  shutdownDelayMs?: number;
  /**
   * The most client connections open at once; more are accepted and closed at once. `null`: as many
   * as the file-descriptor limit leaves room for, where the engine can count connections; `0`: no limit.
   * @default null
   * - Node, Deno, and Bun's `bun-node-http` engine: the adapter counts and closes the extra ones.
   * - Bun.serve cannot count its connections: a limit selects `bun-node-http`.
   */
  maxConnections?: number | null;
  /**
   * The largest request body any route may read, whatever reads it (`c.req.text()`, `json()`,
   * `formData()`, `arrayBuffer()`, the raw stream). A declared Content-Length over it is answered
   * 413 before the app runs; a body without one (chunked) fails to read past it, and the app
   * answers 413. Both JSON, closing the connection. A route lowers its own limit with Hono's
   * `bodyLimit` middleware, and raises it with `bodyLimitByPath`.
   * @default 1_048_576 (1 MiB)
   * - Node, Bun and Deno alike: the declared length is checked before the app; a chunked body is
   *   counted as the app reads it (on Bun and Deno in the same stream as REQUEST_TIMEOUT).
   */
  bodyLimitBytes?: number;
  /**
   * WebSockets: one quiet this long is pinged; one that answers nothing (no pong, no message)
   * within another interval is closed, so a vanished client is gone within two intervals. 0 disables.
   * @default 30_000 (under the 60 s at which nginx and most load balancers cut a quiet connection)
   */
  websocketPingIntervalMs?: number;
  /** WebSockets: a larger message closes the connection with 1009. @default 1_048_576 */
  websocketMaxMessageBytes?: number;
  /** WebSockets: once this much waits for a client that does not read, it is closed with 1008. @default 4_194_304 */
  websocketMaxBufferedBytes?: number;
  /** Event streams (`streamSSE`): a comment line whenever nothing was written for this long. 0 disables. @default 15_000 */
  sseHeartbeatMs?: number;
  /**
   * Body limits for paths that need another one: `{ "/uploads/": 50 * 1024 * 1024 }`. The longest
   * prefix of the request's path wins; other paths get `bodyLimitBytes`.
   * @default {}
   */
  bodyLimitByPath?: Record<string, number>;
  /**
   * Take the request URL's scheme from `X-Forwarded-Proto` (`http` or `https`), as a proxy in
   * front sets it. Off, the scheme is the connection's (`http`: the template serves no TLS), and
   * a request target in absolute form (`GET https://host/x`) cannot change it.
   * @default false
   */
  trustProxy?: boolean;
  /**
   * Where `serve()` answers its probes in front of the app: `/healthz` (liveness), `/readyz`
   * (readiness: 503 from `shutdown()` on) and `/metrics` (the registry in Prometheus' text format).
   * A path moves one; `false` leaves it to the app.
   * @default { healthz: "/healthz", readyz: "/readyz", metrics: "/metrics" }
   */
  probes?: ProbePaths;
  /** What the metrics probe answers. @default the registry's `render()` (with WORKERS, the entry gives every worker's) */
  exposition?: () => string | Promise<string>;
  /**
   * The engine, where a runtime has two (`bun-serve` or `bun-node-http`; `deno-per-connection` or
   * `deno-node-http`): each runtime's `serve()` takes its own. `auto` picks the fastest one that can
   * honour the other options. A name this runtime does not have (from a string the types did not
   * check) is a ConfigError.
   * @default "auto"
   */
  engine?: "auto" | E;
  /**
   * Share the port with other processes that set it too (SO_REUSEPORT, Linux): what WORKERS uses.
   * @default false
   * - Node: `listen({ reusePort })` (22.12+). Bun: `Bun.serve({ reusePort })`. Deno: `Deno.listen({ reusePort })`
   *   (`--unstable-net`, set in deno.json) or node:http's.
   * - Bun's node:http cannot share a port: the `bun-node-http` engine refuses it at startup.
   */
  reusePort?: boolean;
  /** Where the server's events go. @default JSON lines on stdout */
  logger?: Logger;
  /** Where the server's metrics go; give each server its own. @default a registry of its own (`server.registry`) */
  registry?: Registry;
}

/** How a shutdown went: requests cut at the deadline, and how long it took. */
export interface ShutdownResult {
  readonly cut: number;
  readonly durationMs: number;
}

/** A listening server, the same shape on every runtime. */
export interface Server<E extends Engine = Engine> {
  /** `http://127.0.0.1:PORT` (or the bound host), with the real port. */
  readonly url: string;
  readonly runtime: Runtime;
  /** The engine serving it: the one `engine` named, or the one `auto` picked. */
  readonly engine: E;
  /** The registry the server's metrics are in. */
  readonly registry: Registry;
  /**
   * Whether the server takes work (what `/readyz` answers): true from listening until `shutdown()`
   * starts. Not srvx's `ready()`, which waits for listening: `serve()` resolves once listening.
   */
  ready(): boolean;
  /**
   * The graceful shutdown: logs `shutdown_started` and stops being `ready()` at once, keeps serving
   * for `shutdownDelayMs`, then stops accepting, closes idle connections, lets in-flight requests
   * finish, cuts what is left `shutdownTimeoutMs` later, and logs `shutdown_complete`. Calling it
   * again, even during the delay, returns the same promise.
   */
  shutdown(reason?: string): Promise<ShutdownResult>;
}

/** Every adapter's `serve()`: validates the options (a ConfigError says what is wrong), listens, and enforces the policy. */
export type Serve<E extends Engine = Engine> = (app: App, options?: ServeOptions<E>) => Promise<Server<E>>;

/** What an app module's default export is given by the entry points, when it is a function. */
/** What an app module default-exports: an app, or a function of the context that makes one. */
export type AppExport = App | ((context: AppContext) => App | Promise<App>);

export interface AppContext {
  readonly logger: Logger;
  readonly registry: Registry;
  /** BODY_LIMIT: the largest request body any route may read (`serve()` enforces it; `readBody()` reads within it). */
  readonly bodyLimitBytes: number;
}

/** A configuration read from text (the environment, a module's variables): the values, or one sentence per problem. */
export type ConfigResult<T> = { ok: true; config: T } | { ok: false; problems: string[] };

/** What an optional module adds to the server once enabled: routes under a path, and work to start once listening. */
export interface Mounted {
  /** The path its routes live under, ending in `/`, e.g. `/websub/`. */
  readonly prefix: string;
  readonly fetch: FetchHandler;
  /** Called once the server listens, with its URL. */
  listening?(url: string): void;
  /**
   * Called once the server has drained, before the process exits: stop work, release files and
   * sockets. `deadline` (a `Date.now()` time) is when the shutdown's own time is up, SHUTDOWN_DELAY
   * plus SHUTDOWN_TIMEOUT after the signal: work still running then is to be handed back, so that
   * the process exits within the time the policy gives a shutdown, however long the drain took.
   */
  close?(deadline: number): Promise<void>;
}

/**
 * An optional module, the contract between it and the entries that mount it (src/main/modules.ts
 * lists them): it reads its own variables, and is off (no routes, nothing started) unless they
 * enable it.
 */
export interface Module<C> {
  /** Validates this module's variables: its configuration, null when they leave it off, or the problems (exit 2). */
  configure(env: Readonly<Record<string, string | undefined>>): ConfigResult<C | null>;
  /** Makes the module's routes and work; a rejection stops the server at startup (exit 1) with its message. */
  create(config: C, context: AppContext): Mounted | Promise<Mounted>;
  /** Why the module, configured so, cannot run in several processes at once (WORKERS above 1), if it cannot. */
  singleProcess?(config: C): string | undefined;
  /**
   * The module's own command line (`npm run websub -- list`, through src/main/command.ts), given
   * the arguments and the environment; prints JSON lines with `print` and resolves to the exit code.
   */
  command?(args: readonly string[], env: Readonly<Record<string, string | undefined>>, print: (line: object) => void): Promise<number>;
}
