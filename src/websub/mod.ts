/**
 * The WebSub subscriber as an optional module: off unless WEBSUB_HUB and WEBSUB_TOPIC are set;
 * then it mounts the callback at /websub/:id, counts deliveries on /metrics, and asks the hub for
 * the subscription once the server listens. To remove it, delete this folder and its line in
 * src/main/modules.ts.
 */
import { Hono } from "hono";
import * as v from "valibot";
import type { Module } from "../main/_module.ts";
import { fromParser, parseDurationMs, readEnv } from "../policy/config.ts";
import { jsonErrors } from "../policy/errors.ts";
import type { Logger } from "../policy/log.ts";
import { type CountedEvent, countEvents } from "../policy/telemetry.ts";
import { handleContent } from "./content.ts";
import { memoryStore, requestSubscription, type SubscriptionStore, websubRoutes } from "./websub.ts";

const HttpUrl = v.optional(
  v.pipe(
    v.string(),
    v.check(
      (value) => URL.canParse(value) && /^https?:$/.test(new URL(value).protocol),
      (issue) => `"${issue.input}" is not an http(s) URL`,
    ),
  ),
);

/** The variables the WebSub module reads. */
export const WebSubEnvSchema = v.pipe(
  v.object({
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
);

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

const DELIVERIES = "websub_deliveries_total";
const DELIVERIES_HELP = "WebSub content deliveries by result.";

/** The module's events that count on /metrics. */
export const WEBSUB_EVENTS: Record<string, CountedEvent> = {
  websub_delivery: [DELIVERIES, DELIVERIES_HELP, { result: "accepted" }],
  websub_signature_rejected: [DELIVERIES, DELIVERIES_HELP, { result: "signature_rejected" }],
  websub_gone: [DELIVERIES, DELIVERIES_HELP, { result: "gone" }],
  websub_too_large: [DELIVERIES, DELIVERIES_HELP, { result: "too_large" }],
};

/** Reads WEBSUB_*: null when neither hub nor topic is set. */
export function loadWebSubConfig(env: Record<string, string | undefined>) {
  const result = readEnv(WebSubEnvSchema, env);
  if (!result.ok) return result;
  const out = result.config;
  const config: WebSubConfig | null = out.WEBSUB_HUB && out.WEBSUB_TOPIC
    ? {
      hub: out.WEBSUB_HUB,
      topic: out.WEBSUB_TOPIC,
      secret: out.WEBSUB_SECRET,
      leaseSeconds: out.WEBSUB_LEASE === undefined ? undefined : Math.ceil(out.WEBSUB_LEASE / 1_000),
      callbackUrl: out.WEBSUB_CALLBACK_URL,
    }
    : null;
  return { ok: true as const, config };
}

export const websub: Module<WebSubConfig> = {
  configure: loadWebSubConfig,
  singleProcess: "its subscriptions live in one process's memory, and a hub's verification would reach any worker",
  create(config, context) {
    const logger = countEvents(context.logger, context.registry, WEBSUB_EVENTS);
    const store = memoryStore();
    const routes = websubRoutes({
      store,
      logger,
      maxBodyBytes: context.bodyLimitBytes,
      onDelivery: (delivery) => handleContent(delivery, logger),
    });
    const app = jsonErrors(new Hono(), logger).route("/websub", routes);
    return {
      prefix: "/websub/",
      fetch: app.fetch,
      listening: (url) => void subscribe(config, url, store, logger),
    };
  },
};

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
