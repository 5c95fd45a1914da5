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

/** A string turned into a value by `parse`, whose error message becomes the issue. */
function fromParser<T>(parse: (value: string) => T) {
  return v.rawTransform<string, T>(({ dataset, addIssue, NEVER }) => {
    try {
      return parse(dataset.value);
    } catch (error) {
      addIssue({ message: (error as Error).message });
      return NEVER;
    }
  });
}

function Duration(fallback: string) {
  return v.optional(v.pipe(v.string(), fromParser(parseDurationMs)), fallback);
}

const SIZE = /^(\d+)(b|kb|mb)$/;
const UNIT_BYTES = { b: 1, kb: 1_024, mb: 1_048_576 } as const;

/** Parses `512kb`, `1mb` or `100b` into bytes; throws a sentence naming what is allowed. */
export function parseSizeBytes(value: string): number {
  const match = SIZE.exec(value.trim().toLowerCase());
  if (!match) throw new Error(`"${value}" is not a size: use an integer with a unit b, kb or mb, e.g. 512kb or 1mb`);
  const bytes = Number(match[1]) * UNIT_BYTES[match[2] as keyof typeof UNIT_BYTES];
  if (bytes < 1 || bytes > 100 * UNIT_BYTES.mb) throw new Error(`"${value}" is out of range: use from 1b to 100mb`);
  return bytes;
}

const HttpUrl = v.optional(
  v.pipe(
    v.string(),
    v.check(
      (value) => URL.canParse(value) && /^https?:$/.test(new URL(value).protocol),
      (issue) => `"${issue.input}" is not an http(s) URL`,
    ),
  ),
);

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
    v.regex(/^\d{1,7}$/, (issue) => `"${issue.input}" is not a connection count: use an integer from 1 to 1000000, or 0 for no limit`),
    v.transform(Number),
    v.maxValue(1_000_000, (issue) => `"${issue.input}" is too large: use at most 1000000, or 0 for no limit`),
  ),
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
    BODY_LIMIT: v.optional(v.pipe(v.string(), fromParser(parseSizeBytes)), "1mb"),
    MAX_CONNECTIONS: MaxConnections,
    WEBSUB_HUB: HttpUrl,
    WEBSUB_TOPIC: HttpUrl,
    WEBSUB_SECRET: v.optional(
      v.pipe(
        v.string(),
        v.check(
          (value) => new TextEncoder().encode(value).byteLength < 200,
          (issue) => `"${issue.input}" is too long: a hub secret must be under 200 bytes (WebSub 5.1)`,
        ),
      ),
    ),
    WEBSUB_LEASE: v.optional(v.pipe(v.string(), fromParser(parseDurationMs))),
    WEBSUB_CALLBACK_URL: HttpUrl,
  }),
  v.forward(
    v.check(
      (env) => (env.WEBSUB_HUB === undefined) === (env.WEBSUB_TOPIC === undefined),
      (issue) => {
        const env = issue.input as { WEBSUB_HUB?: string; WEBSUB_TOPIC?: string };
        return env.WEBSUB_HUB
          ? `"" is missing: WEBSUB_HUB "${env.WEBSUB_HUB}" needs a topic to subscribe to`
          : `"${env.WEBSUB_TOPIC}" has no hub: set WEBSUB_HUB too`;
      },
    ),
    ["WEBSUB_TOPIC"],
  ),
  v.forward(
    v.check(
      (env) => env.HEADERS_TIMEOUT === 0 || env.REQUEST_TIMEOUT === 0 || env.HEADERS_TIMEOUT <= env.REQUEST_TIMEOUT,
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
  /** The largest request body the example routes and the WebSub callback accept; larger gets 413. @default 1_048_576 */
  readonly bodyLimitBytes: number;
  /**
   * The most client connections open at once; more are accepted and closed at once. `null`
   * (unset): as many as the file-descriptor limit leaves room for, where the engine can count
   * connections. `0`: no limit.
   * - Node, Deno and Bun's node:http engine: the adapter counts connections and closes the extra.
   * - Bun.serve cannot count its connections: an explicit limit selects the node:http engine.
   */
  readonly maxConnections: number | null;
  /** The WebSub subscription to request at startup, or null. */
  readonly websub: WebSubConfig | null;
}

/** What the subscriber asks a hub for at startup (W3C WebSub 5.1). */
export interface WebSubConfig {
  /** The hub's URL, where the subscription request is POSTed. */
  readonly hub: string;
  /** The topic URL to subscribe to. */
  readonly topic: string;
  /** Shared secret for `X-Hub-Signature`; content without a valid signature is dropped. */
  readonly secret?: string;
  /** The lease to ask for, in seconds; the hub decides. */
  readonly leaseSeconds?: number;
  /** Base URL the hub can reach this server at; defaults to the listening URL. */
  readonly callbackUrl?: string;
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
      bodyLimitBytes: out.BODY_LIMIT,
      maxConnections: out.MAX_CONNECTIONS ?? null,
      websub: out.WEBSUB_HUB && out.WEBSUB_TOPIC
        ? {
          hub: out.WEBSUB_HUB,
          topic: out.WEBSUB_TOPIC,
          secret: out.WEBSUB_SECRET,
          leaseSeconds: out.WEBSUB_LEASE === undefined ? undefined : Math.ceil(out.WEBSUB_LEASE / 1_000),
          callbackUrl: out.WEBSUB_CALLBACK_URL,
        }
        : null,
    },
  };
}

function emptyToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value;
}
