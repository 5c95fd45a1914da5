/**
 * Runs `handleContent` over the inbox, at least once per delivery (docs/websub.md#processing): a
 * delivery is claimed with a lease, which is renewed while the function runs and which a process
 * that died loses; it leaves the inbox only once the function returned, a throw is retried with
 * capped exponential backoff, and after the last attempt it is kept as a dead letter. Every process
 * runs one; any of them may take any delivery.
 */
import type { Logger } from "../policy/log.ts";
import { backoffMs } from "./hub_client.ts";
import type { ClaimedEntry, Inbox, InboxStats } from "./store/inbox.ts";
import type { Delivery } from "./websub.ts";

/** How deliveries are processed (WEBSUB_ORDER, WEBSUB_CONCURRENCY, WEBSUB_RETRY_*, WEBSUB_PROCESSING_LEASE). */
export interface ProcessingOptions {
  /** One subscription's deliveries one at a time, in arrival order. @default true */
  ordered: boolean;
  /** Deliveries this process runs at once. @default 4 */
  concurrency: number;
  /** How long a claim holds without renewal; a process that died hands its delivery over within it. @default 30 s */
  leaseMs: number;
  /** Attempts before a delivery is kept as failed. @default 12 */
  attempts: number;
  /** The first retry's delay, doubling, each wait between half and all of its step. @default 1 s */
  retryFirstMs: number;
  /** The longest wait between attempts. @default 10 min */
  retryMaxMs: number;
}

/** The defaults of {@link ProcessingOptions}, as docs/websub.md gives them. */
/** The longest a failing store's poll waits: it backs off from the poll interval, doubling, to this. */
const FAILING_POLL_MAX_MS = 30_000;

export const PROCESSING_DEFAULTS: ProcessingOptions = {
  ordered: true,
  concurrency: 4,
  leaseMs: 30_000,
  attempts: 12,
  retryFirstMs: 1_000,
  retryMaxMs: 600_000,
};

/** What a processor needs besides its options. */
export interface ProcessorContext {
  inbox: Inbox;
  logger: Logger;
  /** The user's function: `handleContent` of src/websub/content.ts. */
  handle(delivery: Delivery, logger: Logger): unknown;
  /** How often the inbox is looked at when nothing is due sooner (another process's deliveries, a dead one's leases). @default 1 s */
  pollMs?: number;
  random?: () => number;
}

/** A running processor. */
export interface Processor {
  /** Looks at the inbox now (a delivery was stored). */
  wake(): void;
  /** The inbox's size as of the last look. */
  stats(): InboxStats | undefined;
  /**
   * Takes nothing new; lets the deliveries in progress finish within `graceMs`, and resolves once
   * they have or the time is up. What did not finish stays in the inbox, its claim given up.
   */
  stop(graceMs: number): Promise<void>;
}

/** The user's Delivery for a claimed entry. */
export function toDelivery(entry: ClaimedEntry): Delivery {
  return {
    id: entry.id,
    attempt: entry.attempt,
    subscription: entry.subscription,
    headers: entry.headers,
    // Every store hands out bodies on an ArrayBuffer of their own (a copy, SQLite's, ioredis' Buffer).
    body: entry.body as Uint8Array<ArrayBuffer>,
    contentType: entry.headers["content-type"] ?? null,
    receivedAtMs: entry.receivedAtMs,
  };
}

/** An error as the sentence kept with the delivery and shown by `npm run websub -- inbox`. */
function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 1_000);
  return `Thrown: ${String(error)}`.slice(0, 1_000);
}

/** Starts processing the inbox; it runs until stopped. */
export function startProcessor(context: ProcessorContext, options: ProcessingOptions): Processor {
  const { inbox, logger } = context;
  const pollMs = context.pollMs ?? 1_000;
  const retry = { baseMs: options.retryFirstMs, maxMs: options.retryMaxMs, random: context.random };
  // Renewed at a third of the lease, so that two renewals may fail (a slow store) before it ends.
  const renewMs = Math.max(1, Math.floor(options.leaseMs / 3));
  const owner = crypto.randomUUID();
  const running = new Map<string, Promise<void>>();
  /** The lease renewal of each delivery in progress, stopped with it or when stop() hands it back. */
  const renewals = new Map<string, ReturnType<typeof setInterval>>();
  let stopping = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let looking = false;
  let again = false;
  let seen: InboxStats | undefined;
  let seenAtMs = 0;
  /** Looks in a row that failed (the store down): the next waits longer, and only some are logged. */
  let failures = 0;

  const schedule = (delayMs: number) => {
    clearTimeout(timer);
    if (stopping) return;
    // While the store fails, the poll backs off: 1, 2, 4... s, at most FAILING_POLL_MAX_MS.
    const ceiling = failures === 0 ? pollMs : Math.min(pollMs * 2 ** (failures - 1), FAILING_POLL_MAX_MS);
    timer = setTimeout(look, Math.max(0, Math.min(delayMs, ceiling)));
  };

  /** Claims what is due while there is room; then sleeps until the next thing is due, or the poll. */
  function look(): void {
    if (stopping) return;
    if (looking) {
      again = true;
      return;
    }
    looking = true;
    void (async () => {
      let nextMs = pollMs;
      try {
        while (!stopping && running.size < options.concurrency) {
          const entry = await inbox.claim(owner, options.leaseMs, options.ordered);
          if (entry === undefined) break;
          // Claimed as stop() began: handed back at once rather than left to its lease.
          if (stopping) await inbox.retry(entry.id, owner, 0, "The process stopped before this attempt began");
          else start(entry);
        }
        // For the gauge only: once per poll is enough, and spares the store a query per delivery.
        if (seen === undefined || performance.now() - seenAtMs >= pollMs) {
          seenAtMs = performance.now();
          seen = await inbox.stats();
        }
        if (running.size < options.concurrency) {
          const due = await inbox.nextDueInMs(options.ordered);
          // Due now yet not claimed: another process took it between the two looks; look again shortly.
          if (due !== undefined) nextMs = Math.max(due, 50);
        }
        if (failures > 0) logger.info("websub_inbox_recovered", { failures });
        failures = 0;
      } catch (error) {
        failures += 1;
        // The first failure, then one line per backed-off poll (at most every FAILING_POLL_MAX_MS), each with the count.
        logger.error("websub_inbox_failed", { error, failures });
        nextMs = Number.POSITIVE_INFINITY;
      } finally {
        looking = false;
      }
      if (again) {
        again = false;
        look();
      } else schedule(nextMs);
    })();
  }

  function start(entry: ClaimedEntry): void {
    const work = attempt(entry).catch((error: unknown) => logger.error("websub_inbox_failed", { delivery: entry.id, error })).finally(
      () => {
        running.delete(entry.id);
        look();
      },
    );
    running.set(entry.id, work);
  }

  async function attempt(entry: ClaimedEntry): Promise<void> {
    // `id` the subscription's, as in every websub_ event; `delivery` the stable id handleContent sees.
    const fields = { id: entry.subscription.id, delivery: entry.id, topic: entry.subscription.topic, attempt: entry.attempt };
    if (entry.attempt > options.attempts) {
      // Claimed more often than allowed: the process stopped during the last attempt (a crash, or a
      // kill), perhaps because of this very delivery. Not run again; kept.
      const error = "The process ended during the last attempt";
      if (await inbox.fail(entry.id, owner, error)) logger.error("websub_dead_letter", { ...fields, attempts: options.attempts, error });
      return;
    }
    let lost = false;
    const renew = setInterval(() => {
      inbox.extend(entry.id, owner, options.leaseMs).then((held) => {
        if (!held && !lost) {
          lost = true;
          logger.warn("websub_lease_lost", fields);
        }
      }, (error: unknown) => logger.warn("websub_lease_renewal_failed", { ...fields, error }));
    }, renewMs);
    renewals.set(entry.id, renew);
    let failure: unknown;
    let failed = false;
    try {
      await context.handle(toDelivery(entry), logger);
    } catch (error) {
      failed = true;
      failure = error;
    } finally {
      clearInterval(renew);
      renewals.delete(entry.id);
    }
    if (!failed) {
      // Not held any more: another process has it now and runs it again (at least once).
      if (await inbox.done(entry.id, owner)) {
        logger.info("websub_processed", { ...fields, sinceReceivedMs: Date.now() - entry.receivedAtMs });
      } else logger.warn("websub_lease_lost", fields);
      return;
    }
    const error = describeError(failure);
    if (entry.attempt >= options.attempts) {
      if (await inbox.fail(entry.id, owner, error)) {
        logger.error("websub_dead_letter", { ...fields, attempts: entry.attempt, error: failure });
      }
      return;
    }
    const delayMs = backoffMs(entry.attempt, retry);
    if (await inbox.retry(entry.id, owner, delayMs, error)) {
      logger.warn("websub_processing_failed", { ...fields, retryInMs: delayMs, error: failure });
    }
  }

  schedule(0);
  return {
    wake: look,
    stats: () => seen,
    async stop(graceMs) {
      stopping = true;
      clearTimeout(timer);
      if (running.size === 0) return;
      let expired: ReturnType<typeof setTimeout> | undefined;
      const timeUp = new Promise<void>((resolve) => (expired = setTimeout(resolve, graceMs)));
      await Promise.race([Promise.all(running.values()), timeUp]);
      clearTimeout(expired);
      for (const id of running.keys()) {
        clearInterval(renewals.get(id));
        // Handed over now rather than when the lease ends: due again at once, for the next process.
        await inbox.retry(id, owner, 0, "The process stopped before this attempt finished").catch(() => {});
        logger.warn("websub_processing_interrupted", { delivery: id });
      }
    },
  };
}
