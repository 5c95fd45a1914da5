/**
 * The WebSub subscriber as an optional module: off unless WEBSUB_TOPIC is set; then it mounts the
 * callback at /websub/:id, counts deliveries and subscriptions on /metrics, and once the server
 * listens keeps the configured topics subscribed (src/websub/subscriber.ts), with subscriptions in
 * WEBSUB_STORE. To remove it, delete this folder, its line in src/main/modules.ts and the `websub`
 * script in package.json (docs/websub.md).
 */
import { Hono } from "hono";
import * as v from "valibot";
import { fromParser, parseDurationMs, readEnv } from "../policy/config.ts";
import type { ConfigResult, Module } from "../policy/types.ts";
import { jsonErrors } from "../policy/errors.ts";
import { type CountedEvent, countEvents } from "../policy/telemetry.ts";
import { handleContent } from "./content.ts";
import { openStore, parseStoreSpec, type StoreSpec } from "./store/open.ts";
import type { SubscriptionStore } from "./store/types.ts";
import { startSubscriber, type Subscriber } from "./subscriber.ts";
import { websubRoutes } from "./websub.ts";

const isHttpUrl = (value: string) => URL.canParse(value) && /^https?:$/.test(new URL(value).protocol);

const HttpUrl = v.optional(
  v.pipe(v.string(), v.check(isHttpUrl, (issue) => `"${issue.input}" is not an http(s) URL`)),
);

/** WEBSUB_TOPIC: one or more http(s) URLs, separated by commas or white space. */
export function parseTopics(value: string): string[] {
  const topics = [...new Set(value.split(/[\s,]+/).filter((t) => t !== ""))];
  const bad = topics.find((t) => !isHttpUrl(t));
  if (bad !== undefined) throw new Error(`"${bad}" is not an http(s) URL: give one or more topic URLs, separated by commas`);
  if (topics.length === 0) throw new Error(`"${value}" names no topic: give one or more topic URLs, separated by commas`);
  return topics;
}

/** The variables the WebSub module reads. */
export const WebSubEnvSchema = v.object({
  /** The topics to subscribe to; the module is off without it. */
  WEBSUB_TOPIC: v.optional(v.pipe(v.string(), fromParser(parseTopics))),
  /** A hub to use instead of the one each topic advertises. */
  WEBSUB_HUB: HttpUrl,
  // Never quoted in a message: it is a secret.
  WEBSUB_SECRET: v.optional(
    v.pipe(
      v.string(),
      v.check((value) => value.trim() !== "", "is only white space: set a secret of 1 to 199 bytes, or leave it unset"),
      v.check(
        (value) => new TextEncoder().encode(value).byteLength < 200,
        (issue) =>
          `is ${new TextEncoder().encode(issue.input as string).byteLength} bytes long: a hub secret must be under 200 bytes (WebSub 5.1)`,
      ),
    ),
  ),
  WEBSUB_LEASE: v.optional(v.pipe(v.string(), fromParser(parseDurationMs))),
  WEBSUB_CALLBACK_URL: v.optional(
    v.pipe(
      v.string(),
      v.check(isHttpUrl, (issue) => `"${issue.input}" is not an http(s) URL`),
      v.check(
        (value) => !isHttpUrl(value) || (new URL(value).search === "" && new URL(value).hash === "" && !/[?#]/.test(value)),
        (issue) => `"${issue.input}" has a query or a fragment: give the base URL the hub can reach, e.g. https://example.com/hooks`,
      ),
    ),
  ),
  WEBSUB_STORE: v.optional(v.pipe(v.string(), fromParser(parseStoreSpec)), "data/websub.sqlite"),
});

/** What the subscriber asks hubs for, once the server listens (W3C WebSub 5.1). */
export interface WebSubConfig {
  /** The topic URLs to subscribe to. */
  readonly topics: readonly string[];
  /** A hub to use instead of discovering one from each topic. */
  readonly hub?: string;
  /** Shared secret for `X-Hub-Signature`; content without a valid signature is dropped. */
  readonly secret?: string;
  /** The lease to ask for, in seconds; the hub decides. */
  readonly leaseSeconds?: number;
  /** Base URL the hub can reach this server at; defaults to the listening URL. */
  readonly callbackUrl?: string;
  /** Where subscriptions are kept. */
  readonly store: StoreSpec;
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

const SUBSCRIPTIONS = "websub_subscriptions";
const STATES = ["pending", "active", "unsubscribing", "denied", "failed", "expired"] as const;

/** Reads WEBSUB_*: null when no topic is set. */
export function loadWebSubConfig(env: Readonly<Record<string, string | undefined>>): ConfigResult<WebSubConfig | null> {
  // readEnv takes a value of only white space for unset; a secret like that is a mistake, not "no secret".
  const secret = env.WEBSUB_SECRET;
  if (secret !== undefined && secret !== "" && secret.trim() === "") {
    return { ok: false, problems: ["WEBSUB_SECRET is only white space: set a secret of 1 to 199 bytes, or leave it unset"] };
  }
  const result = readEnv(WebSubEnvSchema, env);
  if (!result.ok) return result;
  const out = result.config;
  if (out.WEBSUB_TOPIC === undefined) {
    const stray = (["WEBSUB_HUB", "WEBSUB_SECRET", "WEBSUB_LEASE", "WEBSUB_CALLBACK_URL", "WEBSUB_STORE"] as const)
      .find((k) => env[k] !== undefined && env[k]!.trim() !== "");
    if (stray === undefined) return { ok: true, config: null };
    return { ok: false, problems: [`WEBSUB_TOPIC "" is missing: ${stray} is set, and there is nothing to subscribe to`] };
  }
  return {
    ok: true,
    config: {
      topics: out.WEBSUB_TOPIC,
      hub: out.WEBSUB_HUB,
      secret: out.WEBSUB_SECRET,
      leaseSeconds: out.WEBSUB_LEASE === undefined ? undefined : Math.ceil(out.WEBSUB_LEASE / 1_000),
      callbackUrl: out.WEBSUB_CALLBACK_URL,
      store: out.WEBSUB_STORE,
    },
  };
}

export const websub: Module<WebSubConfig> = {
  configure: loadWebSubConfig,
  // Loaded only for the command: it imports this file for the variables' schema.
  command: async (args, env, print) => (await import("./cli.ts")).main(args, env, print),
  singleProcess: (config) =>
    config.store.kind === "memory"
      ? "WEBSUB_STORE=memory keeps subscriptions in one process, and a hub's verification may reach any worker: use the default SQLite store or Redis"
      : undefined,
  async create(config, context) {
    const logger = countEvents(context.logger, context.registry, WEBSUB_EVENTS);
    let store: SubscriptionStore;
    try {
      store = await openStore(config.store);
    } catch (error) {
      throw new Error(`WEBSUB_STORE ${describe(config.store)} cannot be opened: ${(error as Error).message}`);
    }
    let subscriber: Subscriber | undefined;
    // Only the process doing the subscriber's work reports the subscriptions: one series per state for the whole server.
    context.registry.collect(SUBSCRIPTIONS, "WebSub subscriptions by state.", "gauge", () => {
      const seen = subscriber?.snapshot();
      if (seen === undefined) return [];
      return STATES.map((state) => ({ labels: { state }, value: seen.filter((s) => s.state === state).length }));
    });
    const routes = websubRoutes({
      store,
      logger,
      maxBodyBytes: context.bodyLimitBytes,
      secret: config.secret,
      onDelivery: (delivery) => handleContent(delivery, logger),
      onChange: () => subscriber?.wake(),
    });
    const app = jsonErrors(new Hono(), logger).route("/websub", routes);
    return {
      prefix: "/websub/",
      fetch: app.fetch,
      listening(url) {
        logger.info("websub_started", { topics: config.topics, hub: config.hub ?? null, store: store.description });
        subscriber = startSubscriber({
          store,
          logger,
          topics: config.topics,
          hub: config.hub,
          secret: config.secret,
          leaseSeconds: config.leaseSeconds,
          callbackBase: config.callbackUrl ?? url,
        });
      },
      async close() {
        await subscriber?.stop();
        await store.close();
      },
    };
  },
};

function describe(spec: StoreSpec): string {
  return spec.kind === "memory" ? '"memory"' : spec.kind === "sqlite" ? `"${spec.path}"` : `"${spec.description}"`;
}
