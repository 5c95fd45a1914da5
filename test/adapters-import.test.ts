import { expect, test } from "bun:test";
import { spawnSync } from "bun";
import { ROOT } from "../harness/process.ts";
import { BUN, DENO, NODE } from "../harness/servers.ts";
import type { Runtime } from "../src/policy/types.ts";

/**
 * Importing an adapter only defines: no environment read, no listen, no signal handler, no exit.
 * With a configuration that the entry points would refuse (exit 2) in the environment, a process
 * that imports each adapter must print what it was asked to print and exit 0 on its own (a
 * listening socket or a timer that is not unref'd would keep it alive until the timeout).
 */
const PROBE = `const m = await import("./adapters/RUNTIME/mod.ts");
console.log(JSON.stringify({ serve: typeof m.serve, sigterm: process.listenerCount("SIGTERM"), sigint: process.listenerCount("SIGINT") }));`;

const COMMANDS = {
  node: (code: string) => [NODE, "--input-type=module", "-e", code],
  bun: (code: string) => [BUN, "-e", code],
  deno: (code: string) => [DENO, "eval", "--ext=ts", `import process from "node:process";\n${code}`],
};

for (const [runtime, command] of Object.entries(COMMANDS)) {
  test(`importing adapters/${runtime}/mod.ts starts nothing: no listen, no signal handler, no exit, no output`, () => {
    const result = spawnSync(command(PROBE.replace("RUNTIME", runtime)), {
      cwd: ROOT,
      env: { ...process.env, PORT: "http", IDLE_TIMEOUT: "15" },
      timeout: 20_000,
    });
    expect(result.stderr.toString()).toBe("");
    expect(JSON.parse(result.stdout.toString())).toEqual({ serve: "function", sigterm: 0, sigint: 0 });
    expect(result.exitCode).toBe(0);
  }, 30_000);
}

const NAMES: Record<Runtime, string> = { node: "Node", bun: "Bun", deno: "Deno" };
const RUNTIMES = Object.keys(COMMANDS) as Runtime[];

/**
 * Bun and Deno run much of Node's API, so an adapter imported on another runtime would start,
 * under the wrong name and with another engine's limits. The import throws instead, at once,
 * with one line that names the adapter to import.
 */
for (const runtime of RUNTIMES) {
  for (const adapter of RUNTIMES.filter((name) => name !== runtime)) {
    test(`importing adapters/${adapter}/mod.ts on ${NAMES[runtime]} fails at once, naming adapters/${runtime}/mod.ts`, () => {
      const result = spawnSync(COMMANDS[runtime](PROBE.replace("RUNTIME", adapter)), {
        cwd: ROOT,
        env: { ...process.env, NO_COLOR: "1" },
        timeout: 20_000,
      });
      const message = `adapters/${adapter}/mod.ts is for ${NAMES[adapter]}; on ${
        NAMES[runtime]
      }, import serve from adapters/${runtime}/mod.ts`;
      const stderr = result.stderr.toString();
      expect(stderr.split("\n").some((line) => line.endsWith(`rror: ${message}`)) ? message : stderr).toBe(message);
      expect(result.stdout.toString()).toBe("");
      expect(result.exitCode).not.toBe(0);
    }, 30_000);
  }
}
