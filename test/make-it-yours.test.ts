import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fetchOnce } from "../harness/http.ts";
import { ROOT, ServerProcess } from "../harness/process.ts";
import { using } from "../harness/wait.ts";

/**
 * What a user does in the first hour: replace the example app with their own, and keep the proof
 * green. A scratch copy of the project gets a three-route app of its own in place of src/app.ts
 * (and no src/app.test.ts), and the optional WebSub module removed; there, what a user would run
 * must pass: typecheck, lint, the unit tests that remain, a smoke of the policy suite on every
 * runtime, and `npm start` serving the new routes. Nothing outside the example, or the module, may
 * depend on them.
 */
const USER_APP = `import { Hono } from "hono";

const app = new Hono()
  .get("/", (c) => c.text("my service"))
  .get("/items/:id", (c) => c.json({ id: c.req.param("id") }))
  .post("/items", async (c) => c.json({ received: (await c.req.text()).length }, 201));

export default app;
`;

/** One scenario per clause family, on each runtime's default engine: enough to show the suite runs without the example. */
const SMOKE = [
  "idle keep-alive connection is closed after IDLE_TIMEOUT",
  "a client that leaves mid-response \\(FIN\\)",
  "SIGTERM to npm start",
  "invalid configuration exits 2",
].join("|");

let scratch = "";

/** Runs `cmd` in the scratch project; its output goes to a file (not a pipe), read once it exits. */
function run(cmd: string[], timeoutMs: number): { code: number | null; output: string } {
  const log = join(scratch, `.run-${cmd.join("-").replace(/\W+/g, "_").slice(0, 60)}.log`);
  const result = spawnSync(["sh", "-c", `exec "$@" > ${JSON.stringify(log)} 2>&1`, "sh", ...cmd], {
    cwd: scratch,
    env: process.env,
    timeout: timeoutMs,
  });
  const output = existsSync(log) ? readFileSync(log, "utf8") : "";
  return { code: result.exitCode, output };
}

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "hono-policy-yours-"));
  // The project as a user has it: every file git tracks or would add, not what it ignores.
  const listed = spawnSync(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT });
  for (const file of listed.stdout.toString().split("\0").filter(Boolean)) {
    if (!existsSync(join(ROOT, file))) continue; // deleted in the working tree
    mkdirSync(dirname(join(scratch, file)), { recursive: true });
    copyFileSync(join(ROOT, file), join(scratch, file));
  }
  symlinkSync(join(ROOT, "node_modules"), join(scratch, "node_modules"));
  unlinkSync(join(scratch, "src/app.test.ts"));
  writeFileSync(join(scratch, "src/app.ts"), USER_APP);
  // The optional WebSub module removed as docs/websub.md says: its folder, its line, its script, and
  // its lines in the Dockerfiles (data/ and its VOLUME, fenced by `# >>> WebSub` and `# <<< WebSub`).
  rmSync(join(scratch, "src/websub"), { recursive: true });
  const modules = join(scratch, "src/main/modules.ts");
  writeFileSync(modules, readFileSync(modules, "utf8").replace(/^export \{ websub \} from .*\n/m, ""));
  const pkg = JSON.parse(readFileSync(join(scratch, "package.json"), "utf8"));
  delete pkg.scripts.websub;
  writeFileSync(join(scratch, "package.json"), JSON.stringify(pkg, null, 2) + "\n");
  for (const dockerfile of new Bun.Glob("deploy/Dockerfile*").scanSync(scratch)) {
    const path = join(scratch, dockerfile);
    writeFileSync(path, readFileSync(path, "utf8").replace(/^# >>> WebSub.*\n[\s\S]*?^# <<< WebSub.*\n/gm, ""));
  }
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("make it yours: the example app replaced by a three-route app of the user's", () => {
  test("typecheck and lint pass", () => {
    for (const script of ["typecheck", "lint"]) {
      const { code, output } = run(["npm", "run", script, "--silent"], 120_000);
      expect(`${script} exited ${code}\n${output}`).toBe(`${script} exited 0\n${output}`);
    }
  }, 150_000);

  test("the unit tests that remain pass", () => {
    const { code, output } = run(["npm", "run", "test:unit", "--silent"], 120_000);
    expect(output).toMatch(/\n 0 fail\n/);
    expect(code).toBe(0);
  }, 150_000);

  test("a smoke of the policy suite passes on every runtime", () => {
    const files = ["test/node-http.test.ts", "test/bun-serve.test.ts", "test/deno-per-connection.test.ts"];
    const { code, output } = run(["node_modules/.bin/bun", "test", ...files, "-t", SMOKE], 150_000);
    // Each smoke scenario on each of the three runtimes.
    expect(output).toMatch(/\n 12 pass\n( \d+ filtered out\n)? 0 fail\n/);
    expect(code).toBe(0);
  }, 180_000);

  test("npm start serves the user's routes, with /healthz in front of them", () =>
    using(async (defer) => {
      const server = new ServerProcess(["sh", "-c", `cd ${JSON.stringify(scratch)} && exec npm start --silent`], {
        ...process.env,
        PORT: "0",
        HOST: "127.0.0.1",
      } as Record<string, string>);
      defer(() => server.kill());
      const url = String((await server.waitForEvent("listening", 15_000)).url);
      expect(await (await fetchOnce(url)).text()).toBe("my service");
      expect(await (await fetchOnce(`${url}/items/42`)).json()).toEqual({ id: "42" });
      const created = await fetch(`${url}/items`, { method: "POST", body: "abc", headers: { connection: "close" } });
      expect(created.status).toBe(201);
      expect(await created.json()).toEqual({ received: 3 });
      expect(await (await fetchOnce(`${url}/healthz`)).json()).toEqual({ status: "ok" });
      expect((await fetchOnce(`${url}/slow`)).status).toBe(404);
      expect((await fetchOnce(`${url}/websub/anything`)).status).toBe(404);
    }), 30_000);

  test("with the WebSub module removed, no Dockerfile keeps data/ or a VOLUME", () => {
    const dockerfiles = [...new Bun.Glob("deploy/Dockerfile*").scanSync(scratch)];
    expect(dockerfiles).toEqual(expect.arrayContaining(["deploy/Dockerfile.node", "deploy/Dockerfile.bun", "deploy/Dockerfile.deno"]));
    // The project's own have them (the removal is what took them out).
    expect(dockerfiles.filter((d) => /^VOLUME /m.test(readFileSync(join(ROOT, d), "utf8")))).toHaveLength(3);
    for (const dockerfile of dockerfiles) {
      const left = readFileSync(join(scratch, dockerfile), "utf8").split("\n").filter((l) => /\bdata\b|\bVOLUME\b|WebSub/.test(l));
      expect({ dockerfile, left }).toEqual({ dockerfile, left: [] });
    }
  });
});
