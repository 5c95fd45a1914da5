import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fetchOnce, get, metric } from "../harness/http.ts";
import { ROOT, ServerProcess } from "../harness/process.ts";
import { connect } from "../harness/raw_client.ts";
import { SCRIPTS, startListening } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import type { Runtime } from "../src/policy/types.ts";
import { nonJson, parseResponses, upload } from "./_plain.ts";
import { copyProject, runIn } from "../harness/scratch.ts";

/**
 * What a user does in the first hour: replace the example app with their own, and keep the proof
 * green. A scratch copy of the project gets a plain Hono app of its own in place of src/app.ts,
 * calling none of the template's helpers (issue #18), and no test/app.test.ts, an own entry per
 * runtime in src/, and the optional WebSub module removed; there, what a user would run must
 * pass: typecheck, lint, the unit tests that remain, a smoke of the policy suite on every runtime,
 * `npm start` serving the new routes, the policy holding for that app on every runtime, and each
 * own entry serving it with the probes in front. Nothing outside the example, or the module, may
 * depend on them.
 */
const USER_APP = `import { Hono } from "hono";
import { streamSSE } from "hono/streaming";

const app = new Hono()
  .get("/", (c) => c.text("my service"))
  .get("/items/:id", (c) => c.json({ id: c.req.param("id") }))
  .post("/items", async (c) => c.json({ received: (await c.req.text()).length }, 201))
  .get("/events", (c) =>
    streamSSE(c, async (stream) => {
      let id = 0;
      while (!stream.aborted) {
        await stream.writeSSE({ data: "tick", id: String(id++) });
        await stream.sleep(50);
      }
    }))
  .get("/fail", () => {
    throw new Error("boom: my own bug");
  });

export default app;
`;

/** The user's own entry file per runtime, in src/ as the README names them, serving src/app.ts with serve() alone. */
const ENTRIES: Record<Runtime, string> = { node: "src/server.ts", bun: "src/server.bun.ts", deno: "src/server.deno.ts" };

function entry(runtime: Runtime): string {
  return `import process from "node:process";
import app from "./app.ts";
import { serve } from "../adapters/${runtime}/mod.ts";

const server = await serve(app, { port: Number(process.env.PORT ?? 0), host: "127.0.0.1" });

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => server.shutdown(signal).then(() => process.exit(0)));
}
`;
}

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
  return runIn(scratch, cmd, timeoutMs);
}

beforeAll(() => {
  scratch = copyProject({ prefix: "hono-policy-yours-" });
  unlinkSync(join(scratch, "test/app.test.ts"));
  writeFileSync(join(scratch, "src/app.ts"), USER_APP);
  // The optional WebSub module removed as docs/websub.md says: its folder, its line, its script, and
  // its lines in the Dockerfiles (data/ and its VOLUME, fenced by `# >>> WebSub` and `# <<< WebSub`).
  rmSync(join(scratch, "src/websub"), { recursive: true });
  rmSync(join(scratch, "test/websub"), { recursive: true });
  rmSync(join(scratch, "bench/websub_store_ab.ts"));
  const modules = join(scratch, "src/main/modules.ts");
  writeFileSync(modules, readFileSync(modules, "utf8").replace(/^export \{ websub \} from .*\n/m, ""));
  const pkg = JSON.parse(readFileSync(join(scratch, "package.json"), "utf8"));
  delete pkg.scripts.websub;
  writeFileSync(join(scratch, "package.json"), JSON.stringify(pkg, null, 2) + "\n");
  for (const dockerfile of new Bun.Glob("deploy/Dockerfile*").scanSync(scratch)) {
    const path = join(scratch, dockerfile);
    writeFileSync(path, readFileSync(path, "utf8").replace(/^# >>> WebSub.*\n[\s\S]*?^# <<< WebSub.*\n/gm, ""));
  }
  // Before typecheck and lint run: they must pass with these in src/ too.
  for (const runtime of Object.keys(ENTRIES) as Runtime[]) writeFileSync(join(scratch, ENTRIES[runtime]), entry(runtime));
});

/** `cmd` run in the scratch project on 127.0.0.1, port 0, with `env`; resolves once it listens. */
function startInScratch(cmd: string[], env: Record<string, string> = {}): Promise<ServerProcess> {
  return startListening(() =>
    new ServerProcess(["sh", "-c", `cd ${JSON.stringify(scratch)} && exec "$@"`, "sh", ...cmd], {
      ...process.env,
      PORT: "0",
      HOST: "127.0.0.1",
      NO_COLOR: "1",
      ...env,
    } as Record<string, string>)
  );
}

/**
 * Runs `check` once per runtime, all at once, and fails naming each runtime it failed on, with
 * why: one runtime's failure does not hide another's.
 */
async function onEveryRuntime(check: (runtime: Runtime, defer: (cleanup: () => unknown) => void) => Promise<void>): Promise<void> {
  const runtimes: Runtime[] = ["node", "bun", "deno"];
  const settled = await Promise.allSettled(runtimes.map((runtime) => using((defer) => check(runtime, defer))));
  const failures = settled.flatMap((result, i) =>
    result.status === "rejected" ? [`${runtimes[i]}: ${(result.reason as Error).message}`] : []
  );
  if (failures.length > 0) throw new Error(failures.join("\n\n"));
}

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("make it yours: the example app replaced by a plain Hono app of the user's", () => {
  test("typecheck and lint pass", () => {
    // With the user's app and an own entry per runtime in src/ (written in beforeAll).
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

  test("the policy holds for the user's plain app on every runtime", () =>
    onEveryRuntime(async (runtime, defer) => {
      const server = await startInScratch(SCRIPTS[runtime], { BODY_LIMIT: "1kb" });
      defer(() => server.kill());

      /** The answer to `request`, sent on a connection of its own. */
      const answer = async (request: string, what: string) => {
        const client = await connect(server.port);
        defer(() => client.destroy());
        client.write(request);
        await client.waitFor((d) => parseResponses(d).length === 1, 3_000, what);
        return parseResponses(client.data)[0]!;
      };
      // BODY_LIMIT, though the app reads its body with c.req.text() and nothing of the template's.
      for (const framing of ["length", "chunked"] as const) {
        const over = await answer(upload("/items", "text/plain", "x".repeat(5_000), framing), `the answer to 5,000 bytes (${framing})`);
        expect({ framing, status: over.status, type: over.headers["content-type"] }).toEqual({
          framing,
          status: 413,
          type: expect.stringMatching(/^application\/json/),
        });
        expect(JSON.parse(over.body)).toMatchObject({ error: "payload_too_large" });
        const under = await answer(upload("/items", "text/plain", "x".repeat(500), framing), `the answer to 500 bytes (${framing})`);
        expect({ framing, status: under.status, body: under.body }).toEqual({ framing, status: 201, body: '{"received":500}' });
      }

      // A client that leaves the app's streamSSE response is noticed, logged and counted.
      const client = await connect(server.port);
      defer(() => client.destroy());
      client.write(get("/events"));
      await client.waitFor((d) => d.includes("data: tick"), 2_000, "the first event");
      client.destroy();
      expect((await server.waitForEvent("request_aborted", 2_000)).path).toBe("/events");
      const metrics = await (await fetchOnce(`${server.url}/metrics`)).text();
      expect(metric(metrics, 'http_responses_total{outcome="aborted"}')).toBe(1);

      // A thrown error: one JSON answer, one JSON event, nothing else.
      const failed = await fetchOnce(`${server.url}/fail`);
      expect(failed.status).toBe(500);
      const body = await failed.text();
      expect(JSON.parse(body)).toMatchObject({ error: "internal_error" });
      expect(body).not.toContain("my own bug");
      expect(server.named("handler_error")).toHaveLength(1);
      expect(server.named("handler_error")[0]).toMatchObject({ level: "error", error: { message: "boom: my own bug" } });
      expect(server.nonJsonLines).toEqual([]);
      expect(nonJson(server.stderr)).toEqual([]);
    }), 60_000);

  test("an own entry per runtime in src/ serves the user's app with the probes in front, through serve() alone", () =>
    // Its typecheck is the first test's; own-entry-runtimes.test.ts runs the README's example the
    // same way and checks SIGTERM: here the app is the user's src/app.ts, and /healthz is serve()'s.
    onEveryRuntime(async (runtime, defer) => {
      const server = await startInScratch(["npm", "run", "--silent", runtime, "--", ENTRIES[runtime]]);
      defer(() => server.kill());
      expect(server.named("listening")[0]).toMatchObject({ runtime });
      const health = await fetchOnce(`${server.url}/healthz`);
      expect({ status: health.status, body: await health.text() }).toEqual({ status: 200, body: '{"status":"ok"}' });
      expect(await (await fetchOnce(server.url)).text()).toBe("my service");
      expect(await (await fetchOnce(`${server.url}/items/7`)).json()).toEqual({ id: "7" });
      expect(server.nonJsonLines).toEqual([]);
    }), 60_000);

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
