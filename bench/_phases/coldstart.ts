/**
 * Cold start: from spawning a server to reading its `listening` line, for the template run
 * directly, the template through its npm script, and bare Hono, side by side in rounds.
 */
import { basename } from "node:path";
import type { Runtime } from "../../src/policy/types.ts";
import { COLDSTART_ROUNDS } from "../_config.ts";
import { fmt, log } from "../_format.ts";
import { COMMANDS, npmCommand, type Server, startNpmServer, startServer } from "../_servers.ts";
import { median, rotated } from "../_stats.ts";

/** Bare Hono run directly, the template run directly, the template through its npm script. */
export type ColdStartKind = "hono" | "direct" | "npm";
export const COLDSTART_KINDS: ColdStartKind[] = ["hono", "direct", "npm"];
export const COLDSTART_LABEL: Record<ColdStartKind, string> = {
  hono: "bare Hono",
  direct: "template, direct",
  npm: "template, through npm",
};

export interface ColdStartRow {
  runtime: Runtime;
  kind: ColdStartKind;
  engine: string;
  /** The command, as a user would type it. */
  command: string;
  /** From spawn to the `listening` line, in ms, one per round. */
  rounds: number[];
  medianMs: number;
}

function start(runtime: Runtime, kind: ColdStartKind): Promise<Server> {
  return kind === "npm" ? startNpmServer(runtime) : startServer(runtime, kind === "direct" ? "template" : "hono");
}

/** `kind`'s command on `runtime`, with the binary named rather than its path. */
function commandLine(runtime: Runtime, kind: ColdStartKind): string {
  const [binary, ...args] = kind === "npm" ? npmCommand(runtime) : COMMANDS[runtime][kind === "direct" ? "template" : "hono"];
  return [basename(binary!), ...args].join(" ");
}

export async function coldStart(runtime: Runtime): Promise<ColdStartRow[]> {
  const rounds = new Map<ColdStartKind, number[]>(COLDSTART_KINDS.map((k) => [k, []]));
  const engines = new Map<ColdStartKind, string>();
  // One start of each that is not recorded, so that every recorded one finds the same caches
  // (the OS's page cache, Bun's and Deno's transpiler caches, npm's).
  const warmUp: string[] = [];
  for (const kind of COLDSTART_KINDS) {
    const server = await start(runtime, kind);
    await server.stop();
    warmUp.push(`${kind} ${fmt(server.startMs)} ms`);
  }
  log(`  ${runtime} warm-up, not recorded: ${warmUp.join(", ")}`);
  for (let round = 1; round <= COLDSTART_ROUNDS; round++) {
    // Each round starts with a different one, so none always follows the same one.
    for (const kind of rotated(COLDSTART_KINDS, round)) {
      const server = await start(runtime, kind);
      try {
        engines.set(kind, server.engine);
        rounds.get(kind)!.push(server.startMs);
        log(`  ${runtime} round ${round} ${kind.padEnd(8)} ${fmt(server.startMs, 1).padStart(7)} ms`);
      } finally {
        await server.stop();
      }
    }
  }
  return COLDSTART_KINDS.map((kind) => ({
    runtime,
    kind,
    engine: engines.get(kind) ?? "",
    command: commandLine(runtime, kind),
    rounds: rounds.get(kind)!,
    medianMs: median(rounds.get(kind)!),
  }));
}
