/** Severity of an event line. */
export type Level = "debug" | "info" | "warn" | "error";

/** Fields of one event; `time`, `level` and `event` are added by the logger. */
export type Fields = Record<string, unknown>;

/** Writes one JSON object per line: `{"time":...,"level":...,"event":...,...fields}`. */
export interface Logger {
  info(event: string, fields?: Fields): void;
  warn(event: string, fields?: Fields): void;
  error(event: string, fields?: Fields): void;
}

/**
 * Creates a JSON-lines logger over `write`, which receives one line without its newline; `tap`
 * sees every event too (metrics count them).
 */
export function createLogger(write: (line: string) => void, base: Fields = {}, tap?: (event: string, fields?: Fields) => void): Logger {
  const emit = (level: Level, event: string, fields?: Fields) => {
    tap?.(event, fields);
    write(JSON.stringify({ time: new Date().toISOString(), level, event, ...base, ...fields }, replacer));
  };
  return {
    info: (event, fields) => emit("info", event, fields),
    warn: (event, fields) => emit("warn", event, fields),
    error: (event, fields) => emit("error", event, fields),
  };
}

// Errors serialise to `{}` by default; keep what a reader needs, the stack in a field of the one
// line rather than lines of its own on stderr.
function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message, stack: value.stack };
  return value;
}
