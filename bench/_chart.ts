/** The throughput chart: grouped bars of median req/s per runtime, as SVG. */
import { CONNECTIONS, DURATION_S, type Kind, KIND_LABEL, KINDS, ROUNDS, RUNTIMES } from "./_config.ts";
import { escape, fmt } from "./_format.ts";
import type { Machine } from "./_machine.ts";
import type { ThroughputRow } from "./_phases/throughput.ts";

const COLORS: Record<Kind, string> = { raw: "#9ca3af", hono: "#f59e0b", template: "#2563eb" };

/** Grouped bars of median req/s per runtime: raw, bare Hono, template. */
export function chart(rows: ThroughputRow[], meta: Machine): string {
  const [w, h, left, right, top, bottom] = [720, 380, 70, 20, 70, 50];
  const max = Math.max(...rows.map((r) => r.medianRps).filter(Number.isFinite), 1);
  const step = 10 ** Math.floor(Math.log10(max));
  const unit = max / step > 5 ? step : max / step > 2 ? step / 2 : step / 5;
  const yMax = Math.ceil(max / unit) * unit;
  const y = (v: number) => top + (1 - v / yMax) * (h - top - bottom);
  const groupW = (w - left - right) / RUNTIMES.length;
  const barW = groupW / (KINDS.length + 1.5);
  const ticks: string[] = [];
  for (let v = 0; v <= yMax + unit / 2; v += unit) {
    ticks.push(
      `<line x1="${left}" x2="${w - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#eee"/>` +
        `<text x="${left - 8}" y="${(y(v) + 4).toFixed(1)}" font-size="11" text-anchor="end">${fmt(v)}</text>`,
    );
  }
  const bars = RUNTIMES.flatMap((runtime, g) => {
    const x0 = left + g * groupW + barW * 0.75;
    const group = KINDS.map((kind, i) => {
      const row = rows.find((r) => r.runtime === runtime && r.kind === kind);
      if (!row || !Number.isFinite(row.medianRps)) return "";
      const x = x0 + i * barW;
      return `<rect x="${x.toFixed(1)}" y="${y(row.medianRps).toFixed(1)}" width="${(barW - 4).toFixed(1)}" height="${
        (y(0) - y(row.medianRps)).toFixed(1)
      }" fill="${COLORS[kind]}"/>` +
        `<text x="${(x + (barW - 4) / 2).toFixed(1)}" y="${(y(row.medianRps) - 4).toFixed(1)}" font-size="10" text-anchor="middle">${
          fmt(row.medianRps / 1000, 1)
        }k</text>`;
    });
    return [
      ...group,
      `<text x="${(left + g * groupW + groupW / 2).toFixed(1)}" y="${
        h - bottom + 18
      }" font-size="12" text-anchor="middle">${runtime}</text>`,
    ];
  });
  const legend = KINDS.map((kind, i) =>
    `<rect x="${left + i * 170}" y="${top - 22}" width="12" height="12" fill="${COLORS[kind]}"/>` +
    `<text x="${left + i * 170 + 18}" y="${top - 12}" font-size="11">${escape(KIND_LABEL[kind])}</text>`
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif">` +
    `<rect width="${w}" height="${h}" fill="white"/>` +
    `<text x="${left}" y="22" font-size="14">GET / (Hello World): median requests per second over ${ROUNDS} rounds</text>` +
    `<text x="${left}" y="38" font-size="11" fill="#555">${
      escape(
        `${meta.generator}, ${CONNECTIONS} connections, ${DURATION_S} s per round; ${meta.nproc} cores (${meta.cpuModel}), shared; ${
          meta.date.slice(0, 10)
        }`,
      )
    }</text>` +
    [...ticks, ...bars, ...legend].join("") +
    `<line x1="${left}" x2="${w - right}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>` +
    `<text x="14" y="${(top + h - bottom) / 2}" font-size="11" transform="rotate(-90 14 ${
      (top + h - bottom) / 2
    })" text-anchor="middle">requests/s</text>` +
    `</svg>\n`;
}
