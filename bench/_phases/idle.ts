/** Idle capacity: many keep-alive connections left idle after one request each; the server's RSS and fds. */
import type { FileSink } from "bun";
import { rss } from "../../harness/proc.ts";
import type { Runtime } from "../../src/policy/types.ts";
import { IDLE_CONNECTIONS, IDLE_TIMEOUT_MS, type IdleKind, SETTLE_MS } from "../_config.ts";
import { idleClientCommand } from "../_clients.ts";
import { ClientProcess } from "../_process.ts";
import { fdCount, fdsSettle } from "../_proc.ts";
import { COMMANDS, startServer } from "../_servers.ts";

export interface IdleRow {
  runtime: Runtime;
  kind: IdleKind;
  round: number;
  engine: string;
  connections: number;
  failed: number;
  openMs: number;
  /** Connections the server held open when it was measured (its fds above baseline). */
  heldAtMeasurement: number;
  measuredAfterLastResponseMs: number;
  rssBeforeKb: number;
  rssAfterKb: number;
  rssPerConnectionKb: number;
  fdsBefore: number;
  fdsAfter: number;
  /** Template: ms after (last response + IDLE_TIMEOUT) when the client saw the last close. */
  allClosedAfterTimeoutMs: number | null;
  stillOpen: number | null;
  /** Fds after every connection was closed (by the server's policy, or by the client for raw). */
  fdsAfterClose: number;
  fdsBackToBaseline: boolean;
  idleTimeoutEvents: number | null;
}

/** The servers the idle phase measures on `runtime`. */
export function idleKinds(runtime: Runtime): IdleKind[] {
  return COMMANDS[runtime].engine ? ["raw", "engine", "template"] : ["raw", "template"];
}

export async function idleCapacity(runtime: Runtime, kind: IdleKind, limit: number, round: number): Promise<IdleRow> {
  const env: Record<string, string> = kind === "template" ? { IDLE_TIMEOUT: `${IDLE_TIMEOUT_MS}ms` } : { BENCH_HOLD_IDLE: "1" };
  const server = await startServer(runtime, kind, env, limit);
  let client: ClientProcess | undefined;
  try {
    await Bun.sleep(500);
    const rssBeforeKb = rss(server.pid) / 1_024;
    const fdsBefore = fdCount(server.pid);
    const port = Number(new URL(server.url).port);
    const waitMs = IDLE_TIMEOUT_MS + 4_000 + 10_000;
    client = new ClientProcess(
      idleClientCommand(limit, port, IDLE_CONNECTIONS, kind === "template" ? "wait" : "hold", waitMs),
      process.env,
      "pipe",
    );
    const ready = await client.waitFor("ready", 120_000);
    // Measure once the server has settled (a GC may have run) but before the template's first
    // connection can reach IDLE_TIMEOUT: 3 s after the last response, or at once if that is too late.
    const settleUntil = Math.min(Number(ready.lastResponseAt) + SETTLE_MS, Number(ready.firstResponseAt) + IDLE_TIMEOUT_MS - 1_000);
    await Bun.sleep(Math.max(200, settleUntil - Date.now()));
    const measuredAfterLastResponseMs = Math.round(Date.now() - Number(ready.lastResponseAt));
    const rssAfterKb = rss(server.pid) / 1_024;
    const fdsAfter = fdCount(server.pid);
    const connections = Number(ready.answered);
    let allClosedAfterTimeoutMs: number | null = null;
    let stillOpen: number | null = null;
    let fdsAfterClose: number;
    if (kind !== "template") {
      const stdin = client.proc.stdin as FileSink;
      stdin.write("close\n");
      await stdin.flush();
      await client.waitFor("closed", 30_000);
      fdsAfterClose = await fdsSettle(server.pid, fdsBefore, 5_000);
    } else {
      const done = await client.waitFor("done", waitMs + 30_000);
      stillOpen = Number(done.stillOpen);
      allClosedAfterTimeoutMs = done.lastCloseAt === null ? null : Number(done.lastCloseAt) - Number(done.lastResponseAt) - IDLE_TIMEOUT_MS;
      fdsAfterClose = await fdsSettle(server.pid, fdsBefore, 5_000);
    }
    return {
      runtime,
      kind,
      round,
      engine: server.engine,
      connections,
      failed: Number(ready.failed),
      openMs: Number(ready.openMs),
      heldAtMeasurement: fdsAfter - fdsBefore,
      measuredAfterLastResponseMs,
      rssBeforeKb,
      rssAfterKb,
      rssPerConnectionKb: (rssAfterKb - rssBeforeKb) / Math.max(1, connections),
      fdsBefore,
      fdsAfter,
      allClosedAfterTimeoutMs,
      stillOpen,
      fdsAfterClose,
      fdsBackToBaseline: fdsAfterClose <= fdsBefore + 5,
      idleTimeoutEvents: kind === "template" ? server.child.named("idle_timeout").length : null,
    };
  } finally {
    if (client) await client.stop();
    await server.stop();
  }
}
