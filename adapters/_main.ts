import process from "node:process";
import { createApp } from "../src/app.ts";
import { type Config, loadConfig, type WebSubConfig } from "../src/config.ts";
import { handleContent } from "../src/content.ts";
import type { Logger } from "../src/log.ts";
import { createTelemetry } from "../src/telemetry.ts";
import { memoryStore, requestSubscription, type SubscriptionStore } from "../src/websub.ts";
import { checkConnectionLimit, watchFds } from "./_connection_limit.ts";
import { registerProcessMetrics } from "./_process_metrics.ts";
import type { Runtime, Serve, ServerHandle } from "./_types.ts";

/** Exit code for invalid configuration, before anything is bound. */
const EXIT_CONFIG = 2;

export interface MainOptions {
  /** Problems this runtime has with a valid configuration it cannot honour, one sentence each. */
  check?(config: Config): string[];
}

/**
 * Starts the example app on one runtime: validates the environment (exit 2, one stderr line per
 * problem), serves, prints `listening`, and shuts down gracefully on SIGTERM or SIGINT.
 */
export async function main(runtime: Runtime, serve: Serve, options: MainOptions = {}): Promise<void> {
  const result = loadConfig(process.env);
  const problems = result.ok ? [...checkConnectionLimit(result.config), ...(options.check?.(result.config) ?? [])] : result.problems;
  if (!result.ok || problems.length > 0) {
    for (const problem of problems) process.stderr.write(`${problem}\n`);
    process.exit(EXIT_CONFIG);
  }
  const config = result.config;
  // A closed stdout (the log collector went away) must not take the server down with EPIPE.
  process.stdout.on("error", () => {});
  const { logger, registry } = createTelemetry((line) => console.log(line), { runtime });
  registerProcessMetrics(registry);
  const subscriptions = memoryStore();
  const app = createApp({
    logger,
    registry,
    bodyLimitBytes: config.bodyLimitBytes,
    websub: { store: subscriptions, onDelivery: (delivery) => handleContent(delivery, logger) },
  });
  let server: ServerHandle;
  try {
    server = await serve(app.fetch, config, logger);
  } catch (error) {
    process.stderr.write(`Cannot listen on ${config.host}:${config.port}: ${(error as Error).message}\n`);
    process.exit(1);
  }
  registry.collect("connections_open", "Open client connections.", "gauge", () => {
    const open = server.openConnections?.();
    return open === undefined ? [] : [{ value: open }];
  });
  logger.info("listening", {
    url: server.url,
    pid: process.pid,
    engine: server.engine,
    idleTimeoutMs: config.idleTimeoutMs,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    maxConnections: server.limit?.max ?? null,
    maxConnectionsFrom: server.limit?.source ?? null,
  });
  watchFds(logger);

  if (config.websub) void subscribe(config.websub, server.url, subscriptions, logger);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    const started = Date.now();
    logger.info("shutdown_started", { signal, inFlight: server.inFlight(), shutdownTimeoutMs: config.shutdownTimeoutMs });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"expired">((resolve) => (timer = setTimeout(resolve, config.shutdownTimeoutMs, "expired")));
    const drained = await Promise.race([server.drain().then(() => "drained" as const), expired]);
    clearTimeout(timer);
    const cut = drained === "expired" ? server.cut() : 0;
    logger.info("shutdown_complete", { signal, cut, durationMs: Date.now() - started });
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

/** Asks the configured hub for the subscription, with a fresh, unguessable callback id. */
async function subscribe(websub: WebSubConfig, serverUrl: string, store: SubscriptionStore, logger: Logger): Promise<void> {
  const id = crypto.randomUUID();
  const callbackUrl = `${(websub.callbackUrl ?? serverUrl).replace(/\/$/, "")}/websub/${id}`;
  try {
    const { status } = await requestSubscription({ ...websub, store, id, callbackUrl });
    logger.info("websub_subscribe_requested", { hub: websub.hub, topic: websub.topic, callbackUrl, status });
  } catch (error) {
    logger.error("websub_subscribe_failed", { hub: websub.hub, topic: websub.topic, error });
  }
}
