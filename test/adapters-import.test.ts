import { expect, test } from "bun:test";
import { spawnSync } from "bun";
import { ROOT } from "../harness/process.ts";
import { BUN, DENO, NODE } from "../harness/servers.ts";

/**
 * Importing an adapter only defines: no environment read, no listen, no signal handler, no exit.
 * With a configuration that the entry points would refuse (exit 2) in the environment, a process
 * that imports each adapter must print what it was asked to print and exit 0 on its own (a
 * listening socket or a timer that is not unref'd would keep it alive until the timeout).
 */
const PROBE = `const m = await import("./adapters/RUNTIME.ts");
console.log(JSON.stringify({ serve: typeof m.serve, sigterm: process.listenerCount("SIGTERM"), sigint: process.listenerCount("SIGINT") }));`;

const COMMANDS = {
  node: (code: string) => [NODE, "--input-type=module", "-e", code],
  bun: (code: string) => [BUN, "-e", code],
  deno: (code: string) => [DENO, "eval", "--ext=ts", `import process from "node:process";\n${code}`],
};

for (const [runtime, command] of Object.entries(COMMANDS)) {
  test(`importing adapters/${runtime}.ts starts nothing: no listen, no signal handler, no exit, no output`, () => {
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
