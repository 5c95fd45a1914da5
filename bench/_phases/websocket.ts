/**
 * WebSockets: the template (the example app's `GET /ws` echo through the entry, each runtime's
 * default engine) beside the runtime's bare WebSocket echo server (fixtures/ws_raw.*.ts: `ws` on
 * node:http, Bun.serve's websocket, Deno.serve with Deno.upgradeWebSocket). Servers on CPU 0, the
 * clients (bench/_ws_client.ts, Bun) on CPU 1.
 *
 * 1. Held: the bare server, the template at the default WEBSOCKET_PING_INTERVAL (30 s) and the
 *    template with WEBSOCKET_PING_INTERVAL=0 run at once. Each in turn gets WS_CONNECTIONS idle
 *    WebSockets from a client of its own; its RSS is read before they open and SETTLE_MS after,
 *    so memory per socket is (after - before) / held. Then, with every socket still held, the CPU
 *    time (utime + stime, /proc) each server spends over WS_PING_CPU_S: the template with pings
 *    minus the template without is what pinging 10,000 quiet sockets costs. The clients answer
 *    pings (Bun's client does by itself); each says at the end how many of its sockets are still
 *    open, so a socket closed for an unanswered ping would show.
 * 2. Echo: the bare server and the template both on CPU 0 at the same time, each loaded by its own
 *    client of WS_CLIENTS sockets on CPU 1 (send a message, await its echo, send the next), as
 *    bench/coscheduled_ab.ts does with wrk: the kernel splits the core between the two servers,
 *    so the ratio of their echoes per second is the inverse ratio of their CPU per message, and
 *    the host's noise hits both alike. One warm-up round, then WS_ROUNDS rounds of
 *    WS_DURATION_S; each round's template/bare ratio, and the median and range.
 */
import type { FileSink } from "bun";
import { rss } from "../../harness/proc.ts";
import type { Runtime } from "../../src/policy/types.ts";
import {
  SETTLE_MS,
  TARGETS,
  WS_BATCH,
  WS_CLIENTS,
  WS_CONNECTIONS,
  WS_DURATION_S,
  WS_MESSAGE_BYTES,
  WS_PING_CPU_S,
  WS_ROUNDS,
  type WsKind,
} from "../_config.ts";
import { fmt, log, ratio, verdict } from "../_format.ts";
import { wsClientCommand } from "../_clients.ts";
import { ClientProcess } from "../_process.ts";
import { cpuMs, fdCount, loadAverage } from "../_proc.ts";
import { type Server, startCommand, WS_COMMANDS } from "../_servers.ts";
import { median, rotated } from "../_stats.ts";

/** The servers the held step runs at once: the bare one, and the template with pings on and off. */
type HeldName = "bare" | "template" | "template-no-pings";
const HELD: Array<{ name: HeldName; kind: WsKind; env: Record<string, string> }> = [
  { name: "bare", kind: "ws-bare", env: {} },
  { name: "template", kind: "ws-template", env: {} },
  { name: "template-no-pings", kind: "ws-template", env: { WEBSOCKET_PING_INTERVAL: "0" } },
];
const HELD_LABEL: Record<HeldName, string> = {
  bare: "bare WebSocket server",
  template: "template, WEBSOCKET_PING_INTERVAL=30s (default)",
  "template-no-pings": "template, WEBSOCKET_PING_INTERVAL=0",
};

export interface HeldRow {
  name: HeldName;
  engine: string;
  wanted: number;
  /** Open when the server was measured, as the client saw them. */
  opened: number;
  /** Failed to open, or closed by the server before it was measured. */
  failed: number;
  openMs: number;
  rssBeforeKb: number;
  rssAfterKb: number;
  /** (after - before) / opened, in bytes. */
  bytesPerSocket: number;
  fdsBefore: number;
  fdsAfter: number;
  /** Over the CPU window: the server's CPU time, and that as a share of one core. */
  cpuMs: number;
  cpuPercent: number;
  /** At the end of the CPU window, as the client saw them. */
  stillOpen: number;
  closedByServer: number;
  /** Closes the client did not ask for, by code and reason. */
  closeCodes: Record<string, number>;
}

export interface EchoRound {
  round: number;
  bare: number;
  template: number;
  ratio: number;
  /** Echoes per second of the server's own CPU time. */
  barePerCpuS: number;
  templatePerCpuS: number;
  /** Cores the two servers and the two clients used in the round (CPU time / wall time). */
  serverCores: [number, number];
  clientCores: [number, number];
}

export interface WebSocketRow {
  runtime: Runtime;
  engines: Record<WsKind, string>;
  held: HeldRow[];
  cpuWindowS: number;
  loadAverage: { held: number; echo: number };
  echo: EchoRound[];
  echoErrors: string[];
}

/** Writes a command line to a client's stdin. */
async function tell(client: ClientProcess, line: string): Promise<void> {
  const stdin = client.proc.stdin as FileSink;
  stdin.write(`${line}\n`);
  await stdin.flush();
}

const wsUrl = (server: Server, kind: WsKind) => `${server.url.replace(/^http/, "ws")}${kind === "ws-template" ? "/ws" : "/"}`;

function start(runtime: Runtime, kind: WsKind, env: Record<string, string>, nofile?: number): Promise<Server> {
  return startCommand(runtime, kind, WS_COMMANDS[runtime][kind], env, nofile);
}

/** Step 1: memory per held socket, and the CPU time of servers holding them. */
async function held(
  runtime: Runtime,
  limit: number,
  round: number,
): Promise<{ rows: HeldRow[]; engines: Partial<Record<WsKind, string>>; load: number }> {
  const servers: Array<{ spec: (typeof HELD)[number]; server: Server; client?: ClientProcess; row?: Partial<HeldRow> }> = [];
  try {
    for (const spec of HELD) servers.push({ spec, server: await start(runtime, spec.kind, spec.env, limit) });
    await Bun.sleep(500);
    // Each server in turn, starting with a different one each round: its baseline, its sockets, its settle.
    for (const entry of rotated(servers, round)) {
      const { server, spec } = entry;
      const rssBeforeKb = rss(server.pid) / 1_024;
      const fdsBefore = fdCount(server.pid);
      const client = new ClientProcess(
        wsClientCommand(limit, ["hold", wsUrl(server, spec.kind), WS_CONNECTIONS, WS_BATCH]),
        process.env,
        "pipe",
      );
      entry.client = client;
      const ready = await client.waitFor("ready", 180_000);
      await Bun.sleep(SETTLE_MS);
      const rssAfterKb = rss(server.pid) / 1_024;
      // What the server holds when it is measured: a socket it closed since it opened holds nothing.
      await tell(client, "count");
      const opened = Number((await waitForNth(client, "count", 1, 10_000)).open);
      const bytesPerSocket = ((rssAfterKb - rssBeforeKb) * 1_024) / Math.max(1, opened);
      entry.row = {
        name: spec.name,
        engine: server.engine,
        wanted: WS_CONNECTIONS,
        opened,
        failed: WS_CONNECTIONS - opened,
        openMs: Number(ready.openMs),
        rssBeforeKb,
        rssAfterKb,
        bytesPerSocket,
        fdsBefore,
        fdsAfter: fdCount(server.pid),
      };
      log(
        `  ${runtime} ${spec.name.padEnd(17)} ${opened} open (${ready.failed} failed, ${
          Number(ready.opened) - opened
        } closed since, ${ready.openMs} ms); RSS ${fmt(rssBeforeKb / 1_024, 1)} -> ${fmt(rssAfterKb / 1_024, 1)} MiB, ${
          fmt(bytesPerSocket)
        } B/socket`,
      );
    }
    // Every socket held: the CPU each server spends over the window.
    const load = loadAverage();
    const before = servers.map(({ server }) => cpuMs(server.pid));
    const windowStart = performance.now();
    await Bun.sleep(WS_PING_CPU_S * 1_000);
    const elapsedMs = performance.now() - windowStart;
    const used = servers.map(({ server }, i) => cpuMs(server.pid) - before[i]!);
    const rows: HeldRow[] = [];
    for (const [i, entry] of servers.entries()) {
      await tell(entry.client!, "count");
      const count = await waitForNth(entry.client!, "count", 2, 10_000);
      rows.push({
        ...(entry.row as Omit<HeldRow, "cpuMs" | "cpuPercent" | "stillOpen" | "closedByServer" | "closeCodes">),
        cpuMs: used[i]!,
        cpuPercent: (used[i]! / elapsedMs) * 100,
        stillOpen: Number(count.open),
        closedByServer: Number(count.closedByServer),
        closeCodes: count.closeCodes as Record<string, number>,
      });
    }
    for (const row of rows) {
      log(
        `  ${runtime} ${row.name.padEnd(17)} CPU ${fmt(row.cpuMs)} ms over ${fmt(elapsedMs / 1_000, 1)} s (${
          fmt(row.cpuPercent, 3)
        }% of a core); still open ${row.stillOpen}, closed by the server ${row.closedByServer} ${JSON.stringify(row.closeCodes)}`,
      );
    }
    const engines = Object.fromEntries(servers.map(({ spec, server }) => [spec.kind, server.engine]));
    return { rows, engines, load };
  } finally {
    for (const { client } of servers) if (client) await client.stop();
    for (const { server } of servers) await server.stop();
  }
}

/** The `n`th event named `name` (1-based) from `client`. */
async function waitForNth(client: ClientProcess, name: string, n: number, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = client.events.filter((e) => e.event === name);
    if (found.length >= n) return found[n - 1]!;
    if (Date.now() > deadline) throw new Error(`no "${name}" #${n} from ${client.name} within ${timeoutMs} ms`);
    await Bun.sleep(20);
  }
}

/** One co-scheduled echo round: both clients open their sockets, start together, run `seconds`. */
async function echoRound(servers: Record<WsKind, Server>, seconds: number): Promise<Omit<EchoRound, "round">> {
  const kinds: WsKind[] = ["ws-bare", "ws-template"];
  const clients = kinds.map((kind) =>
    new ClientProcess(
      wsClientCommand(undefined, ["echo", wsUrl(servers[kind], kind), WS_CLIENTS, seconds, WS_MESSAGE_BYTES]),
      process.env,
      "pipe",
    )
  );
  try {
    await Promise.all(clients.map((c) => c.waitFor("ready", 30_000)));
    const serverCpu = kinds.map((kind) => cpuMs(servers[kind].pid));
    const started = performance.now();
    await Promise.all(clients.map((c) => tell(c, "go")));
    const done = await Promise.all(clients.map((c) => c.waitFor("done", (seconds + 30) * 1_000)));
    // The clients print `done` as they stop; both ran the same `seconds` from the same `go`.
    const wallMs = performance.now() - started;
    const usedServer = kinds.map((kind, i) => cpuMs(servers[kind].pid) - serverCpu[i]!);
    // The clients' own CPU over their loop, as each measured it (they exit right after `done`).
    const usedClient = done.map((d) => Number(d.cpuMs));
    for (const [i, d] of done.entries()) {
      if (Number(d.wrong) > 0 || Number(d.closedByServer) > 0 || Number(d.clients) !== WS_CLIENTS) {
        throw new Error(
          `${kinds[i]}: ${d.clients} clients, ${d.wrong} wrong echoes, ${d.closedByServer} closed by the server ${
            JSON.stringify(d.closeCodes)
          }`,
        );
      }
    }
    const rate = done.map((d) => Number(d.echoes) / (Number(d.elapsedMs) / 1_000));
    return {
      bare: rate[0]!,
      template: rate[1]!,
      ratio: rate[1]! / rate[0]!,
      barePerCpuS: Number(done[0]!.echoes) / (usedServer[0]! / 1_000),
      templatePerCpuS: Number(done[1]!.echoes) / (usedServer[1]! / 1_000),
      serverCores: [usedServer[0]! / wallMs, usedServer[1]! / wallMs],
      clientCores: [usedClient[0]! / wallMs, usedClient[1]! / wallMs],
    };
  } finally {
    for (const c of clients) await c.stop();
  }
}

/** Step 2: echo throughput, co-scheduled. */
async function echo(runtime: Runtime): Promise<{ rounds: EchoRound[]; errors: string[]; load: number; engines: Record<WsKind, string> }> {
  const bare = await start(runtime, "ws-bare", {});
  let template: Server;
  try {
    template = await start(runtime, "ws-template", {});
  } catch (error) {
    await bare.stop();
    throw error;
  }
  const servers = { "ws-bare": bare, "ws-template": template };
  const rounds: EchoRound[] = [];
  const errors: string[] = [];
  try {
    const load = loadAverage();
    // Warm-up: both JITs settle before anything is counted.
    await echoRound(servers, Math.min(2, WS_DURATION_S));
    for (let round = 1; round <= WS_ROUNDS; round++) {
      try {
        const r = { round, ...(await echoRound(servers, WS_DURATION_S)) };
        rounds.push(r);
        log(
          `  ${runtime} echo round ${round}: bare ${fmt(r.bare)} template ${fmt(r.template)} msg/s, template/bare ${
            r.ratio.toFixed(3)
          }; per CPU-s ${fmt(r.barePerCpuS)} / ${fmt(r.templatePerCpuS)}; server cores ${
            r.serverCores.map((x) => x.toFixed(2)).join("/")
          }, client cores ${r.clientCores.map((x) => x.toFixed(2)).join("/")}`,
        );
      } catch (error) {
        errors.push(`echo round ${round}: ${(error as Error).message}`);
        log(`  ${runtime} echo round ${round}: ${(error as Error).message}`);
      }
    }
    return { rounds, errors, load, engines: { "ws-bare": bare.engine, "ws-template": template.engine } };
  } finally {
    await bare.stop();
    await template.stop();
  }
}

/** The WebSocket phase on `runtime`: held sockets (memory, ping CPU), then co-scheduled echo. */
export async function websocketPhase(runtime: Runtime, limit: number, round = 1): Promise<WebSocketRow> {
  log(`  ${runtime}: ${WS_CONNECTIONS} held WebSockets per server, CPU over ${WS_PING_CPU_S} s`);
  const h = await held(runtime, limit, round);
  log(`  ${runtime}: echo, ${WS_CLIENTS} clients per server, co-scheduled, ${WS_ROUNDS} rounds of ${WS_DURATION_S} s`);
  const e = await echo(runtime);
  return {
    runtime,
    engines: { ...e.engines, ...h.engines },
    held: h.rows,
    cpuWindowS: WS_PING_CPU_S,
    loadAverage: { held: h.load, echo: e.load },
    echo: e.rounds,
    echoErrors: e.errors,
  };
}

/** A one-line summary for the log. */
export function describeWebSocket(row: WebSocketRow): string {
  const s = summary(row);
  return `memory ${fmt(s.templateBytes)} vs ${fmt(s.bareBytes)} B/socket (${ratio(s.memoryRatio)}); echo template/bare ${
    s.echoMedian.toFixed(3)
  } (${s.echoMin.toFixed(3)}-${s.echoMax.toFixed(3)}); CPU with pings ${fmt(s.pingsPercent, 3)}%, without ${
    fmt(s.noPingsPercent, 3)
  }% of a core`;
}

function summary(row: WebSocketRow) {
  const get = (name: HeldName) => row.held.find((x) => x.name === name);
  const ratios = row.echo.map((r) => r.ratio);
  const perCpu = row.echo.map((r) => r.templatePerCpuS / r.barePerCpuS);
  const templateBytes = get("template")?.bytesPerSocket ?? Number.NaN;
  const bareBytes = get("bare")?.bytesPerSocket ?? Number.NaN;
  const pingsPercent = get("template")?.cpuPercent ?? Number.NaN;
  const noPingsPercent = get("template-no-pings")?.cpuPercent ?? Number.NaN;
  return {
    templateBytes,
    bareBytes,
    memoryRatio: templateBytes / bareBytes,
    echoMedian: median(ratios),
    echoMin: Math.min(...ratios),
    echoMax: Math.max(...ratios),
    perCpuMedian: median(perCpu),
    pingsPercent,
    noPingsPercent,
    barePercent: get("bare")?.cpuPercent ?? Number.NaN,
  };
}

/** The report's section: every server and round, then the ratios against the targets. */
export function websocketSection(rows: WebSocketRow[]): string[] {
  const out: string[] = [];
  out.push(`## WebSockets`, "");
  out.push(
    `The template (the example app's \`GET /ws\` echo, through the entry, each runtime's default engine) beside the runtime's bare WebSocket echo server: \`ws\` on node:http, Bun.serve's \`websocket\`, Deno.serve with \`Deno.upgradeWebSocket\` (bench/fixtures/ws_raw.*.ts). Servers on CPU 0, clients (bench/_ws_client.ts, Bun's WebSocket) on CPU 1. ` +
      `**Held**: the bare server, the template at the default WEBSOCKET_PING_INTERVAL (30 s) and the template with WEBSOCKET_PING_INTERVAL=0 run at once; each in turn gets ${
        fmt(WS_CONNECTIONS)
      } idle WebSockets (${WS_BATCH} opened at a time), its RSS read before and ${
        SETTLE_MS / 1_000
      } s after; then, all sockets still held, each server's CPU time (user + system, /proc) over ${
        rows[0]?.cpuWindowS ?? WS_PING_CPU_S
      } s. ` +
      `**Echo**: the bare server and the template on CPU 0 at the same time, each loaded by its own client of ${WS_CLIENTS} sockets (a ${WS_MESSAGE_BYTES}-byte text message, await its echo, send the next), one warm-up round then ${WS_ROUNDS} rounds of ${WS_DURATION_S} s; the core is split between the two servers, so the ratio of their rates is the inverse ratio of their CPU per message.`,
    "",
  );
  out.push(
    `| runtime | server | engine | held when measured | opened in | RSS before -> after, MiB | per socket | CPU over the window | still open at its end |`,
    `|---|---|---|---:|---:|---|---:|---:|---:|`,
  );
  for (const row of rows) {
    for (const h of row.held) {
      out.push(
        `| ${row.runtime} | ${HELD_LABEL[h.name]} | ${h.engine} | ${fmt(h.opened)}${h.failed ? ` (${h.failed} failed)` : ""} | ${
          fmt(h.openMs)
        } ms | ${fmt(h.rssBeforeKb / 1_024, 1)} -> ${fmt(h.rssAfterKb / 1_024, 1)} | ${fmt(h.bytesPerSocket / 1_024, 2)} KB | ${
          fmt(h.cpuMs)
        } ms (${fmt(h.cpuPercent, 3)}% of a core) | ${fmt(h.stillOpen)} |`,
      );
    }
  }
  out.push(
    "",
    `| runtime | echo round | bare msg/s | template msg/s | template / bare | per CPU-second, bare / template | server cores | client cores |`,
    `|---|---:|---:|---:|---:|---|---|---|`,
  );
  for (const row of rows) {
    for (const r of row.echo) {
      out.push(
        `| ${row.runtime} | ${r.round} | ${fmt(r.bare)} | ${fmt(r.template)} | ${r.ratio.toFixed(3)} | ${fmt(r.barePerCpuS)} / ${
          fmt(r.templatePerCpuS)
        } | ${r.serverCores.map((x) => x.toFixed(2)).join(" / ")} | ${r.clientCores.map((x) => x.toFixed(2)).join(" / ")} |`,
      );
    }
  }
  out.push(
    "",
    `| runtime | memory per idle WebSocket, template vs bare | ratio (target <= ${TARGETS.wsMemoryVsBare}x) | echo msg/s, template / bare: median (range) | per CPU-second | target >= ${TARGETS.wsEchoVsBare}x | CPU holding ${
      fmt(WS_CONNECTIONS)
    }: pings at 30 s / pings off / bare | cost of the pings | load average (held, echo) |`,
    `|---|---|---:|---|---:|---|---|---:|---|`,
  );
  for (const row of rows) {
    const s = summary(row);
    out.push(
      `| ${row.runtime} | ${fmt(s.templateBytes / 1_024, 2)} vs ${fmt(s.bareBytes / 1_024, 2)} KB | ${ratio(s.memoryRatio)} ${
        verdict(Number.isFinite(s.memoryRatio) ? s.memoryRatio <= TARGETS.wsMemoryVsBare : null)
      } | ${s.echoMedian.toFixed(3)} (${s.echoMin.toFixed(3)}-${s.echoMax.toFixed(3)}) | ${s.perCpuMedian.toFixed(3)} | ${
        verdict(Number.isFinite(s.echoMedian) ? s.echoMedian >= TARGETS.wsEchoVsBare : null)
      } | ${fmt(s.pingsPercent, 3)}% / ${fmt(s.noPingsPercent, 3)}% / ${fmt(s.barePercent, 3)}% of a core | ${
        fmt(s.pingsPercent - s.noPingsPercent, 3)
      }% of a core | ${fmt(row.loadAverage.held, 2)}, ${fmt(row.loadAverage.echo, 2)} |`,
    );
  }
  const errors = rows.flatMap((row) => row.echoErrors.map((e) => `${row.runtime} ${e}`));
  if (errors.length > 0) out.push("", ...errors.map((e) => `- ${e}`));
  out.push("");
  return out;
}
