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
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../harness/process.ts";
import type { Runtime } from "../src/policy/types.ts";
import { coscheduledRates, coscheduledUnavailable, exportCommit, templateCommand } from "./_coscheduled.ts";
import { killAll, killChildrenOnExit } from "./_process.ts";
import { startCommand } from "./_servers.ts";
import { median } from "./_stats.ts";

const COMMIT = process.argv[2] ?? "HEAD~1";
const RUNTIMES = (process.env.BENCH_RUNTIMES ?? "node,bun,deno").split(",") as Runtime[];
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 4);

async function main(): Promise<void> {
  const unavailable = coscheduledUnavailable();
  if (unavailable) throw new Error(unavailable);
  killChildrenOnExit();
  const tree = exportCommit(COMMIT, "coscheduled-ab-");
  const post = join(tree, "post-1kb.lua");
  writeFileSync(post, `wrk.method = "POST"\nwrk.body = string.rep("x", 1024)\nwrk.headers["Content-Type"] = "text/plain"\n`);
  console.log(`before: ${COMMIT}; after: this tree; ${ROUNDS} rounds of ${DURATION_S} s, both on CPU 0, wrk -t1 -c32 each on CPU 1`);
  try {
    for (const runtime of RUNTIMES) {
      const [before, after] = await Promise.all([
        startCommand(runtime, "template", templateCommand(runtime, tree), {}),
        startCommand(runtime, "template", templateCommand(runtime, ROOT), {}),
      ]);
      try {
        for (const [name, path, script] of [["GET /", "/", undefined], ["POST /echo 1 KB", "/echo", post]] as const) {
          // Warm-up: both JITs settle before anything is counted.
          await coscheduledRates(before.url + path, after.url + path, 2, script);
          const ratios: number[] = [];
          for (let round = 1; round <= ROUNDS; round++) {
            const [b, a] = await coscheduledRates(before.url + path, after.url + path, DURATION_S, script);
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
        await Promise.all([before.stop(), after.stop()]);
      }
    }
  } finally {
    killAll();
    rmSync(tree, { recursive: true, force: true });
  }
}

await main();
