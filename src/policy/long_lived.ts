/**
 * The long-lived connections of one server (WebSockets and event streams), which the HTTP policy's
 * drain cannot end by itself: a WebSocket has no "response complete" to wait for, and an event
 * stream is never complete. `shutdown()` closes them all at step 5 (after SHUTDOWN_DELAY) and waits
 * for them within SHUTDOWN_TIMEOUT (docs/policy.md#long-lived-connections).
 */

/** The long-lived connection policy: the meaning of each WEBSOCKET_* and SSE_* variable. */
export interface LongLivedPolicy {
  /** WEBSOCKET_PING_INTERVAL: quiet this long, a WebSocket is pinged; silent another interval, it is closed. 0 disables. */
  readonly pingIntervalMs: number;
  /** WEBSOCKET_MAX_MESSAGE: a larger message closes the connection with 1009. */
  readonly maxMessageBytes: number;
  /** WEBSOCKET_MAX_BUFFERED: this much queued for a client that does not read closes it with 1008. */
  readonly maxBufferedBytes: number;
  /** SSE_HEARTBEAT: a comment line whenever an event stream wrote nothing for this long. 0 disables. */
  readonly sseHeartbeatMs: number;
}

export const LONG_LIVED_DEFAULTS: LongLivedPolicy = {
  pingIntervalMs: 30_000,
  maxMessageBytes: 1_048_576,
  maxBufferedBytes: 4 * 1_048_576,
  sseHeartbeatMs: 15_000,
};

/** How long an `EventSource` cut at shutdown waits before it reconnects (the `retry:` field sent). */
export const SSE_RETRY_MS = 1_000;

/** One long-lived connection, as shutdown sees it. */
export interface Closer {
  /** Step 5: asks it to end (1001, or an event stream's `retry:` and end). */
  close(): void;
  /** SHUTDOWN_TIMEOUT is over: drops it. */
  cut(): void;
}

/**
 * Connections of one kind that track themselves (a server's WebSockets): joined once, so that each
 * connection costs LongLived nothing (no entry, no closer, no closure of its own). The group calls
 * `LongLived.left()` whenever one of its connections is gone.
 */
export interface CloserGroup {
  /** How many of its connections are open. */
  readonly size: number;
  /** Step 5: asks each of them to end. */
  closeAll(): void;
  /** Drops each of them; returns how many. */
  cutAll(): number;
}

/** One server's long-lived connections, and whether it is shutting down. */
export class LongLived {
  readonly policy: LongLivedPolicy;
  #closing = false;
  /** True from step 5 on: one that joins now is asked to end at once. */
  #closed = false;
  #open = new Set<Closer>();
  #groups: CloserGroup[] = [];
  #empty: (() => void) | undefined;

  constructor(policy: LongLivedPolicy = LONG_LIVED_DEFAULTS) {
    this.policy = policy;
  }

  /** True from the shutdown signal on: a new WebSocket is refused (503). */
  get closing(): boolean {
    return this.#closing;
  }

  /** How many are open. */
  get size(): number {
    let size = this.#open.size;
    for (const group of this.#groups) size += group.size;
    return size;
  }

  /** Tracks the connections of `group`, from now on. */
  addGroup(group: CloserGroup): void {
    this.#groups.push(group);
  }

  /** One of a group's connections is gone. */
  left(): void {
    if (this.#empty && this.size === 0) this.#empty();
  }

  /**
   * Tracks one connection until the function returned is called (once it has closed, for whatever
   * reason). After step 5 (an event stream that began on a connection still draining), it is asked
   * to end as soon as it is set up.
   */
  add(closer: Closer): () => void {
    this.#open.add(closer);
    if (this.#closed) queueMicrotask(() => closer.close());
    return () => {
      this.#open.delete(closer);
      this.left();
    };
  }

  /** The shutdown signal: from now on, no new long-lived connection. */
  refuseNew(): void {
    this.#closing = true;
  }

  /**
   * Step 5 of shutdown: closes every long-lived connection (a WebSocket gets 1001, an event stream
   * a `retry:` and its end) and settles once none is left. The caller bounds the wait.
   */
  closeAll(): Promise<void> {
    this.#closing = true;
    this.#closed = true;
    if (this.size === 0) return Promise.resolve();
    const empty = new Promise<void>((resolve) => (this.#empty = resolve));
    for (const closer of [...this.#open]) closer.close();
    for (const group of this.#groups) group.closeAll();
    return empty;
  }

  /** Drops every one still open; returns how many. */
  cut(): number {
    const open = [...this.#open];
    for (const closer of open) closer.cut();
    let cut = open.length;
    for (const group of this.#groups) cut += group.cutAll();
    return cut;
  }
}
