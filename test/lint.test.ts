import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { ROOT } from "../harness/process.ts";

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
  const log = join(scratch, ".run.log");
  const result = spawnSync(["sh", "-c", `exec "$@" > ${JSON.stringify(log)} 2>&1`, "sh", ...cmd], {
    cwd: scratch,
    env: { ...process.env, RUST_BACKTRACE: "1" },
    timeout: timeoutMs,
  });
  const output = existsSync(log) ? readFileSync(log, "utf8") : "";
  rmSync(log, { force: true });
  return { code: result.exitCode, output };
}

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "hono-policy-lint-"));
  const listed = spawnSync(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT });
  for (const file of listed.stdout.toString().split("\0").filter(Boolean)) {
    if (!existsSync(join(ROOT, file))) continue; // deleted in the working tree
    mkdirSync(dirname(join(scratch, file)), { recursive: true });
    copyFileSync(join(ROOT, file), join(scratch, file));
  }
  symlinkSync(join(ROOT, "node_modules"), join(scratch, "node_modules"));
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
