import { describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, ServerProcess } from "../harness/process.ts";
import { using } from "../harness/wait.ts";

/**
 * A configuration the engine cannot honour is refused in the words of whoever gave it: an entry
 * (`npm start` and the like) names its environment variables, in the lines below, the ones it
 * has printed since these refusals were written; `serve()` names the options its caller passed.
 * The same refusal, said twice.
 */

const BIN = `${ROOT}node_modules/.bin/`;
const ENTRY = {
  node: [`${BIN}node`, "src/main/node.ts"],
  bun: [`${BIN}bun`, "src/main/bun.ts"],
  deno: [`${BIN}deno`, "run", "--allow-all", "src/main/deno.ts"],
} as const;
type Runtime = keyof typeof ENTRY;

/** Runs `cmd` in the project with `vars`; its exit code and its stderr lines. */
function run(cmd: readonly string[], vars: Record<string, string>): { code: number | null; lines: string[] } {
  const { PATH, HOME } = process.env;
  const result = spawnSync([...cmd], {
    cwd: ROOT,
    env: { PATH: `${BIN}:${PATH}`, HOME, NO_COLOR: "1", PORT: "0", HOST: "127.0.0.1", ...vars },
    stdin: "ignore",
    timeout: 20_000,
  });
  return { code: result.exitCode, lines: result.stderr.toString().split("\n").filter((line) => line !== "") };
}

/** `fd` stands for the numbers that depend on the process: its descriptor limit, those in use, the room left. */
const FD =
  /^MAX_CONNECTIONS "1000000" is more than this process can open: its file-descriptor limit is (\d+) \(ulimit -n\), (\d+) are in use and 32 are kept in reserve; use at most (\d+), or raise the limit$/;

const ENTRY_REFUSALS: Array<{ runtime: Runtime; vars: Record<string, string>; lines: Array<string | RegExp>; each?: boolean }> = [
  {
    runtime: "bun",
    vars: { IDLE_TIMEOUT: "5m", BUN_ENGINE: "bun-serve" },
    lines: ['IDLE_TIMEOUT "5m" is longer than Bun.serve can keep a connection (252s): use BUN_ENGINE=auto or bun-node-http'],
  },
  {
    runtime: "bun",
    vars: { IDLE_TIMEOUT: "300s", BUN_ENGINE: "bun-serve" },
    lines: ['IDLE_TIMEOUT "5m" is longer than Bun.serve can keep a connection (252s): use BUN_ENGINE=auto or bun-node-http'],
  },
  {
    runtime: "bun",
    vars: { MAX_CONNECTIONS: "10", BUN_ENGINE: "bun-serve" },
    lines: [
      'MAX_CONNECTIONS "10" cannot be enforced by Bun.serve, which does not expose its connections: use BUN_ENGINE=auto or bun-node-http',
    ],
  },
  {
    runtime: "bun",
    // Each worker refuses it; the supervisor exits with the first, and one more may have said it by then.
    vars: { WORKERS: "2", BUN_ENGINE: "bun-node-http" },
    each: true,
    lines: [
      "WORKERS above 1 needs the workers to share the port, which Bun's node:http cannot: use BUN_ENGINE=bun-serve (IDLE_TIMEOUT at most 252s, no MAX_CONNECTIONS) or WORKERS=1",
    ],
  },
  {
    runtime: "deno",
    vars: { IDLE_TIMEOUT: "1s", DENO_ENGINE: "deno-node-http" },
    lines: [
      'IDLE_TIMEOUT "1000ms" is too short for Node, which always waits 1000ms past keepAliveTimeout: use more than 1s, or 0 to disable',
    ],
  },
  {
    runtime: "deno",
    vars: { IDLE_TIMEOUT: "500ms", DENO_ENGINE: "deno-node-http" },
    lines: [
      'IDLE_TIMEOUT "500ms" is too short for Node, which always waits 1000ms past keepAliveTimeout: use more than 1s, or 0 to disable',
    ],
  },
  { runtime: "bun", vars: { BUN_ENGINE: "foo" }, lines: ['BUN_ENGINE "foo" is not an engine: use auto, bun-serve or bun-node-http'] },
  {
    runtime: "deno",
    vars: { DENO_ENGINE: "foo" },
    lines: ['DENO_ENGINE "foo" is not an engine: use auto, deno-per-connection or deno-node-http'],
  },
  { runtime: "node", vars: { NODE_ENGINE: "foo" }, lines: ['NODE_ENGINE "foo" is not an engine: use auto or node-http'] },
  { runtime: "node", vars: { MAX_CONNECTIONS: "1000000" }, lines: [FD] },
  {
    runtime: "bun",
    vars: { MAX_CONNECTIONS: "1000000", IDLE_TIMEOUT: "5m", BUN_ENGINE: "bun-serve" },
    lines: [
      FD,
      'IDLE_TIMEOUT "5m" is longer than Bun.serve can keep a connection (252s): use BUN_ENGINE=auto or bun-node-http',
    ],
  },
];

/** Each line equal to its string, or matching its pattern. */
function expectLines(actual: string[], expected: Array<string | RegExp>): void {
  expect(actual.length).toBe(expected.length);
  expected.forEach((line, i) => (typeof line === "string" ? expect(actual[i]).toBe(line) : expect(actual[i]).toMatch(line)));
}

describe("an entry refuses what the engine cannot honour in its environment variables: exit 2, one line each", () => {
  for (const { runtime, vars, lines, each } of ENTRY_REFUSALS) {
    const shown = Object.entries(vars).map(([name, value]) => `${name}=${value}`).join(" ");
    test(`${shown} on ${runtime}`, () => {
      const result = run(ENTRY[runtime], vars);
      expectLines(each ? [...new Set(result.lines)] : result.lines, lines);
      expect(result.code).toBe(2);
    }, 25_000);
  }
});

/** The same refusals from `serve()` itself, in the options its caller passed. */
const FD_OPTION =
  /^maxConnections 1000000 is more than this process can open: its file-descriptor limit is (\d+) \(ulimit -n\), (\d+) are in use and 32 are kept in reserve; use at most (\d+), or raise the limit$/;

const SERVE_REFUSALS: Array<{ runtime: Runtime; options: Record<string, unknown>; lines: Array<string | RegExp> }> = [
  {
    runtime: "bun",
    options: { idleTimeoutMs: 300_000, engine: "bun-serve" },
    lines: ['idleTimeoutMs 300000 is longer than Bun.serve can keep a connection (252s): use engine "auto" or "bun-node-http"'],
  },
  {
    runtime: "bun",
    options: { maxConnections: 10, engine: "bun-serve" },
    lines: [
      'maxConnections 10 cannot be enforced by Bun.serve, which does not expose its connections: use engine "auto" or "bun-node-http"',
    ],
  },
  {
    runtime: "bun",
    options: { reusePort: true, engine: "bun-node-http" },
    lines: [
      `reusePort true needs the workers to share the port, which Bun's node:http cannot: use engine "bun-serve" (idleTimeoutMs at most 252000, no maxConnections) or reusePort false`,
    ],
  },
  {
    runtime: "deno",
    options: { idleTimeoutMs: 1_000, engine: "deno-node-http" },
    lines: [
      "idleTimeoutMs 1000 is too short for Node, which always waits 1000ms past keepAliveTimeout: use more than 1000, or 0 to disable",
    ],
  },
  { runtime: "bun", options: { engine: "foo" }, lines: ['engine "foo" is not an engine: use "auto", "bun-serve" or "bun-node-http"'] },
  {
    runtime: "deno",
    options: { engine: "foo" },
    lines: ['engine "foo" is not an engine: use "auto", "deno-per-connection" or "deno-node-http"'],
  },
  { runtime: "node", options: { engine: "foo" }, lines: ['engine "foo" is not an engine: use "auto" or "node-http"'] },
  { runtime: "node", options: { maxConnections: 1_000_000 }, lines: [FD_OPTION] },
  {
    runtime: "bun",
    options: { maxConnections: 1_000_000, idleTimeoutMs: 300_000, engine: "bun-serve" },
    lines: [FD_OPTION, 'idleTimeoutMs 300000 is longer than Bun.serve can keep a connection (252s): use engine "auto" or "bun-node-http"'],
  },
];

/** A one-off entry that calls serve() with `options` and prints what the ConfigError says, one line each, on stderr. */
function serveScript(runtime: Runtime, options: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), "hono-policy-refusals-"));
  const file = join(dir, runtime === "deno" ? "entry.deno.ts" : "entry.ts");
  writeFileSync(
    file,
    `import { serve } from ${JSON.stringify(`${ROOT}adapters/${runtime}/mod.ts`)};
try {
  const server = await serve(() => new Response("ok"), ${JSON.stringify({ port: 0, host: "127.0.0.1", ...options })});
  await server.shutdown();
  console.error("listened");
} catch (error) {
  for (const line of (error as { problems?: string[] }).problems ?? [String(error)]) console.error(line);
  console.log(JSON.stringify({ name: (error as Error).name, message: (error as Error).message }));
}
`,
  );
  return file;
}

describe("serve() refuses what the engine cannot honour in the options it was given: a ConfigError, one problem each", () => {
  for (const { runtime, options, lines } of SERVE_REFUSALS) {
    test(`${JSON.stringify(options)} on ${runtime}`, () => {
      const file = serveScript(runtime, options);
      try {
        const [bin, ...rest] = ENTRY[runtime];
        const config = runtime === "deno" ? ["--config", `${ROOT}deno.json`] : [];
        const result = run([bin, ...rest.slice(0, -1), ...config, file], {});
        expectLines(result.lines, lines);
        expect(result.code).toBe(0);
      } finally {
        rmSync(join(file, ".."), { recursive: true, force: true });
      }
    }, 25_000);
  }
});

describe("where a connection limit comes from, in the words of whoever set it", () => {
  const listening = (cmd: string[], vars: Record<string, string>) =>
    using(async (defer) => {
      const server = new ServerProcess(cmd, { ...process.env, PORT: "0", HOST: "127.0.0.1", ...vars } as Record<string, string>);
      defer(() => server.kill());
      return await server.waitForEvent("listening", 15_000);
    });

  test("an entry's listening event says MAX_CONNECTIONS, as docs/observability.md has it", async () => {
    expect(await listening([...ENTRY.node], { MAX_CONNECTIONS: "20" })).toMatchObject({
      maxConnections: 20,
      maxConnectionsFrom: "MAX_CONNECTIONS",
    });
  }, 20_000);

  test("serve()'s says maxConnections, the option its caller passed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hono-policy-limit-"));
    try {
      const file = join(dir, "entry.ts");
      writeFileSync(
        file,
        `import { serve } from ${JSON.stringify(`${ROOT}adapters/node/mod.ts`)};
const server = await serve(() => new Response("ok"), { port: 0, host: "127.0.0.1", maxConnections: 20 });
process.on("SIGTERM", () => void server.shutdown().then(() => process.exit(0)));
`,
      );
      expect(await listening([ENTRY.node[0], file], {})).toMatchObject({ maxConnections: 20, maxConnectionsFrom: "maxConnections" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);
});
