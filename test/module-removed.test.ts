import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ServerProcess } from "../harness/process.ts";
import { using } from "../harness/wait.ts";
import { copyProject } from "../harness/scratch.ts";

/**
 * A `WEBSUB_*` variable left set after the WebSub module is removed (as docs/websub.md says: its
 * folder and its line in src/main/modules.ts) stops the server, rather than being ignored: the
 * knowledge of which variables belong to an optional module lives in src/main, not in the module.
 * Two scratch copies of the project (its files as git lists them, node_modules linked): one as it
 * is, one with the module removed.
 */
const SECRET = "a-secret-that-must-never-be-printed";

let scratch = "";

/** The Node entry started in `dir` with `vars` on top of an environment without any WEBSUB_* of the caller's. */
function start(dir: string, vars: Record<string, string>): ServerProcess {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("WEBSUB_"))) as Record<string, string>;
  return new ServerProcess(["sh", "-c", `cd ${JSON.stringify(dir)} && exec node_modules/.bin/node src/main/node.ts`], {
    ...env,
    PORT: "0",
    HOST: "127.0.0.1",
    ...vars,
  });
}

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "hono-policy-module-removed-"));
  copyProject({ to: join(scratch, "with") });
  const without = join(scratch, "without");
  copyProject({ to: without });
  rmSync(join(without, "src/websub"), { recursive: true });
  rmSync(join(without, "test/websub"), { recursive: true });
  const modules = join(without, "src/main/modules.ts");
  const listed = readFileSync(modules, "utf8");
  writeFileSync(modules, listed.replace(/^export \{ websub \} from .*\n/m, ""));
  expect(readFileSync(modules, "utf8")).not.toBe(listed);
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("WEBSUB_* after the WebSub module is removed", () => {
  test("is refused at startup: exit 2, one line per variable naming it, the secret never printed", () =>
    using(async (defer) => {
      const server = start(join(scratch, "without"), { WEBSUB_TOPIC: "http://127.0.0.1:9/x", WEBSUB_SECRET: SECRET });
      defer(() => server.kill());
      expect(await server.exitCode(15_000)).toBe(2);
      expect(server.stderr.trim().split("\n")).toEqual([
        "WEBSUB_SECRET is set but the WebSub module is not installed (src/main/modules.ts): unset it or restore the module",
        "WEBSUB_TOPIC is set but the WebSub module is not installed (src/main/modules.ts): unset it or restore the module",
      ]);
      expect(server.named("listening")).toEqual([]);
    }), 30_000);

  test("without one, the server starts as before", () =>
    using(async (defer) => {
      const server = start(join(scratch, "without"), {});
      defer(() => server.kill());
      await server.waitForEvent("listening", 15_000);
    }), 30_000);

  test("with the module present, the same variable is accepted as before", () =>
    using(async (defer) => {
      const server = start(join(scratch, "with"), { WEBSUB_TOPIC: "http://127.0.0.1:9/x", WEBSUB_STORE: "memory" });
      defer(() => server.kill());
      await server.waitForEvent("listening", 15_000);
      await server.waitForEvent("websub_started", 5_000);
      expect(server.stderr).not.toContain("WEBSUB_");
    }), 30_000);
});
