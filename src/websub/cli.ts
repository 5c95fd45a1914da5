/**
 * `npm run websub -- list | subscribe <topic> | unsubscribe <topic> | inbox [retry|drop <id>]`:
 * manages the subscriptions and the inbox in WEBSUB_STORE, also while the server runs. It only
 * edits the store; the server's subscriber does what the edit asks at its next look (within
 * WEBSUB's poll, 5 s): discovery and the request to the hub for a subscribe, the unsubscription
 * request for an unsubscribe, deletion once the hub verified it; a dead letter retried is taken
 * by a processor within its poll, 1 s. Prints JSON lines; never prints a secret or a body. Exit 0
 * done, 1 failed, 2 bad usage.
 */
import { readEnv } from "../policy/config.ts";
import { parseTopics, WebSubEnvSchema } from "./mod.ts";
import { openStore } from "./store/open.ts";
import type { InboxSummary } from "./store/inbox.ts";
import type { Subscription, SubscriptionStore } from "./store/types.ts";
import { toUnsubscribe } from "./subscriber.ts";

const USAGE =
  "usage: npm run websub -- list | subscribe <topic URL> | unsubscribe <topic URL> | inbox | inbox retry <id> | inbox drop <id>";

/** What `inbox` shows of a delivery: no body, times as ISO strings. */
export function describeDelivery(entry: InboxSummary): Record<string, unknown> {
  return {
    id: entry.id,
    state: entry.state,
    subscription: entry.subscriptionId,
    topic: entry.topic,
    attempts: entry.attempts,
    bytes: entry.bytes,
    receivedAt: new Date(entry.receivedAtMs).toISOString(),
    nextAttemptAt: entry.nextAttemptAtMs === undefined ? null : new Date(entry.nextAttemptAtMs).toISOString(),
    lastError: entry.lastError ?? null,
  };
}

/** `inbox`: every delivery waiting, in progress or failed, then a summary; `inbox retry|drop <id>`: a dead letter. */
async function inbox(args: string[], store: SubscriptionStore, print: (line: object) => void): Promise<number> {
  const [action, id, ...rest] = args;
  if (action === undefined) {
    const entries = await store.inbox.list();
    for (const entry of entries) print(describeDelivery(entry));
    const count = (state: InboxSummary["state"]) => entries.filter((e) => e.state === state).length;
    print({
      event: "websub_inbox",
      pending: count("pending"),
      processing: count("processing"),
      failed: count("failed"),
      bytes: entries.reduce((sum, e) => sum + e.bytes, 0),
    });
    return 0;
  }
  if ((action !== "retry" && action !== "drop") || id === undefined || rest.length > 0) {
    print({ error: "usage", message: USAGE });
    return 2;
  }
  const done = action === "retry" ? await store.inbox.requeue(id) : await store.inbox.drop(id);
  if (!done) {
    print({ error: "not_failed", message: `No failed delivery "${id}": see npm run websub -- inbox` });
    return 1;
  }
  print(
    action === "retry"
      ? { event: "websub_delivery_requeued", id, note: "a running server processes it within a second" }
      : { event: "websub_delivery_dropped", id },
  );
  return 0;
}

/** What `list` shows of a subscription: everything but the secret, times as ISO strings. */
export function describeSubscription(sub: Subscription): Record<string, unknown> {
  const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());
  return {
    id: sub.id,
    state: sub.state,
    source: sub.source,
    origin: sub.origin,
    topic: sub.topic,
    hub: sub.hub || null,
    callbackUrl: sub.callbackUrl || null,
    signed: sub.secret !== undefined,
    pending: sub.pending ?? null,
    unsubscribe: sub.unsubscribe ?? false,
    leaseSeconds: sub.leaseSeconds ?? null,
    expiresAt: iso(sub.expiresAtMs),
    nextAttemptAt: iso(sub.nextAttemptAtMs),
    failures: sub.failures ?? 0,
  };
}

/** Runs one command against `store`; returns the exit code. */
export async function run(
  args: string[],
  store: SubscriptionStore,
  env: Readonly<Record<string, string | undefined>>,
  print: (line: object) => void,
) {
  const [command, target, ...rest] = args;
  if (command === "list" && target === undefined) {
    for (const sub of (await store.list()).sort((a, b) => a.source.localeCompare(b.source))) print(describeSubscription(sub));
    return 0;
  }
  if (command === "inbox") return await inbox(args.slice(1), store, print);
  if ((command !== "subscribe" && command !== "unsubscribe") || target === undefined || rest.length > 0) {
    print({ error: "usage", message: USAGE });
    return 2;
  }
  let topic: string;
  try {
    [topic] = parseTopics(target) as [string];
  } catch (error) {
    print({ error: "invalid_topic", message: `Topic ${(error as Error).message}` });
    return 2;
  }
  const all = await store.list();
  // More than one while a changed callback base is being moved to: the old one and its replacement.
  const matching = all.filter((s) => (s.source === topic || s.topic === topic) && !s.unsubscribe);
  const current = matching[0];
  const now = Date.now();
  if (command === "subscribe") {
    if (current !== undefined) {
      print({ event: "websub_already_subscribed", ...describeSubscription(current) });
      return 0;
    }
    const sub: Subscription = {
      id: crypto.randomUUID(),
      source: topic,
      origin: "manual",
      topic,
      hub: "",
      callbackUrl: "",
      state: "pending",
      nextAttemptAtMs: now,
      updatedAtMs: now,
    };
    await store.put(sub);
    print({ event: "websub_subscribe_queued", ...describeSubscription(sub), note: "the running server requests it at its next look" });
    return 0;
  }
  if (current === undefined) {
    print({ error: "not_subscribed", message: `No subscription to "${topic}": see npm run websub -- list` });
    return 1;
  }
  for (const sub of matching) {
    const next = toUnsubscribe(sub, now);
    await store.put(next);
    print({ event: "websub_unsubscribe_queued", ...describeSubscription(next), note: "the running server asks the hub at its next look" });
  }
  const configured = readEnv(WebSubEnvSchema, env);
  if (configured.ok && configured.config.WEBSUB_TOPIC?.includes(current.source)) {
    print({
      warning: "still_configured",
      message: `"${current.source}" is in WEBSUB_TOPIC: the server subscribes to it again unless it is removed there`,
    });
  }
  return 0;
}

/**
 * The command line: `args` after `npm run websub --`, and the environment; prints each line with
 * `print` and resolves to the exit code. Run by src/main/command.ts, the one that reads the
 * environment and exits.
 */
export async function main(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  print: (line: object) => void,
): Promise<number> {
  const config = readEnv(WebSubEnvSchema, env);
  if (!config.ok) {
    for (const problem of config.problems) print({ error: "invalid_configuration", message: problem });
    return 2;
  }
  const spec = config.config.WEBSUB_STORE;
  if (spec.kind === "memory") {
    print({
      error: "invalid_configuration",
      message: 'WEBSUB_STORE "memory" lives in the server\'s own process: there is nothing to manage from here',
    });
    return 2;
  }
  let store: SubscriptionStore;
  try {
    store = await openStore(spec);
  } catch (error) {
    print({ error: "store_unavailable", message: (error as Error).message });
    return 1;
  }
  let code = 1;
  try {
    code = await run([...args], store, env, print);
  } catch (error) {
    print({ error: "failed", message: (error as Error).message });
  } finally {
    await store.close();
  }
  return code;
}
