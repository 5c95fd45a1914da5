/**
 * The WebSub subscriber as an optional module: off unless WEBSUB_TOPIC is set; then it mounts the
 * callback at /websub/:id, counts deliveries and subscriptions on /metrics, and once the server
 * listens keeps the configured topics subscribed (src/websub/subscriber.ts), with subscriptions in
 * WEBSUB_STORE. To remove it, delete this folder, its line in src/main/modules.ts and the `websub`
 * script in package.json (docs/websub.md).
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { Hono } from "hono";
import * as v from "valibot";
import { DEFAULTS, formatDuration, fromParser, parseDurationMs, parseSizeBytes, readEnv } from "../policy/config.ts";
import type { Logger } from "../policy/log.ts";
import type { ConfigResult, Module } from "../policy/types.ts";
import { jsonErrors } from "../policy/errors.ts";
import { type CountedEvent, countEvents } from "../policy/telemetry.ts";
import { handleContent } from "./content.ts";
import { PROCESSING_DEFAULTS, type ProcessingOptions, startProcessor } from "./processing.ts";
import type { InboxLimits } from "./store/inbox.ts";
import { openStore, parseStoreSpec, type StoreSpec } from "./store/open.ts";
import type { SubscriptionStore } from "./store/types.ts";
import { startSubscriber, type Subscriber } from "./subscriber.ts";
import { type Delivery, websubRoutes } from "./websub.ts";

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

/** The inbox's default bounds: a day of a busy feed's deliveries, and what a small disk or Redis spares. */
export const INBOX_DEFAULTS: InboxLimits = { maxCount: 10_000, maxBytes: 50 * 1_048_576 };

/** A whole number from `min` to `max`, said as `what` in its messages. */
function Count(fallback: string, min: number, max: number, what: string) {
  return v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.regex(/^\d+$/, (issue) => `"${issue.input}" is not ${what}: use a whole number from ${min} to ${max}`),
      v.transform(Number),
      v.minValue(min, (issue) => `"${issue.input}" is under the minimum of ${min}`),
      v.maxValue(max, (issue) => `"${issue.input}" is over the maximum of ${max}`),
    ),
    fallback,
  );
}

/** A duration of at least 1 ms (0 would mean nothing here). */
function Positive(fallback: string, meaning: string) {
  return v.optional(
    v.pipe(
      v.string(),
      fromParser((value) => {
        const ms = parseDurationMs(value);
        if (ms === 0) throw new Error(`"${value}" is zero: ${meaning}, so use e.g. ${fallback}`);
        return ms;
      }),
    ),
    fallback,
  );
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
  /** A module exporting the `handleContent` to run instead of src/websub/content.ts's. */
  WEBSUB_HANDLER: v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.check(
        (path) => existsSync(resolve(process.cwd(), path)),
        (issue) => `"${issue.input}" does not exist: give the path of a module that exports handleContent`,
      ),
    ),
  ),
  /** `subscription`: a subscription's deliveries one at a time, in arrival order; `none`: any order, at once. */
  WEBSUB_ORDER: v.optional(
    v.picklist(["subscription", "none"], (issue) => `${JSON.stringify(issue.input)} is not an order: use subscription or none`),
    "subscription",
  ),
  WEBSUB_CONCURRENCY: Count(String(PROCESSING_DEFAULTS.concurrency), 1, 1_000, "a count of deliveries"),
  WEBSUB_PROCESSING_LEASE: Positive(formatDuration(PROCESSING_DEFAULTS.leaseMs), "a claim must last a while"),
  WEBSUB_RETRY_ATTEMPTS: Count(String(PROCESSING_DEFAULTS.attempts), 1, 1_000, "a count of attempts"),
  WEBSUB_RETRY_FIRST: Positive(formatDuration(PROCESSING_DEFAULTS.retryFirstMs), "a retry must wait"),
  WEBSUB_RETRY_MAX: Positive(formatDuration(PROCESSING_DEFAULTS.retryMaxMs), "a retry must wait"),
  WEBSUB_INBOX_LIMIT: Count(String(INBOX_DEFAULTS.maxCount), 1, 10_000_000, "a count of deliveries"),
  WEBSUB_INBOX_BYTES: v.optional(v.pipe(v.string(), fromParser(parseSizeBytes)), `${INBOX_DEFAULTS.maxBytes / 1_048_576}mb`),
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
  /** The module whose `handleContent` processes deliveries (absolute); the template's own without it. */
  readonly handler?: string;
  /** How deliveries are processed. */
  readonly processing: ProcessingOptions;
  /** The inbox's bounds. */
  readonly limits: InboxLimits;
}

const DELIVERIES = "websub_deliveries_total";
const DELIVERIES_HELP = "WebSub content deliveries by result.";
const PROCESSING = "websub_processing_total";
const PROCESSING_HELP = "Attempts of handleContent by result: processed, retried after a throw, failed (kept as a dead letter).";
const INBOX = "websub_inbox_deliveries";

/** The module's events that count on /metrics. */
export const WEBSUB_EVENTS: Record<string, CountedEvent> = {
  websub_delivery: [DELIVERIES, DELIVERIES_HELP, { result: "accepted" }],
  websub_signature_rejected: [DELIVERIES, DELIVERIES_HELP, { result: "signature_rejected" }],
  websub_gone: [DELIVERIES, DELIVERIES_HELP, { result: "gone" }],
  websub_too_large: [DELIVERIES, DELIVERIES_HELP, { result: "too_large" }],
  websub_inbox_full: [DELIVERIES, DELIVERIES_HELP, { result: "inbox_full" }],
  websub_inbox_write_failed: [DELIVERIES, DELIVERIES_HELP, { result: "store_failed" }],
  websub_processed: [PROCESSING, PROCESSING_HELP, { result: "processed" }],
  websub_processing_failed: [PROCESSING, PROCESSING_HELP, { result: "retried" }],
  websub_dead_letter: [PROCESSING, PROCESSING_HELP, { result: "failed" }],
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
    const stray = Object.keys(WebSubEnvSchema.entries).find((k) => k !== "WEBSUB_TOPIC" && env[k] !== undefined && env[k]!.trim() !== "");
    if (stray === undefined) return { ok: true, config: null };
    return { ok: false, problems: [`WEBSUB_TOPIC "" is missing: ${stray} is set, and there is nothing to subscribe to`] };
  }
  const problems: string[] = [];
  if (out.WEBSUB_RETRY_MAX < out.WEBSUB_RETRY_FIRST) {
    problems.push(
      `WEBSUB_RETRY_MAX "${formatDuration(out.WEBSUB_RETRY_MAX)}" is shorter than WEBSUB_RETRY_FIRST "${
        formatDuration(out.WEBSUB_RETRY_FIRST)
      }": use at least that`,
    );
  }
  // A delivery the inbox could never hold would be refused (503) for ever, and the hub retry in vain.
  const bodyLimitBytes = sizeOr(env.BODY_LIMIT, DEFAULTS.bodyLimitBytes);
  if (out.WEBSUB_INBOX_BYTES < bodyLimitBytes) {
    problems.push(
      `WEBSUB_INBOX_BYTES "${env.WEBSUB_INBOX_BYTES}" is smaller than BODY_LIMIT (${bodyLimitBytes} bytes): the inbox must hold at least one delivery of the largest size accepted`,
    );
  }
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    config: {
      handler: out.WEBSUB_HANDLER === undefined ? undefined : resolve(process.cwd(), out.WEBSUB_HANDLER),
      processing: {
        ordered: out.WEBSUB_ORDER === "subscription",
        concurrency: out.WEBSUB_CONCURRENCY,
        leaseMs: out.WEBSUB_PROCESSING_LEASE,
        attempts: out.WEBSUB_RETRY_ATTEMPTS,
        retryFirstMs: out.WEBSUB_RETRY_FIRST,
        retryMaxMs: out.WEBSUB_RETRY_MAX,
      },
      limits: { maxCount: out.WEBSUB_INBOX_LIMIT, maxBytes: out.WEBSUB_INBOX_BYTES },
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
    const handle = await loadHandler(config.handler);
    // Started at once, before the server listens: what waits from before a restart is resumed first.
    const processor = startProcessor({ inbox: store.inbox, logger, handle }, config.processing);
    // Every process processes; each reports the store's inbox as of its last look, so the largest is the freshest.
    context.registry.collect(
      INBOX,
      "WebSub deliveries in the inbox: pending (waiting or in progress) and failed (dead letters).",
      "gauge",
      () => {
        const seen = processor.stats();
        if (seen === undefined) return [];
        return [{ labels: { state: "pending" }, value: seen.pending }, { labels: { state: "failed" }, value: seen.failed }];
      },
      { aggregation: "max" },
    );
    const routes = websubRoutes({
      store,
      logger,
      maxBodyBytes: context.bodyLimitBytes,
      secret: config.secret,
      limits: config.limits,
      onStored: () => processor.wake(),
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
      async close(deadline) {
        // What is in progress may finish in what is left of the shutdown's time, not a SHUTDOWN_TIMEOUT of its own.
        await Promise.all([subscriber?.stop(), processor.stop(Math.max(0, deadline - Date.now()))]);
        await store.close();
      },
    };
  },
};

// The server's own variables, which the entries validate (an invalid one stops the server before
// this matters): read here only for what the module derives from them.
function sizeOr(value: string | undefined, fallback: number): number {
  try {
    return value === undefined || value.trim() === "" ? fallback : parseSizeBytes(value);
  } catch {
    return fallback;
  }
}

type HandleContent = (delivery: Delivery, logger: Logger) => unknown;

/** `handleContent` of the module at `path` (WEBSUB_HANDLER), or the template's own. */
async function loadHandler(path: string | undefined): Promise<HandleContent> {
  if (path === undefined) return handleContent;
  let loaded: Record<string, unknown>;
  try {
    loaded = await import(pathToFileURL(path).href);
  } catch (error) {
    throw new Error(`WEBSUB_HANDLER "${path}" cannot be loaded: ${(error as Error).message}`);
  }
  if (typeof loaded.handleContent !== "function") {
    throw new Error(`WEBSUB_HANDLER "${path}" exports no function handleContent: export one, (delivery, logger) => void | Promise<void>`);
  }
  return loaded.handleContent as HandleContent;
}

function describe(spec: StoreSpec): string {
  return spec.kind === "memory" ? '"memory"' : spec.kind === "sqlite" ? `"${spec.path}"` : `"${spec.description}"`;
}
