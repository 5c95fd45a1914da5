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
