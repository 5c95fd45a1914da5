/**
 * The entries' environment vocabulary: what each variable is called, and how its value is written.
 */
import { formatDuration, type OptionName, type Wording } from "../policy/config.ts";
import type { Runtime } from "../policy/types.ts";

/** The variable that sets each option an entry builds from the environment; `reusePort` is what WORKERS above 1 sets. */
const VARIABLES: Partial<Record<OptionName, string>> = {
  port: "PORT",
  host: "HOST",
  idleTimeoutMs: "IDLE_TIMEOUT",
  headersTimeoutMs: "HEADERS_TIMEOUT",
  requestTimeoutMs: "REQUEST_TIMEOUT",
  shutdownTimeoutMs: "SHUTDOWN_TIMEOUT",
  shutdownDelayMs: "SHUTDOWN_DELAY",
  maxConnections: "MAX_CONNECTIONS",
  bodyLimitBytes: "BODY_LIMIT",
  trustProxy: "TRUST_PROXY",
  reusePort: "WORKERS",
};

const DURATIONS: ReadonlySet<OptionName> = new Set([
  "idleTimeoutMs",
  "headersTimeoutMs",
  "requestTimeoutMs",
  "shutdownTimeoutMs",
  "shutdownDelayMs",
]);

/** The variable that names `runtime`'s engine: NODE_ENGINE, BUN_ENGINE, DENO_ENGINE. */
export function engineVariable(runtime: Runtime): string {
  return `${runtime.toUpperCase()}_ENGINE`;
}

/**
 * `serve()`'s refusals said in the variables an entry read: `IDLE_TIMEOUT "5m"` for
 * `idleTimeoutMs 300000`, `BUN_ENGINE=auto` for `engine "auto"`, `WORKERS above 1` for `reusePort true`.
 */
export function envWording(runtime: Runtime): Wording {
  const name = (option: OptionName) => option === "engine" ? engineVariable(runtime) : VARIABLES[option] ?? option;
  const value = (option: OptionName, given: unknown) => {
    if (option === "reusePort") return given ? "above 1" : "1";
    return DURATIONS.has(option) && typeof given === "number" ? formatDuration(given) : String(given);
  };
  return {
    name,
    value,
    given: (option, given, unit) => {
      if (option === "reusePort") return `${name(option)} ${value(option, given)}`;
      return `${name(option)} "${unit === "ms" ? `${given}ms` : value(option, given)}"`;
    },
    use: (option, given) => `${name(option)}=${value(option, given)}`,
  };
}
