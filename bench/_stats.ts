/** Medians, percentiles, and figures paired by round (both sides measured in the same round). */

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Per-round ratios of RSS per connection, a / b, rounds paired by their number (a round missing on one side pairs nothing). */
export function pairedByRound(
  a: Array<{ round: number; rssPerConnectionKb: number }>,
  b: Array<{ round: number; rssPerConnectionKb: number }>,
): number[] {
  return a.flatMap((x) => {
    const match = b.find((y) => y.round === x.round);
    return match ? [x.rssPerConnectionKb / match.rssPerConnectionKb] : [];
  });
}

/** `items` in order, starting with round `round`'s own (round 1 starts with the first). */
export function rotated<T>(items: readonly T[], round: number): T[] {
  return items.map((_, i) => items[(i + round - 1) % items.length]!);
}

/** The median of the per-round ratios a / b, rounds paired by index (both measured in the same round). */
export function pairedRatio(a: number[], b: number[]): number {
  return median(a.map((x, i) => x / b[i]!).filter(Number.isFinite));
}

/** The median of the per-round differences a - b, rounds paired by index (both measured in the same round). */
export function pairedDifference(a: number[], b: number[]): number {
  return median(a.map((x, i) => x - b[i]!).filter(Number.isFinite));
}
