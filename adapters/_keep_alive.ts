/**
 * The N of the `Keep-Alive: timeout=N` a response on a connection that stays open advertises: the
 * largest whole number of seconds strictly below IDLE_TIMEOUT (75 s: 74, 2.5 s: 2), so a client
 * that trusts it never reuses a connection the server is closing. 0 means no header: IDLE_TIMEOUT
 * of 1 s or less, or 0 (disabled) (docs/policy.md#clients-are-told-the-idle-timeout).
 */
export function keepAliveHintSeconds(idleTimeoutMs: number): number {
  return idleTimeoutMs > 0 ? Math.ceil(idleTimeoutMs / 1_000) - 1 : 0;
}
