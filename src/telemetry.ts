import { createLogger, type Fields, type Logger } from "./log.ts";
import { type Counter, type CounterSeries, createRegistry, type Registry } from "./metrics.ts";

/**
 * Events that count something on /metrics: every number there has log lines behind it. An event
 * that summarises several occurrences carries their number in `count`.
 */
const COUNTED_EVENTS = {
  idle_timeout: ["connections_idle_closed_total", "Connections closed after IDLE_TIMEOUT without a request.", {}],
  headers_timeout: ["connections_deadline_closed_total", "Connections closed for a head or body that missed its deadline.", {
    deadline: "headers",
  }],
  request_timeout: ["connections_deadline_closed_total", "Connections closed for a head or body that missed its deadline.", {
    deadline: "request",
  }],
  websub_delivery: ["websub_deliveries_total", "WebSub content deliveries by result.", { result: "accepted" }],
  websub_signature_rejected: ["websub_deliveries_total", "WebSub content deliveries by result.", { result: "signature_rejected" }],
  websub_gone: ["websub_deliveries_total", "WebSub content deliveries by result.", { result: "gone" }],
  websub_too_large: ["websub_deliveries_total", "WebSub content deliveries by result.", { result: "too_large" }],
  connections_refused: [
    "connections_refused_total",
    "Connections closed at once because MAX_CONNECTIONS (or the fd limit) was reached.",
    {},
  ],
  accept_failed: ["accept_failures_total", "Connections the server failed to accept (e.g. EMFILE: out of file descriptors).", {}],
  fd_exhausted: ["fd_exhausted_total", "Times the process ran out of file descriptors.", {}],
} as const satisfies Record<string, readonly [string, string, Record<string, string>]>;

/** A logger and the metrics registry fed by its events. */
export interface Telemetry {
  readonly logger: Logger;
  readonly registry: Registry;
}

/** Creates the JSON-lines logger over `write` and a registry whose event counters it feeds. */
export function createTelemetry(write: (line: string) => void, base: Fields = {}): Telemetry {
  const registry = createRegistry();
  const counters = new Map<string, CounterSeries>();
  const families = new Map<string, Counter>();
  for (const [event, [name, help, labels]] of Object.entries(COUNTED_EVENTS)) {
    let family = families.get(name);
    if (!family) {
      family = registry.counter(name, help, Object.keys(labels));
      families.set(name, family);
    }
    // Looked up once, which also starts the series at 0: a scrape shows what has not happened yet too.
    counters.set(event, family.labels(labels));
  }
  const logger = createLogger(write, base, (event, fields) => {
    const count = fields?.count;
    counters.get(event)?.inc(typeof count === "number" ? count : 1);
  });
  return { logger, registry };
}
