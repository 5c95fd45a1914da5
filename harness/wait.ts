/** Runs `fn` with resources that are cleaned up even when it throws. */
export async function using<T>(fn: (defer: (cleanup: () => unknown) => void) => Promise<T>): Promise<T> {
  const cleanups: Array<() => unknown> = [];
  try {
    return await fn((cleanup) => cleanups.push(cleanup));
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch {
        // Cleanup must not hide the test's own failure.
      }
    }
  }
}

/** Resolves like `promise`, or rejects naming `what` after `timeoutMs`. */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs}ms`)), timeoutMs);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/**
 * Conditions to wait for on something that changes (a fake server's requests): `until()` resolves
 * once its condition holds, looked at now and at each `changed()`, and rejects after `timeoutMs`
 * naming `what` and, from `describe()`, what there was instead.
 */
export function conditions(describe: () => string): {
  changed(): void;
  until(condition: () => boolean, timeoutMs: number, what: string): Promise<void>;
} {
  const waiters = new Set<() => void>();
  return {
    changed: () => waiters.forEach((wake) => wake()),
    until(condition, timeoutMs, what) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!condition()) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${what} within ${timeoutMs}ms; ${describe()}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}
