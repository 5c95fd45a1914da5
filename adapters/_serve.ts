import process from "node:process";
import { bodyLimits } from "../src/policy/body.ts";
import { ConfigError, refuse, resolveServeOptions } from "../src/policy/config.ts";
import { trackStreamingResponses } from "../src/policy/lifecycle.ts";
import { createLogger } from "../src/policy/log.ts";
import { createRegistry, metricsAnswer } from "../src/policy/metrics.ts";
import { operationalRoutes } from "../src/policy/routes.ts";
import { countEvents, POLICY_EVENTS, requestMetrics } from "../src/policy/telemetry.ts";
import type { App, Engine, Runtime, ServeOptions, Server, ShutdownResult } from "../src/policy/types.ts";
import { checkConnectionLimit, watchFds } from "./_connection_limit.ts";
import { registerProcessMetrics } from "./_process_metrics.ts";
import { requestPath } from "./_request_path.ts";
import { LongLived } from "../src/policy/long_lived.ts";
import { WebSockets } from "../src/policy/websocket.ts";
import type { Engines } from "./_types.ts";

/**
 * What every adapter's `serve()` does around its engine, so that `serve()` alone is the whole
 * policy for any app: validates the options and refuses what the engine cannot honour (a
 * ConfigError), answers the probes in front of the app, refuses a declared body over the limit,
 * answers every error the app left unanswered the same way, tracks every request's end, streams
 * included (`request_aborted`), counts the policy's events and requests on the registry, adds the
 * connection and process gauges, watches the descriptor limit, logs `listening`, and offers the
 * graceful `shutdown()`. The one composition of the request path: the engines only carry it.
 */
export async function serveWith<E extends Engine>(
  runtime: Runtime,
  engines: Engines<E>,
  app: App,
  options: ServeOptions<E> = {},
): Promise<Server<E>> {
  const config = resolveServeOptions(options);
  const { engine, auto } = pickEngine(engines, config.engine, config);
  const problems = [...checkConnectionLimit(config), ...(engines.engines[engine].check?.(config) ?? [])];
  if (problems.length > 0) throw new ConfigError(problems);

  const registry = config.registry ?? createRegistry();
  const logger = countEvents(config.logger ?? createLogger((line) => console.log(line), { runtime }), registry, POLICY_EVENTS);
  const fallback = auto ? engines.fallback?.(engine) : undefined;
  if (fallback) logger.warn("engine_fallback", { engine, reason: fallback });
  let shutdown: Promise<ShutdownResult> | undefined;
  const longLived = new LongLived({
    pingIntervalMs: config.websocketPingIntervalMs,
    maxMessageBytes: config.websocketMaxMessageBytes,
    maxBufferedBytes: config.websocketMaxBufferedBytes,
    sseHeartbeatMs: config.sseHeartbeatMs,
  });
  const metrics = metricsAnswer(registry, config.exposition);
  const websockets = new WebSockets(longLived, logger, registry, { runtimePings: engines.engines[engine].runtimePings });
  const fetch = requestPath(app, {
    routes: operationalRoutes(() => shutdown === undefined, metrics, config.probes),
    limitOf: bodyLimits(config.bodyLimitBytes, config.bodyLimitByPath),
    declaredLength: engines.engines[engine].declaredLength,
    lifecycle: { logger, ...requestMetrics(registry), longLived },
  });
  const handle = await engines.engines[engine].serve(fetch, config, logger, websockets);
  // After the engine: @hono/node-server installs its own Response when it makes its listener.
  trackStreamingResponses();

  // Where the engine cannot count its connections (Bun.serve) there is no series rather than a 0.
  // Kept per worker: maxConnections and the descriptor limit are each worker's own.
  const openConnections = handle.openConnections?.bind(handle);
  if (openConnections) {
    registry.collect("connections_open", "Open client connections.", "gauge", () => [{ value: openConnections() }], {
      aggregation: "worker",
    });
  }
  registerProcessMetrics(registry, runtime);
  const stopWatchingFds = watchFds(logger);
  logger.info("listening", {
    runtime,
    // The address bound (0.0.0.0 listens on every interface), and a URL a client on this machine can use.
    address: config.host,
    port: Number(new URL(handle.url).port),
    url: handle.url,
    pid: process.pid,
    engine,
    idleTimeoutMs: config.idleTimeoutMs,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    shutdownDelayMs: config.shutdownDelayMs,
    maxConnections: handle.limit?.max ?? null,
    maxConnectionsFrom: handle.limit?.source ?? null,
  });
  // After `listening`, so that startup is not longer for it: the first scrape would otherwise pay
  // for the first run of every collector (docs/observability.md#cost).
  setTimeout(() => void metrics.warmUp(), 0);

  return {
    url: handle.url,
    runtime,
    engine,
    registry,
    ready: () => shutdown === undefined,
    shutdown(reason = "shutdown") {
      shutdown ??= (async () => {
        const started = Date.now();
        // No new WebSocket from the signal on (503): this instance is leaving.
        longLived.refuseNew();
        logger.info("shutdown_started", {
          signal: reason,
          inFlight: handle.inFlight(),
          longLived: longLived.size,
          shutdownTimeoutMs: config.shutdownTimeoutMs,
          shutdownDelayMs: config.shutdownDelayMs,
        });
        // Still serving, only no longer ready: an orchestrator that sends SIGTERM as it removes the
        // endpoint keeps routing to it for a while, and those requests must not be refused.
        if (config.shutdownDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, config.shutdownDelayMs));
        stopWatchingFds();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const expired = new Promise<"expired">((resolve) => (timer = setTimeout(resolve, config.shutdownTimeoutMs, "expired")));
        // WebSockets get 1001 and event streams their retry: and end, while the engine drains.
        const done = Promise.all([handle.drain(), longLived.closeAll()]);
        const drained = await Promise.race([done.then(() => "drained" as const), expired]);
        clearTimeout(timer);
        if (drained === "expired") longLived.cut();
        const cut = drained === "expired" ? handle.cut() : 0;
        const result = { cut, durationMs: Date.now() - started };
        logger.info("shutdown_complete", { signal: reason, ...result });
        return result;
      })();
      return shutdown;
    },
  };
}

/** The engine `requested` names, or the one `auto` picks; a name this runtime does not have is a ConfigError. */
function pickEngine<E extends Engine>(
  engines: Engines<E>,
  requested: string,
  config: Parameters<Engines<E>["auto"]>[0],
): { engine: E; auto: boolean } {
  const name = requested.trim() || "auto";
  if (name === "auto") return { engine: engines.auto(config), auto: true };
  if (Object.hasOwn(engines.engines, name)) return { engine: name as E, auto: false };
  const names = ["auto", ...Object.keys(engines.engines)];
  throw new ConfigError([
    refuse("engine", name, (w) => {
      const use = names.map((engine) => w.value("engine", engine));
      return `${w.given("engine", name)} is not an engine: use ${use.slice(0, -1).join(", ")} or ${use.at(-1)}`;
    }),
  ]);
}
