/**
 * The entries' environment vocabulary: the variables they read for `serve()` (EnvSchema), how
 * they become its options (loadConfig), and how its refusals name them (envWording). The only
 * place that knows the variables' names; src/policy/ and adapters/ speak in options.
 */
import * as v from "valibot";
import {
  DEFAULTS,
  formatDuration,
  fromParser,
  headWithinRequest,
  type OptionName,
  parseDurationMs,
  parseSizeBytes,
  readEnv,
  type Wording,
} from "../policy/config.ts";
import type { ConfigResult, Runtime, ServeOptions } from "../policy/types.ts";

const Port = v.optional(
  v.pipe(
    v.string(),
    v.regex(/^\d+$/, (issue) => `"${issue.input}" is not a port: use an integer from 0 to 65535 (0 picks a free one)`),
    v.transform(Number),
    v.maxValue(65_535, (issue) => `"${issue.input}" is over the maximum of 65535 (0 picks a free one)`),
  ),
  "8080",
);

const Host = v.optional(
  v.pipe(
    v.string(),
    v.regex(
      /^[A-Za-z0-9.:[\]-]+$/,
      (issue) => `"${issue.input}" is not an address: use an IP address or a host name, e.g. 0.0.0.0 or 127.0.0.1`,
    ),
  ),
  "0.0.0.0",
);

const MaxConnections = v.optional(
  v.pipe(
    v.string(),
    v.regex(/^\d+$/, (issue) => `"${issue.input}" is not a connection count: use an integer from 1 to 1000000, or 0 for no limit`),
    v.transform(Number),
    v.maxValue(1_000_000, (issue) => `"${issue.input}" is over the maximum of 1000000 (0 means no limit)`),
  ),
);

/** A duration variable; `zero` is what 0 means for it, said in its messages. */
function Duration(fallback: string, zero: string) {
  return v.optional(v.pipe(v.string(), fromParser((value) => parseDurationMs(value, zero))), fallback);
}

/** The environment variables the entry points read for the server, with their defaults. */
export const EnvSchema = v.pipe(
  v.object({
    PORT: Port,
    HOST: Host,
    IDLE_TIMEOUT: Duration(formatDuration(DEFAULTS.idleTimeoutMs), "0 disables"),
    HEADERS_TIMEOUT: Duration(formatDuration(DEFAULTS.headersTimeoutMs), "0 disables"),
    REQUEST_TIMEOUT: Duration(formatDuration(DEFAULTS.requestTimeoutMs), "0 disables"),
    SHUTDOWN_TIMEOUT: Duration(formatDuration(DEFAULTS.shutdownTimeoutMs), "0 cuts in-flight requests at once"),
    SHUTDOWN_DELAY: Duration(formatDuration(DEFAULTS.shutdownDelayMs), "0 closes the listener at once"),
    BODY_LIMIT: v.optional(v.pipe(v.string(), fromParser(parseSizeBytes)), "1mb"),
    MAX_CONNECTIONS: MaxConnections,
    WEBSOCKET_PING_INTERVAL: Duration(formatDuration(DEFAULTS.websocketPingIntervalMs), "0 disables"),
    WEBSOCKET_MAX_MESSAGE: v.optional(v.pipe(v.string(), fromParser(parseSizeBytes)), "1mb"),
    WEBSOCKET_MAX_BUFFERED: v.optional(v.pipe(v.string(), fromParser(parseSizeBytes)), "4mb"),
    SSE_HEARTBEAT: Duration(formatDuration(DEFAULTS.sseHeartbeatMs), "0 disables"),
    TRUST_PROXY: v.optional(
      v.pipe(
        v.string(),
        v.picklist(["true", "false"], (issue) => `${JSON.stringify(issue.input)} is not a boolean: use true or false`),
        v.transform((value) => value === "true"),
      ),
      "false",
    ),
  }),
  v.forward(
    v.check(
      (env) => headWithinRequest(env.HEADERS_TIMEOUT, env.REQUEST_TIMEOUT),
      (issue) => {
        const env = issue.input as { HEADERS_TIMEOUT: number; REQUEST_TIMEOUT: number };
        return `"${formatDuration(env.HEADERS_TIMEOUT)}" is longer than REQUEST_TIMEOUT "${
          formatDuration(env.REQUEST_TIMEOUT)
        }": the head is part of the request, so use at most that`;
      },
    ),
    ["HEADERS_TIMEOUT"],
  ),
);

export type EnvInput = v.InferInput<typeof EnvSchema>;
export type EnvOutput = v.InferOutput<typeof EnvSchema>;

/** What the environment configures: the server's policy and address, the body limit, and whether a proxy is trusted. */
export type EnvConfig = Required<Pick<ServeOptions, PolicyKey>>;

/** Validates the server's variables (see EnvSchema) into options for `serve()`. */
export function loadConfig(env: Record<string, string | undefined>): ConfigResult<EnvConfig> {
  const result = readEnv(EnvSchema, env);
  if (!result.ok) return result;
  const out = result.config;
  return {
    ok: true,
    config: {
      port: out.PORT,
      host: out.HOST,
      idleTimeoutMs: out.IDLE_TIMEOUT,
      headersTimeoutMs: out.HEADERS_TIMEOUT,
      requestTimeoutMs: out.REQUEST_TIMEOUT,
      shutdownTimeoutMs: out.SHUTDOWN_TIMEOUT,
      shutdownDelayMs: out.SHUTDOWN_DELAY,
      maxConnections: out.MAX_CONNECTIONS ?? null,
      bodyLimitBytes: out.BODY_LIMIT,
      trustProxy: out.TRUST_PROXY,
      websocketPingIntervalMs: out.WEBSOCKET_PING_INTERVAL,
      websocketMaxMessageBytes: out.WEBSOCKET_MAX_MESSAGE,
      websocketMaxBufferedBytes: out.WEBSOCKET_MAX_BUFFERED,
      sseHeartbeatMs: out.SSE_HEARTBEAT,
    },
  };
}

/** The options `serve()` reads that are policy and address, as opposed to its collaborators. */
type PolicyKey =
  | "port"
  | "host"
  | "idleTimeoutMs"
  | "headersTimeoutMs"
  | "requestTimeoutMs"
  | "shutdownTimeoutMs"
  | "shutdownDelayMs"
  | "maxConnections"
  | "bodyLimitBytes"
  | "trustProxy"
  | "websocketPingIntervalMs"
  | "websocketMaxMessageBytes"
  | "websocketMaxBufferedBytes"
  | "sseHeartbeatMs";

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
  websocketPingIntervalMs: "WEBSOCKET_PING_INTERVAL",
  websocketMaxMessageBytes: "WEBSOCKET_MAX_MESSAGE",
  websocketMaxBufferedBytes: "WEBSOCKET_MAX_BUFFERED",
  sseHeartbeatMs: "SSE_HEARTBEAT",
  reusePort: "WORKERS",
};

const DURATIONS: ReadonlySet<OptionName> = new Set([
  "idleTimeoutMs",
  "headersTimeoutMs",
  "requestTimeoutMs",
  "shutdownTimeoutMs",
  "shutdownDelayMs",
  "websocketPingIntervalMs",
  "sseHeartbeatMs",
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
