/** How figures are written in the report and the log. */

export const fmt = (
  n: number,
  digits = 0,
) => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "n/a");
export const ratio = (n: number) => (Number.isFinite(n) ? `${n.toFixed(2)}x` : "n/a");
export const verdict = (ok: boolean | null) => (ok === null ? "n/a" : ok ? "met" : "**missed**");

/** Text made safe inside SVG. */
export function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** One line of progress on stderr (stdout carries the report). */
export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}
