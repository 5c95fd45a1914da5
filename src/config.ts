import * as v from "valibot";

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
const DURATION = /^(\d+)(ms|s|m|h)$/;
/** Upper bound for every duration: Node's timers overflow past 2^31-1 ms (~24.8 days). */
const MAX_DURATION_MS = 24 * UNIT_MS.h;

/** Parses `500ms`, `75s`, `15m`, `2h` or `0` into milliseconds; throws a sentence naming what is allowed. */
export function parseDurationMs(value: string): number {
  const text = value.trim();
  if (text === "0") return 0;
  if (/^\d+$/.test(text)) {
    throw new Error(`"${value}" has no unit: use e.g. ${text}s or ${text}m (0 disables)`);
  }
  const match = DURATION.exec(text);
  if (!match) {
    throw new Error(`"${value}" is not a duration: use an integer with a unit ms, s, m or h, e.g. 500ms, 75s, 15m`);
  }
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  if (ms > MAX_DURATION_MS) throw new Error(`"${value}" is too long: at most 24h`);
  return ms;
}

/** Formats milliseconds back into the shortest exact duration string (`75000` -> `75s`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0";
  for (const unit of ["h", "m", "s"] as const) {
    if (ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`;
}

function Duration(fallback: string) {
  return v.optional(
    v.pipe(
      v.string(),
      v.rawTransform(({ dataset, addIssue, NEVER }) => {
        try {
          return parseDurationMs(dataset.value);
        } catch (error) {
          addIssue({ message: (error as Error).message });
          return NEVER;
        }
      }),
    ),
    fallback,
  );
}

const Port = v.optional(
  v.pipe(
    v.string(),
    v.regex(/^\d+$/, (issue) => `"${issue.input}" is not a port: use an integer from 0 to 65535 (0 picks a free one)`),
    v.transform(Number),
    v.maxValue(65_535, (issue) => `"${issue.input}" is not a port: use an integer from 0 to 65535 (0 picks a free one)`),
  ),
  "8080",
);

const Host = v.optional(
  v.pipe(
    v.string(),
    v.regex(/^[A-Za-z0-9.:[\]-]+$/, (issue) => `"${issue.input}" is not an address: use an IP address or a host name, e.g. 0.0.0.0 or 127.0.0.1`),
  ),
  "0.0.0.0",
);

/** The environment variables this template reads, with their defaults. */
export const EnvSchema = v.pipe(
  v.object({
    PORT: Port,
    HOST: Host,
    IDLE_TIMEOUT: Duration("75s"),
    HEADERS_TIMEOUT: Duration("20s"),
    REQUEST_TIMEOUT: Duration("60s"),
    SHUTDOWN_TIMEOUT: Duration("10s"),
  }),
  v.forward(
    v.check(
      (env) => env.HEADERS_TIMEOUT === 0 || env.REQUEST_TIMEOUT === 0 || env.HEADERS_TIMEOUT <= env.REQUEST_TIMEOUT,
      (issue) => {
        const env = issue.input as { HEADERS_TIMEOUT: number; REQUEST_TIMEOUT: number };
        return `"${formatDuration(env.HEADERS_TIMEOUT)}" is longer than REQUEST_TIMEOUT "${formatDuration(env.REQUEST_TIMEOUT)}": the head is part of the request, so use at most that`;
      },
    ),
    ["HEADERS_TIMEOUT"],
  ),
);

export type EnvInput = v.InferInput<typeof EnvSchema>;
export type EnvOutput = v.InferOutput<typeof EnvSchema>;

/** The validated connection policy and address, every duration in milliseconds. */
export interface Config {
  /** TCP port to bind; 0 picks a free one. @default 8080 */
  readonly port: number;
  /** Address to bind. @default "0.0.0.0" */
  readonly host: string;
  /**
   * Close a connection that has had no request in progress for this long; 0 disables.
   * @default 75_000
   * - Node: `keepAliveTimeout` (minus Node's fixed 1 s buffer).
   * - Bun: per-request `server.timeout()` re-armed as each response ends, rounded up to Bun's 4 s tick.
   * - Deno: the adapter's own per-connection idle timer.
   */
  readonly idleTimeoutMs: number;
  /**
   * The request head must arrive within this long of its first byte (of connection open for the
   * first request); 0 disables.
   * @default 20_000
   * - Node: `headersTimeout`, checked every `connectionsCheckingInterval`; answers 408.
   * - Bun: not configurable; Bun closes a connection without a complete head after ~12 s.
   * - Deno: the adapter's per-connection timer, from connection open to the first request.
   */
  readonly headersTimeoutMs: number;
  /**
   * The whole request, head and body, must arrive within this long; 0 disables.
   * @default 60_000
   * - Node: `requestTimeout`; answers 408.
   * - Bun and Deno: a deadline on the request body stream; answers 408 and closes.
   */
  readonly requestTimeoutMs: number;
  /** On SIGTERM or SIGINT, how long in-flight requests may take to finish. @default 10_000 */
  readonly shutdownTimeoutMs: number;
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; problems: string[] };

/** Validates the environment; every problem is one sentence that names the variable. */
export function loadConfig(env: Record<string, string | undefined>): ConfigResult {
  const input = Object.fromEntries(
    Object.keys(EnvSchema.entries).map((key) => [key, emptyToUndefined(env[key])]),
  );
  const result = v.safeParse(EnvSchema, input);
  if (!result.success) {
    const problems = result.issues.map((issue) => `${v.getDotPath(issue) ?? "configuration"} ${issue.message}`);
    return { ok: false, problems };
  }
  const out = result.output;
  return {
    ok: true,
    config: {
      port: out.PORT,
      host: out.HOST,
      idleTimeoutMs: out.IDLE_TIMEOUT,
      headersTimeoutMs: out.HEADERS_TIMEOUT,
      requestTimeoutMs: out.REQUEST_TIMEOUT,
      shutdownTimeoutMs: out.SHUTDOWN_TIMEOUT,
    },
  };
}

function emptyToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value;
}
