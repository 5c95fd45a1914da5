import type { Config } from "../src/config.ts";
import type { Logger } from "../src/log.ts";
import type { ConnectionLimit } from "./_connection_limit.ts";

export type Runtime = "node" | "bun" | "deno";

/** A runtime and the engine serving it: the runtime alone names its default engine. */
export type Target = Runtime | "bun-node-http" | "deno-node-http";

/** Anything that answers a Request, such as a Hono app's `fetch`. */
export type FetchHandler = (request: Request, env?: unknown) => Response | Promise<Response>;

/** What an adapter can and cannot do on its runtime; the conformance suite reads these. */
export interface Capabilities {
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
  /**
   * What the runtime's parser answers to a malformed request, which the app never sees: 400, and
   * on some runtimes 505 for a request line it cannot read, or 0 for a close without an answer.
   */
  malformedStatuses: number[];
  /** What the runtime's parser answers to a request head too large for it (the app never sees it). */
  headTooLargeStatus: 431 | 400;
  /** Behaviour the runtime itself breaks and the adapter cannot repair, with the reason. */
  unsupported: Partial<Record<"pipelineBehindSlowResponse" | "unfinishedGetBody" | "fdExhaustionRecovery", string>>;
}

/** A started server, the same shape on every runtime. */
export interface ServerHandle {
  /** `http://127.0.0.1:PORT` (or the bound host), with the real port. */
  readonly url: string;
  /** The mechanism serving connections, e.g. `node:http`, `Bun.serve`, `Deno.serve/per-connection`. */
  readonly engine: string;
  /** Requests whose response is not complete yet. */
  inFlight(): number;
  /** The connection limit this engine enforces, or null when it has none (Bun.serve cannot count). */
  readonly limit: ConnectionLimit | null;
  /** Open client connections, where the engine can know them (Bun.serve cannot). */
  openConnections?(): number;
  /** Stops accepting, closes idle connections now and each busy one right after its response; resolves when none is left. */
  drain(): Promise<void>;
  /** Closes every remaining connection at once; returns how many requests it cut. */
  cut(): number;
}

/** Every adapter exports one `serve()` of this shape. */
export type Serve = (fetch: FetchHandler, config: Config, logger: Logger) => Promise<ServerHandle>;

/** The URL to print for a bound address: wildcard hosts become loopback so the URL is usable. */
export function displayUrl(host: string, port: number): string {
  const shown = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `http://${shown.includes(":") ? `[${shown}]` : shown}:${port}`;
}
