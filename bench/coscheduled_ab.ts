/**
 * `bun bench/coscheduled_ab.ts [commit]`: what a change costs the request path, measured
 * co-scheduled: the template at `commit` (default HEAD~1; exported with `git archive`,
 * node_modules shared) and the template in this tree, both serving the fixture app, both pinned to
 * CPU 0 at the same time and loaded at once by two wrk on CPU 1. The kernel splits the core
 * between them, so the ratio of their req/s is the inverse ratio of their CPU per request, and
 * the host's noise hits both alike (sequential rounds on this 2-core machine swing by +-25%).
 * Per runtime's default engine, `GET /` and a `POST /echo` of 1 KB; prints each round's after/before
 * ratio and the median and range. Not part of `npm test`; needs wrk and taskset.
 *
 * Environment: BENCH_RUNTIMES (node,bun,deno), BENCH_ROUNDS (7), BENCH_DURATION_S (4).
 */
import { spawn, spawnSync } from "bun";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../harness/process.ts";
import type { Runtime } from "../src/policy/types.ts";
import { BUN, DENO, NODE, WRK } from "./_machine.ts";
import { median } from "./_stats.ts";

const COMMIT = process.argv[2] ?? "HEAD~1";
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? "node,bun,deno").split(",") as Runtime[];
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 4);

/** The entry of `tree` on `runtime`, serving that tree's fixture app. */
function command(runtime: Runtime, tree: string): string[] {
  const [entry, app] = [`${tree}src/main/${runtime}.ts`, `${tree}test/_fixture.ts`];
  if (runtime === "deno") return [DENO, "run", "--allow-all", `--config=${tree}deno.json`, entry, app];
  return [runtime === "node" ? NODE : BUN, entry, app];
}

/** Starts `cmd` pinned to CPU 0 on a free port; resolves with its URL and a stop function. */
async function start(cmd: string[]): Promise<{ url: string; stop(): void }> {
  const child = spawn(["taskset", "-c", "0", ...cmd], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1" },
    stdout: "pipe",
    stderr: "ignore",
  });
  const reader = child.stdout.getReader();
  let text = "";
  const deadline = Date.now() + 20_000;
  while (!/"event":"listening"/.test(text)) {
    if (Date.now() > deadline) throw new Error(`no listening event from ${cmd.join(" ")}`);
    const { value, done } = await reader.read();
    if (done) throw new Error(`${cmd.join(" ")} exited before listening`);
    text += new TextDecoder().decode(value);
  }
  // Keep draining stdout so a full pipe never stalls the server.
  void (async () => {
    while (!(await reader.read()).done);
  })();
  const url = /"url":"([^"]+)"/.exec(text)![1]!;
  return { url, stop: () => child.kill("SIGKILL") };
}

/** Requests per second wrk measured on CPU 1, for `seconds`; `script` makes it a POST. */
async function wrk(url: string, seconds: number, script?: string): Promise<number> {
  const args = ["taskset", "-c", "1", WRK, "-t1", "-c32", `-d${seconds}s`, ...(script ? ["-s", script] : []), url];
  const child = spawn(args, { stdout: "pipe", stderr: "ignore" });
  const out = await new Response(child.stdout).text();
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!rps) throw new Error(`wrk printed no rate: ${out}`);
  if (/Non-2xx/.test(out)) throw new Error(`wrk saw errors: ${out}`);
  return Number(rps[1]);
}

async function main(): Promise<void> {
  if (!WRK) throw new Error("wrk is not installed (apt-get install wrk)");
  const tree = `${mkdtempSync(join(tmpdir(), "coscheduled-ab-"))}/`;
  const archive = spawnSync(["sh", "-c", `git -C '${ROOT}' archive '${COMMIT}' | tar -x -C '${tree}'`]);
  if (archive.exitCode !== 0) throw new Error(`cannot export ${COMMIT}: ${archive.stderr.toString()}`);
  symlinkSync(`${ROOT}node_modules`, `${tree}node_modules`);
  const post = join(tree, "post-1kb.lua");
  writeFileSync(post, `wrk.method = "POST"\nwrk.body = string.rep("x", 1024)\nwrk.headers["Content-Type"] = "text/plain"\n`);
  console.log(`before: ${COMMIT}; after: this tree; ${ROUNDS} rounds of ${DURATION_S} s, both on CPU 0, wrk -t1 -c32 each on CPU 1`);
  try {
    for (const runtime of RUNTIMES) {
      const before = await start(command(runtime, tree));
      const after = await start(command(runtime, `${ROOT}`));
      try {
        for (const [name, path, script] of [["GET /", "/", undefined], ["POST /echo 1 KB", "/echo", post]] as const) {
          // Warm-up: both JITs settle before anything is counted.
          await Promise.all([wrk(before.url + path, 2, script), wrk(after.url + path, 2, script)]);
          const ratios: number[] = [];
          for (let round = 1; round <= ROUNDS; round++) {
            const [b, a] = await Promise.all([wrk(before.url + path, DURATION_S, script), wrk(after.url + path, DURATION_S, script)]);
            ratios.push(a / b);
            console.log(
              `  ${runtime} ${name} round ${round}: before ${Math.round(b)} after ${Math.round(a)} req/s, after/before ${
                (a / b).toFixed(3)
              }`,
            );
          }
          const sorted = [...ratios].sort((x, y) => x - y);
          console.log(
            `${runtime} ${name}: after/before median ${median(ratios).toFixed(3)} (range ${sorted[0]!.toFixed(3)}-${
              sorted.at(-1)!.toFixed(3)
            })`,
          );
        }
      } finally {
        before.stop();
        after.stop();
      }
    }
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
}

await main();
