import type { LifecycleOptions } from "./lifecycle.ts";
import type { Fields, Logger } from "./log.ts";
import type { Counter, CounterSeries, Registry } from "./metrics.ts";

/** An event that counts on a counter: the counter's name, its help, and the labels of the series it adds to. */
export type CountedEvent = readonly [name: string, help: string, labels: Record<string, string>];

const DEADLINE_HELP = "Connections closed for a head or body that missed its deadline.";

/**
 * The server's events that count something on /metrics: every number there has log lines behind
 * it. An event that summarises several occurrences carries their number in `count`.
 */
export const POLICY_EVENTS: Record<string, CountedEvent> = {
  idle_timeout: ["connections_idle_closed_total", "Connections closed after IDLE_TIMEOUT without a request.", {}],
  headers_timeout: ["connections_deadline_closed_total", DEADLINE_HELP, { deadline: "headers" }],
  request_timeout: ["connections_deadline_closed_total", DEADLINE_HELP, { deadline: "request" }],
  connections_refused: [
    "connections_refused_total",
    "Connections closed at once because MAX_CONNECTIONS (or the fd limit) was reached.",
    {},
  ],
  accept_failed: ["accept_failures_total", "Connections the server failed to accept (e.g. EMFILE: out of file descriptors).", {}],
  fd_exhausted: ["fd_exhausted_total", "Times the process ran out of file descriptors.", {}],
};

/**
 * A logger that also counts `events` on `registry`, then writes through `logger`. Each series is
 * looked up once, which also starts it at 0: a scrape shows what has not happened yet too.
 */
export function countEvents(logger: Logger, registry: Registry, events: Record<string, CountedEvent>): Logger {
  const counters = new Map<string, CounterSeries>();
  const families = new Map<string, Counter>();
  for (const [event, [name, help, labels]] of Object.entries(events)) {
    let family = families.get(name);
    if (!family) {
      family = registry.counter(name, help, Object.keys(labels));
      families.set(name, family);
    }
    counters.set(event, family.labels(labels));
  }
  const count = (event: string, fields?: Fields) => {
    const n = fields?.count;
    counters.get(event)?.inc(typeof n === "number" ? n : 1);
  };
  return {
    info: (event, fields) => (count(event, fields), logger.info(event, fields)),
    warn: (event, fields) => (count(event, fields), logger.warn(event, fields)),
    error: (event, fields) => (count(event, fields), logger.error(event, fields)),
  };
}

/** Counters of requests by status class and of responses by outcome, as the lifecycle's hooks. */
export function requestMetrics(registry: Registry): Pick<LifecycleOptions, "onOutcome" | "onResponse"> {
  const requests = registry.counter("http_requests_total", "Requests answered, by status class.", ["class"]);
  const outcomes = registry.counter(
    "http_responses_total",
    "Responses by outcome: finished, or aborted because the client left first (notifyFinish).",
    ["outcome"],
  );
  // Each series looked up once; a request only adds to a number.
  const finished = outcomes.labels({ outcome: "finished" });
  const aborted = outcomes.labels({ outcome: "aborted" });
  const classes = ["1xx", "2xx", "3xx", "4xx", "5xx"].map((name) => requests.labels({ class: name }));
  const otherClass = requests.labels({ class: "other" });
  return {
    onOutcome: (outcome) => (outcome === "finished" ? finished : aborted).inc(),
    onResponse: (status) => (classes[Math.floor(status / 100) - 1] ?? otherClass).inc(),
  };
}
