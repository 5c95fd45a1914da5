import * as v from "valibot";
import type { Logger } from "./log.ts";
import type { Registry } from "./metrics.ts";
import type { ConfigResult, ServeOptions } from "./types.ts";

export type { ConfigResult } from "./types.ts";

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
const DURATION = /^(\d+|\d*\.\d+)(ms|s|m|h)$/;
/** Upper bound for every duration: Node's timers overflow past 2^31-1 ms (~24.8 days). */
const MAX_DURATION_MS = 24 * UNIT_MS.h;

/**
 * Parses `500ms`, `75s`, `15m`, `2h` or `0` into milliseconds; throws a sentence naming what is
 * allowed. `zero` is what 0 means for the variable (`0 disables`), said where a bare number is
 * refused; without it, 0 goes unmentioned.
 */
export function parseDurationMs(value: string, zero?: string): number {
  const text = value.trim();
  if (text === "0") return 0;
  if (/^\d+$/.test(text)) {
    const examples = (["s", "m", "ms", "h"] as const).filter((unit) => Number(text) * UNIT_MS[unit] <= MAX_DURATION_MS);
    if (examples.length === 0) throw new Error(`"${value}" has no unit, and is over the maximum of 24h in any unit`);
    const use = examples.slice(0, 2).map((unit) => `${text}${unit}`).join(" or ");
    throw new Error(`"${value}" has no unit: use e.g. ${use}${zero === undefined ? "" : ` (${zero})`}`);
  }
  const match = DURATION.exec(text);
  if (!match) {
    throw new Error(`"${value}" is not a duration: use an integer with a unit ms, s, m or h, e.g. 500ms, 75s, 15m`);
  }
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  if (ms > MAX_DURATION_MS) throw new Error(`"${value}" is over the maximum of 24h`);
  if (match[1]!.includes(".")) throw new Error(`"${value}" is not an integer: ${useSmallerUnit(ms, match[2]!, UNIT_MS, "ms, s, m or h")}`);
  return ms;
}

/** How to write a fraction of `unit`, worth `amount` of the smallest unit, as an integer: in the largest smaller unit that makes it whole. */
function useSmallerUnit(amount: number, unit: string, units: Readonly<Record<string, number>>, names: string): string {
  const smaller = Object.entries(units).filter(([, size]) => size < units[unit]!).sort(([, a], [, b]) => b - a);
  for (const [name, size] of smaller) {
    const count = amount / size;
    if (amount > 0 && Math.abs(count - Math.round(count)) < 1e-9) return `use e.g. ${Math.round(count)}${name}`;
  }
  return `use an integer with a unit ${names}`;
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
export function fromParser<T>(parse: (value: string) => T) {
  return v.rawTransform<string, T>(({ dataset, addIssue, NEVER }) => {
    try {
      return parse(dataset.value);
    } catch (error) {
      addIssue({ message: (error as Error).message });
      return NEVER;
    }
  });
}

const SIZE = /^(\d+|\d*\.\d+)(b|kb|mb|gb|tb)$/;
const UNIT_BYTES = { b: 1, kb: 1_024, mb: 1_048_576 } as const;
/** Units read only to say that the size is over the maximum. */
const LARGE_UNIT_BYTES = { ...UNIT_BYTES, gb: 1_073_741_824, tb: 1_099_511_627_776 } as const;
const MAX_SIZE_BYTES = 100 * UNIT_BYTES.mb;

/** Parses `512kb`, `1mb` or `100b` into bytes; throws a sentence naming what is allowed. */
export function parseSizeBytes(value: string): number {
  const text = value.trim().toLowerCase();
  if (/^\d+$/.test(text)) {
    if (Number(text) === 0) throw new Error(`"${value}" is under the minimum of 1b: use a size from 1b to 100mb`);
    const examples = (["b", "kb", "mb"] as const).filter((unit) => Number(text) * UNIT_BYTES[unit] <= MAX_SIZE_BYTES);
    if (examples.length === 0) throw new Error(`"${value}" has no unit, and is over the maximum of 100mb in any unit`);
    throw new Error(`"${value}" has no unit: use e.g. ${examples.slice(0, 2).map((unit) => `${text}${unit}`).join(" or ")}`);
  }
  const match = SIZE.exec(text);
  if (!match) throw new Error(`"${value}" is not a size: use an integer with a unit b, kb or mb, e.g. 512kb or 1mb`);
  const bytes = Number(match[1]) * LARGE_UNIT_BYTES[match[2] as keyof typeof LARGE_UNIT_BYTES];
  if (bytes > MAX_SIZE_BYTES) throw new Error(`"${value}" is over the maximum of 100mb`);
  if (match[1]!.includes(".")) {
    throw new Error(`"${value}" is not an integer: ${useSmallerUnit(bytes, match[2]!, UNIT_BYTES, "b, kb or mb")}`);
  }
  if (bytes < 1) throw new Error(`"${value}" is under the minimum of 1b: use a size from 1b to 100mb`);
  return bytes;
}

/** The policy's defaults, in milliseconds: the environment's defaults are these, written as durations. */
export const DEFAULTS = {
  port: 8080,
  host: "0.0.0.0",
  idleTimeoutMs: 75_000,
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 60_000,
  shutdownTimeoutMs: 10_000,
  shutdownDelayMs: 0,
  bodyLimitBytes: 1_048_576,
  websocketPingIntervalMs: 30_000,
  websocketMaxMessageBytes: 1_048_576,
  websocketMaxBufferedBytes: 4_194_304,
  sseHeartbeatMs: 15_000,
} as const;

/** The one cross-field rule: the head is part of the request (0 disables either deadline). */
export function headWithinRequest(headersTimeoutMs: number, requestTimeoutMs: number): boolean {
  return headersTimeoutMs === 0 || requestTimeoutMs === 0 || headersTimeoutMs <= requestTimeoutMs;
}

/**
 * Validates the variables `schema` names in `env`, empty ones counting as unset; every problem is
 * one sentence that starts with the variable's name. The names are the schema's: the entries'
 * (src/main/_env.ts) and each module's own; this only reads them.
 */
export function readEnv<S extends v.GenericSchema & { entries: Record<string, unknown> }>(
  schema: S,
  env: Record<string, string | undefined>,
): ConfigResult<v.InferOutput<S>> {
  const input = Object.fromEntries(Object.keys(schema.entries).map((key) => [key, emptyToUndefined(env[key])]));
  const result = v.safeParse(schema, input);
  if (result.success) return { ok: true, config: result.output };
  return { ok: false, problems: result.issues.map((issue) => `${v.getDotPath(issue) ?? "configuration"} ${issue.message}`) };
}

function emptyToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value;
}

/** An option of `serve()`, as a refusal names it. */
export type OptionName = keyof ServeOptions;

/**
 * How a refusal names the caller's settings. `serve()` says its options (`optionWording`); an
 * entry that built the options from its environment variables says those instead, so that each
 * caller reads the names it set.
 */
export interface Wording {
  /** The setting refused, with the value given: `idleTimeoutMs 300000`. `unit: "ms"` keeps a duration in milliseconds. */
  given(option: OptionName, value: unknown, unit?: "ms"): string;
  /** A setting to use instead: `engine "auto"`. */
  use(option: OptionName, value: unknown): string;
  /** A value alone, after a `use` or `given` of the same setting: `"bun-node-http"`. */
  value(option: OptionName, value: unknown): string;
  /** A setting's name: `maxConnections`. */
  name(option: OptionName): string;
}

/** `serve()`'s own wording: each option by its name, each value as it is written in code. */
export const optionWording: Wording = {
  given: (option, value) => `${option} ${JSON.stringify(value)}`,
  use: (option, value) => `${option} ${JSON.stringify(value)}`,
  value: (_option, value) => JSON.stringify(value),
  name: (option) => option,
};

/** One reason a configuration cannot run: the option (a dot path for a nested one), the value given, and the sentence. */
export interface ConfigProblem {
  readonly option: string;
  readonly value: unknown;
  /** The whole sentence, its first words the setting refused, every setting named as `wording` names it. */
  say(wording: Wording): string;
}

/** A problem with `option`, said by `say` in whatever wording the caller reads. */
export function refuse(option: OptionName, value: unknown, say: (wording: Wording) => string): ConfigProblem {
  return { option, value, say };
}

/**
 * A configuration the server cannot run with. `problems` holds one sentence each, naming the
 * option that is wrong; `refusals` the same problems, to say in another wording (`in`).
 */
export class ConfigError extends Error {
  readonly refusals: readonly ConfigProblem[];
  readonly problems: readonly string[];

  constructor(refusals: readonly ConfigProblem[]) {
    const problems = refusals.map((problem) => problem.say(optionWording));
    super(problems.join("\n"));
    this.name = "ConfigError";
    this.refusals = refusals;
    this.problems = problems;
  }

  /** The problems, one sentence each, in `wording`: an entry's variables, say. */
  in(wording: Wording): string[] {
    return this.refusals.map((problem) => problem.say(wording));
  }
}

function wholeNumber(max: number, what: string) {
  const message = (issue: v.BaseIssue<unknown>) => `${JSON.stringify(issue.input)} is not ${what}: use an integer from 0 to ${max}`;
  const over = (issue: v.BaseIssue<unknown>) => `${JSON.stringify(issue.input)} is over the maximum of ${max}`;
  return v.pipe(v.number(message), v.integer(message), v.minValue(0, message), v.maxValue(max, over));
}

const BodyBytes = v.pipe(
  v.number((issue) => `${JSON.stringify(issue.input)} is not a size in bytes: use an integer from 1 to ${MAX_SIZE_BYTES}`),
  v.integer((issue) => `${JSON.stringify(issue.input)} is not a size in bytes: use an integer from 1 to ${MAX_SIZE_BYTES}`),
  v.minValue(1, (issue) => `${JSON.stringify(issue.input)} is under the minimum of 1`),
  v.maxValue(MAX_SIZE_BYTES, (issue) => `${JSON.stringify(issue.input)} is over the maximum of ${MAX_SIZE_BYTES} (100mb)`),
);

const ProbePath = v.optional(
  v.union([
    v.literal(false),
    v.pipe(
      v.string(),
      v.regex(/^\/[^?#\s]*$/, (issue) => `${JSON.stringify(issue.input)} is not a path: start it with /, or use false for none`),
    ),
  ], (issue) => `${JSON.stringify(issue.input)} is not a path: start it with /, or use false for none`),
);

const Milliseconds = (fallback: number) => v.optional(wholeNumber(MAX_DURATION_MS, "a duration in milliseconds"), fallback);

/** What `serve()` accepts; unknown keys are refused, to catch a misspelt option. */
export const ServeOptionsSchema = v.pipe(
  v.strictObject({
    port: v.optional(wholeNumber(65_535, "a port"), DEFAULTS.port),
    host: v.optional(
      v.pipe(v.string(), v.regex(/^[A-Za-z0-9.:[\]-]+$/, (issue) => `"${issue.input}" is not an address`)),
      DEFAULTS.host,
    ),
    idleTimeoutMs: Milliseconds(DEFAULTS.idleTimeoutMs),
    headersTimeoutMs: Milliseconds(DEFAULTS.headersTimeoutMs),
    requestTimeoutMs: Milliseconds(DEFAULTS.requestTimeoutMs),
    shutdownTimeoutMs: Milliseconds(DEFAULTS.shutdownTimeoutMs),
    shutdownDelayMs: Milliseconds(DEFAULTS.shutdownDelayMs),
    maxConnections: v.optional(v.nullable(wholeNumber(1_000_000, "a connection count")), null),
    bodyLimitBytes: v.optional(BodyBytes, DEFAULTS.bodyLimitBytes),
    bodyLimitByPath: v.optional(
      v.record(
        v.pipe(v.string(), v.startsWith("/", (issue) => `${JSON.stringify(issue.input)} is not a path: start it with /`)),
        BodyBytes,
      ),
      {},
    ),
    trustProxy: v.optional(v.boolean(), false),
    websocketPingIntervalMs: Milliseconds(DEFAULTS.websocketPingIntervalMs),
    websocketMaxMessageBytes: v.optional(BodyBytes, DEFAULTS.websocketMaxMessageBytes),
    websocketMaxBufferedBytes: v.optional(BodyBytes, DEFAULTS.websocketMaxBufferedBytes),
    sseHeartbeatMs: Milliseconds(DEFAULTS.sseHeartbeatMs),
    probes: v.optional(
      v.strictObject({ healthz: ProbePath, readyz: ProbePath, metrics: ProbePath }),
      {},
    ),
    exposition: v.optional(v.custom<() => string | Promise<string>>((value) => typeof value === "function", "is not a function")),
    reusePort: v.optional(v.boolean(), false),
    engine: v.optional(v.string(), "auto"),
    logger: v.optional(v.custom<Logger>((value) => typeof (value as Logger | null)?.info === "function", "is not a Logger")),
    registry: v.optional(v.custom<Registry>((value) => typeof (value as Registry | null)?.render === "function", "is not a Registry")),
  }),
  v.forward(
    v.check(
      (options) => headWithinRequest(options.headersTimeoutMs, options.requestTimeoutMs),
      (issue) => {
        const options = issue.input as { headersTimeoutMs: number; requestTimeoutMs: number };
        return `${options.headersTimeoutMs} is longer than requestTimeoutMs ${options.requestTimeoutMs}: the head is part of the request`;
      },
    ),
    ["headersTimeoutMs"],
  ),
);

/** `serve()`'s options with every default filled in, every duration in milliseconds. */
export type Config = v.InferOutput<typeof ServeOptionsSchema>;

/** Fills in the defaults; throws a ConfigError naming each option that is wrong. */
export function resolveServeOptions(options: ServeOptions): Config {
  const result = v.safeParse(ServeOptionsSchema, options);
  if (result.success) return result.output;
  throw new ConfigError(result.issues.map((issue) => {
    // The schema's messages are serve()'s own: what an entry passes it never fails them.
    const text = `${v.getDotPath(issue) ?? "options"} ${issue.message}`;
    return { option: v.getDotPath(issue) ?? "options", value: issue.input, say: () => text };
  }));
}
