import type { Config, ConfigProblem } from "../src/policy/config.ts";
import type { Logger } from "../src/policy/log.ts";
import type { DeclaredLength } from "../src/policy/body.ts";
import type { Engine, FetchHandler, Server } from "../src/policy/types.ts";

/** What an engine returns once listening; `_serve.ts` makes a `Server` of it. */
export type EngineServer = Pick<Server, "url" | "limit" | "inFlight" | "openConnections" | "drain" | "cut">;

/** One engine of a runtime: the configurations it cannot honour, and how it serves. */
export interface EngineDef {
  /** Problems with a valid configuration this engine cannot honour, each naming the option. */
  check?(config: Config): ConfigProblem[];
  serve(fetch: FetchHandler, config: Config, logger: Logger): Promise<EngineServer>;
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
