import type { Config, ConfigProblem } from "../src/policy/config.ts";
import type { Logger } from "../src/policy/log.ts";
import type { DeclaredLength } from "../src/policy/body.ts";
import type { Engine, FetchHandler } from "../src/policy/types.ts";
import type { WebSockets } from "../src/policy/websocket.ts";

/** The connection limit an engine enforces, and where that number comes from. */
export interface ConnectionLimit {
  readonly max: number;
  readonly source: "maxConnections" | "fd limit";
}

/**
 * What an engine returns once listening: the handle `_serve.ts` alone drives (its `shutdown()`
 * drains, then cuts) and makes a public `Server` of. Not part of the `Server`, so that no caller
 * can skip the readiness flip and the shutdown events by draining directly.
 */
export interface EngineServer {
  /** `http://127.0.0.1:PORT` (or the bound host), with the real port. */
  readonly url: string;
  /** The connection limit this engine enforces, or null when it has none (Bun.serve cannot count). */
  readonly limit: ConnectionLimit | null;
  /** Requests whose response is not complete yet. */
  inFlight(): number;
  /** Open client connections, where the engine can know them (Bun.serve cannot). */
  openConnections?(): number;
  /** Stops accepting, closes idle connections now and each busy one right after its response; resolves when none is left. */
  drain(): Promise<void>;
  /** Closes every remaining connection at once; returns how many requests it cut. */
  cut(): number;
}

/** One engine of a runtime: the configurations it cannot honour, and how it serves. */
export interface EngineDef {
  /** Problems with a valid configuration this engine cannot honour, each naming the option. */
  check?(config: Config): ConfigProblem[];
  /** Serves `fetch`; an upgrade the app asked for (`upgradeOf`) becomes a WebSocket handed to `websockets`. */
  serve(fetch: FetchHandler, config: Config, logger: Logger, websockets: WebSockets): Promise<EngineServer>;
  /** Whether the runtime pings WebSockets by itself (Deno's idleTimeout), so the policy's sweep only watches. */
  runtimePings?: boolean;
  /** A request's declared Content-Length, where the engine has it cheaper than `request.headers`. */
  declaredLength?: DeclaredLength;
}

/** A runtime's engines, and which one `auto` picks for a configuration. */
export interface Engines<E extends Engine> {
  readonly engines: Record<E, EngineDef>;
  auto(config: Config): E;
  /** Why `auto` picked `engine` when it is a fallback (logged as `engine_fallback`), else undefined. */
  fallback?(engine: E): string | undefined;
}

/** The URL to print for a bound address: wildcard hosts become loopback so the URL is usable. */
export function displayUrl(host: string, port: number): string {
  const shown = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `http://${shown.includes(":") ? `[${shown}]` : shown}:${port}`;
}
