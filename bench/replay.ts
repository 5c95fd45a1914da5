/**
 * `npm run replay`: the incident, replayed on each runtime with the policy on and off. A client
 * behaves as the WebSub hub did: one delivery (a POST) on each of 200 keep-alive connections, which
 * it then leaves idle. We sample the server's open file descriptors and the client's open
 * connections every 100 ms, then write the raw samples and an SVG chart of open connections over time.
 */
import { writeFileSync } from "node:fs";
import { holdConnections, postRequest } from "../harness/keep_alive.ts";
import { openFds } from "../harness/proc.ts";
import { startServer } from "../harness/servers.ts";
import type { Engine, Runtime } from "../src/policy/types.ts";

const CONNECTIONS = 200;
const IDLE_TIMEOUT_MS = 4_000;
const OBSERVE_MS = 12_000;
const SAMPLE_EVERY_MS = 100;
/** Each runtime's default engine. */
const ENGINES: Record<Runtime, Engine> = { node: "node-http", bun: "bun-serve", deno: "deno-per-connection" };
const RUNTIMES = Object.keys(ENGINES) as Runtime[];
const OUT = new URL(".", import.meta.url).pathname;

interface Series {
  runtime: Runtime;
  policy: "on" | "off";
  engine: string;
  /** [ms since the hub started delivering, hub connections still open, server fds above baseline] */
  samples: Array<[number, number, number]>;
}

async function replay(runtime: Runtime, policy: "on" | "off"): Promise<Series> {
  const server = await startServer(ENGINES[runtime], { IDLE_TIMEOUT: policy === "on" ? `${IDLE_TIMEOUT_MS}ms` : "0" });
  try {
    const listening = server.named("listening")[0]!;
    const pid = Number(listening.pid);
    const baseline = openFds(pid);
    const start = Date.now();
    const target = new URL("/echo", server.url);
    const delivered = await holdConnections(
      target,
      CONNECTIONS,
      postRequest(target, JSON.stringify({ items: [{ title: "Hello World" }] })),
    );
    try {
      const samples: Series["samples"] = [];
      while (Date.now() - start <= OBSERVE_MS) {
        samples.push([Date.now() - start, delivered.open(), Math.max(0, openFds(pid) - baseline)]);
        await Bun.sleep(SAMPLE_EVERY_MS);
      }
      return { runtime, policy, engine: String(listening.engine), samples };
    } finally {
      delivered.destroy();
    }
  } finally {
    await server.kill();
  }
}

const COLORS: Record<Runtime, string> = { node: "#3c873a", bun: "#c2410c", deno: "#1d4ed8" };

/** A line chart of hub connections still open over time, one line per runtime and policy. */
function chart(series: Series[]): string {
  const [w, h, left, right, top, bottom] = [760, 380, 56, 150, 58, 44];
  const x = (ms: number) => left + (ms / OBSERVE_MS) * (w - left - right);
  const y = (n: number) => top + (1 - n / CONNECTIONS) * (h - top - bottom);
  const lines = series.map((s, i) => {
    const points = s.samples.map(([ms, open]) => `${x(ms).toFixed(1)},${y(open).toFixed(1)}`).join(" ");
    const dash = s.policy === "off" ? ' stroke-dasharray="6 4"' : "";
    const label = `${s.runtime}, policy ${s.policy}`;
    return `<polyline fill="none" stroke="${COLORS[s.runtime]}" stroke-width="2"${dash} points="${points}"/>` +
      `<line x1="${w - right + 12}" x2="${w - right + 36}" y1="${top + 14 + i * 20}" y2="${top + 14 + i * 20}" stroke="${
        COLORS[s.runtime]
      }" stroke-width="2"${dash}/>` +
      `<text x="${w - right + 42}" y="${top + 18 + i * 20}" font-size="11">${escape(label)}</text>`;
  });
  const xTicks = Array.from({ length: OBSERVE_MS / 2_000 + 1 }, (_, i) => i * 2_000).map((ms) =>
    `<line x1="${x(ms)}" x2="${x(ms)}" y1="${top}" y2="${h - bottom}" stroke="#eee"/><text x="${x(ms)}" y="${
      h - bottom + 16
    }" font-size="11" text-anchor="middle">${ms / 1000}s</text>`
  );
  const yTicks = [0, 50, 100, 150, 200].map((n) =>
    `<line x1="${left}" x2="${w - right}" y1="${y(n)}" y2="${y(n)}" stroke="#eee"/><text x="${left - 8}" y="${
      y(n) + 4
    }" font-size="11" text-anchor="end">${n}</text>`
  );
  const idle =
    `<line x1="${x(IDLE_TIMEOUT_MS)}" x2="${x(IDLE_TIMEOUT_MS)}" y1="${top}" y2="${h - bottom}" stroke="#999" stroke-dasharray="2 3"/>` +
    `<text x="${x(IDLE_TIMEOUT_MS) + 4}" y="${top + 12}" font-size="11" fill="#666">IDLE_TIMEOUT</text>`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif">` +
    `<rect width="${w}" height="${h}" fill="white"/>` +
    `<text x="${left}" y="22" font-size="14">A WebSub hub's ${CONNECTIONS} keep-alive connections, left idle after one delivery each</text>` +
    `<text x="${left}" y="40" font-size="11" fill="#555">Open connections. Policy on: IDLE_TIMEOUT=${IDLE_TIMEOUT_MS / 1000}s; ` +
    `off: IDLE_TIMEOUT=0, as in the incident.</text>` +
    [...xTicks, ...yTicks, idle, ...lines].join("") +
    `<text x="${(left + w - right) / 2}" y="${h - 8}" font-size="11" text-anchor="middle">time since the hub started delivering</text>` +
    `</svg>\n`;
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

if (import.meta.main) {
  const series: Series[] = [];
  for (const runtime of RUNTIMES) {
    for (const policy of ["on", "off"] as const) {
      const result = await replay(runtime, policy);
      const last = result.samples.at(-1)!;
      console.log(
        `${runtime.padEnd(5)} policy ${policy.padEnd(3)} ${result.engine.padEnd(28)} open after ${(last[0] / 1000).toFixed(1)}s: ${
          last[1]
        } connections, +${last[2]} fds`,
      );
      series.push(result);
    }
  }
  const meta = {
    date: new Date().toISOString(),
    connections: CONNECTIONS,
    idleTimeoutMs: IDLE_TIMEOUT_MS,
    versions: { node: process.versions.node, bun: Bun.version },
  };
  writeFileSync(`${OUT}replay.json`, JSON.stringify({ meta, series }, null, 1));
  writeFileSync(`${OUT}replay.svg`, chart(series));
  console.log(`wrote ${OUT}replay.svg and ${OUT}replay.json`);
}
