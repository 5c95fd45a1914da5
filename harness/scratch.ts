/**
 * A copy of the project as a user has it, for tests that change it the way a user would (replace
 * the app, remove a module, add an entry) and run what a user runs there.
 */
import { spawnSync } from "bun";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { ROOT } from "./process.ts";

/**
 * Copies every file git tracks or would add (not what it ignores, nor what the working tree has
 * deleted) into `to`, or into a new temporary folder named with `prefix`; node_modules is linked,
 * not installed. Returns the folder.
 */
export function copyProject({ to, prefix = "hono-policy-" }: { to?: string; prefix?: string } = {}): string {
  const dir = to ?? mkdtempSync(join(tmpdir(), prefix));
  const listed = spawnSync(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT });
  for (const file of listed.stdout.toString().split("\0").filter(Boolean)) {
    if (!existsSync(join(ROOT, file))) continue;
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    copyFileSync(join(ROOT, file), join(dir, file));
  }
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return dir;
}

/** Runs `cmd` in `dir`; its output goes to a file (not a pipe, which a runtime may stop reading), read once it exits. */
export function runIn(
  dir: string,
  cmd: string[],
  timeoutMs: number,
  env: Record<string, string | undefined> = process.env,
): { code: number | null; output: string } {
  const log = join(dir, ".run.log");
  const result = spawnSync(["sh", "-c", `exec "$@" > ${JSON.stringify(log)} 2>&1`, "sh", ...cmd], { cwd: dir, env, timeout: timeoutMs });
  const output = existsSync(log) ? readFileSync(log, "utf8") : "";
  rmSync(log, { force: true });
  return { code: result.exitCode, output };
}
