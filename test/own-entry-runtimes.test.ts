import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fetchOnce } from "../harness/http.ts";
import { ROOT, ServerProcess } from "../harness/process.ts";
import { using } from "../harness/wait.ts";
import type { Runtime } from "../src/policy/types.ts";
import { copyProject, runIn } from "../harness/scratch.ts";

/**
 * An own entry is a first-class path on every runtime: a scratch copy of the project gets the
 * README's own-entry example in src/ once per runtime, named as the README says (a Deno entry ends
 * in `.deno.ts`), each using its runtime's own global so that only that runtime's types accept it.
 * There, `npm run typecheck` passes with no list of names to update, fails on a type error in the
 * Deno entry, and `npm run node|bun|deno -- <entry>` serves each one on the pinned runtime.
 */
const EXAMPLE = readFileSync(`${ROOT}docs/examples/own-entry.ts`, "utf8");

const ENTRIES: Record<Runtime, { file: string; global: string }> = {
  node: { file: "src/server.ts", global: "process.versions.node" },
  bun: { file: "src/server.bun.ts", global: "Bun.version" },
  deno: { file: "src/server.deno.ts", global: "Deno.version.deno" },
};

/** The example moved to src/, serving with `runtime`'s adapter. */
function entry(runtime: Runtime): string {
  const source = EXAMPLE.replace(`from "../../adapters/node/mod.ts"`, `from "../adapters/${runtime}/mod.ts"`);
  expect(source).toContain(`from "../adapters/${runtime}/mod.ts"`);
  return `${source}\nexport const runtimeVersion: string = ${ENTRIES[runtime].global};\n`;
}

let scratch = "";

/** Runs `cmd` in the scratch project; its output goes to a file (not a pipe), read once it exits. */
function run(cmd: string[], timeoutMs: number): { code: number | null; output: string } {
  return runIn(scratch, cmd, timeoutMs);
}

/** `npm run <script> -- <file>` in the scratch project, on 127.0.0.1, port 0. */
function npmRun(script: string, file: string): ServerProcess {
  return new ServerProcess(["sh", "-c", `cd ${JSON.stringify(scratch)} && exec npm run --silent ${script} -- ${file}`], {
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    NO_COLOR: "1",
  } as Record<string, string>);
}

beforeAll(() => {
  scratch = copyProject({ prefix: "hono-policy-entries-" });
  for (const runtime of Object.keys(ENTRIES) as Runtime[]) writeFileSync(join(scratch, ENTRIES[runtime].file), entry(runtime));
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("an own entry per runtime in src/", () => {
  test("npm run typecheck checks each with its runtime's types, and fails on a type error in the Deno entry", () => {
    const passing = run(["npm", "run", "typecheck", "--silent"], 120_000);
    expect(`typecheck exited ${passing.code}\n${passing.output}`).toBe(`typecheck exited 0\n${passing.output}`);

    const deno = join(scratch, ENTRIES.deno.file);
    const source = readFileSync(deno, "utf8");
    writeFileSync(deno, `${source}export const wrong: number = Deno.version.deno;\n`);
    try {
      const failing = run(["npm", "run", "typecheck", "--silent"], 120_000);
      expect(failing.code).not.toBe(0);
      expect(failing.output).toMatch(/TS2322[\s\S]*src\/server\.deno\.ts/);
    } finally {
      writeFileSync(deno, source);
    }
  }, 250_000);

  for (const runtime of Object.keys(ENTRIES) as Runtime[]) {
    const { file } = ENTRIES[runtime];
    test(`npm run ${runtime} -- ${file} serves it on the pinned ${runtime}, and a SIGTERM to npm reaches it`, () =>
      using(async (defer) => {
        const server = npmRun(runtime, file);
        defer(() => server.kill());
        const listening = await server.waitForEvent("listening", 20_000);
        expect(listening).toMatchObject({ runtime, idleTimeoutMs: 900_000 });
        const url = String(listening.url);
        expect(url).toStartWith("http://127.0.0.1:");
        expect(await (await fetchOnce(url)).text()).toBe("Hello from my app");
        expect(await (await fetchOnce(`${url}/users/7`)).json()).toEqual({ id: "7" });
        server.signal("SIGTERM");
        expect(await server.exitCode(10_000)).toBe(0);
        expect(server.named("shutdown_complete")).toMatchObject([{ signal: "SIGTERM", cut: 0 }]);
        expect(server.nonJsonLines).toEqual([]);
      }), 40_000);
  }

  test("an entry run on the wrong runtime exits at once, naming the adapter to import", () =>
    using(async (defer) => {
      const server = npmRun("bun", ENTRIES.node.file);
      defer(() => server.kill());
      expect(await server.exitCode(15_000)).not.toBe(0);
      expect(server.stderr).toContain("adapters/node/mod.ts is for Node; on Bun, import serve from adapters/bun/mod.ts");
      expect(server.named("listening")).toEqual([]);
    }), 30_000);
});
