/**
 * The format check of `npm run lint`: `deno fmt --check`, saying which files are not formatted and
 * what fixes them. Deno's `--quiet` names no file ("Found 1 not formatted file"), and without it
 * deno prints a diff of every such file; with RUST_BACKTRACE set (some images set it), deno follows
 * its error with an empty "Stack backtrace". Prints nothing when every file is formatted.
 *
 *   node harness/fmt_check.ts [files...]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { relative } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

// The pinned deno, also when this is run outside an npm script.
const pinned = fileURLToPath(new URL("../node_modules/.bin/deno", import.meta.url));
const result = spawnSync(existsSync(pinned) ? pinned : "deno", ["fmt", "--check", ...process.argv.slice(2)], {
  encoding: "utf8",
  env: { ...process.env, NO_COLOR: "1", RUST_BACKTRACE: "0" },
});
if (result.error) {
  process.stderr.write(`Cannot run deno fmt --check: ${result.error.message}\n`);
  process.exit(1);
}
if (result.status === 0) process.exit(0);

const lines = `${result.stdout}${result.stderr}`.split("\n");
const show = (path: string) => relative(process.cwd(), path) || path;
// A diff starts with "from <path>:"; a file deno cannot parse with "Error checking: <path>" and indented lines.
const unformatted = lines.flatMap((line) => /^from (.+):$/.exec(line)?.[1] ?? []);
const unparsed: string[] = [];
for (const [i, line] of lines.entries()) {
  const path = /^Error checking: (.+)$/.exec(line)?.[1];
  if (path === undefined) continue;
  unparsed.push(`Cannot format ${show(path)}:`);
  for (let j = i + 1; j < lines.length && /^\s/.test(lines[j]!); j++) unparsed.push(lines[j]!);
}
if (unformatted.length === 0 && unparsed.length === 0) {
  // Not a formatting problem (a bad deno.json, say): deno's own words.
  process.stderr.write(lines.join("\n"));
  process.exit(result.status ?? 1);
}
for (const line of unparsed) process.stderr.write(`${line}\n`);
for (const path of unformatted) process.stderr.write(`Not formatted: ${show(path)}\n`);
if (unformatted.length > 0) process.stderr.write("Run npm run format to fix (deno fmt rewrites them in place)\n");
process.exit(result.status ?? 1);
