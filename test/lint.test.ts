import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { copyProject, runIn } from "../harness/scratch.ts";

/**
 * `npm run lint` on a file that is not formatted says which file and what fixes it, rather than
 * deno's bare "Found 1 not formatted file" followed by an empty Rust backtrace. Run in a scratch
 * copy of the project (its files as git lists them, node_modules linked) with one such file added.
 */
const UNFORMATTED = "export const  messy = {a:1,\n b:2}\n";
const FORMATTED = "export const tidy = { a: 1, b: 2 };\n";

let scratch = "";

/** Runs `cmd` in the scratch copy with RUST_BACKTRACE=1, as some images set it; output through a file, read once it exits. */
function run(cmd: string[], timeoutMs: number): { code: number | null; output: string } {
  return runIn(scratch, cmd, timeoutMs, { ...process.env, RUST_BACKTRACE: "1" });
}

beforeAll(() => {
  scratch = copyProject({ prefix: "hono-policy-lint-" });
  writeFileSync(join(scratch, "src/messy.ts"), UNFORMATTED);
  writeFileSync(join(scratch, "src/tidy.ts"), FORMATTED);
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("npm run lint", () => {
  test("names the file that is not formatted and says npm run format fixes it", () => {
    const { code, output } = run(["npm", "run", "lint", "--silent"], 60_000);
    expect(code).not.toBe(0);
    expect(output).toContain("Not formatted: src/messy.ts\n");
    expect(output).toContain("Run npm run format to fix");
    expect(output).not.toContain("src/tidy.ts");
    expect(output).not.toContain("Stack backtrace");
  }, 90_000);

  test("the format check prints nothing for a formatted file", () => {
    expect(run(["node_modules/.bin/node", "harness/fmt_check.ts", "src/tidy.ts"], 30_000)).toEqual({ code: 0, output: "" });
    const messy = run(["node_modules/.bin/node", "harness/fmt_check.ts", "src/messy.ts", "src/tidy.ts"], 30_000);
    expect(messy.code).toBe(1);
    expect(messy.output).toBe("Not formatted: src/messy.ts\nRun npm run format to fix (deno fmt rewrites them in place)\n");
  }, 60_000);
});
