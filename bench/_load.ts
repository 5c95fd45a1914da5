/** The load generator: wrk, or autocannon when wrk is missing or BENCH_LOAD=autocannon, on the load core. */
import { existsSync } from "node:fs";
import { CONNECTIONS } from "./_config.ts";
import { AUTOCANNON, GENERATOR, LOAD_CPU, NODE } from "./_machine.ts";
import { run } from "./_process.ts";

export interface Load {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
}

function toMs(value: string, unit: string): number {
  const n = Number(value);
  return unit === "us" ? n / 1000 : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n;
}

/** Runs the load generator against `url` for `seconds`, on the load core (or on the cores `cpu` pins it to, none for `[]`). */
export async function load(url: string, seconds: number, cpu: string[] = LOAD_CPU): Promise<Load> {
  const timeoutMs = seconds * 1000 + 15_000;
  if (GENERATOR === "wrk") {
    const out = await run([...cpu, "wrk", "-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--latency", `${url}/`], timeoutMs);
    const rps = /Requests\/sec:\s*([\d.]+)/.exec(out);
    const p50 = /^\s*50%\s+([\d.]+)(us|ms|s|m)\b/m.exec(out);
    const p99 = /^\s*99%\s+([\d.]+)(us|ms|s|m)\b/m.exec(out);
    const total = /(\d+) requests in/.exec(out);
    if (!rps || !p50 || !p99 || !total) throw new Error(`cannot parse wrk output:\n${out}`);
    const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
    const errors = (socketErrors ? socketErrors.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
    return { rps: Number(rps[1]), p50Ms: toMs(p50[1]!, p50[2]!), p99Ms: toMs(p99[1]!, p99[2]!), requests: Number(total[1]), errors };
  }
  if (!existsSync(AUTOCANNON)) throw new Error(`autocannon is not installed (${AUTOCANNON}): npm install autocannon`);
  const out = await run(
    [...cpu, NODE, AUTOCANNON, "-c", String(CONNECTIONS), "-d", String(seconds), "--json", `${url}/`],
    timeoutMs,
  );
  const result = JSON.parse(out.slice(out.indexOf("{"))) as {
    requests: { total: number };
    latency: { p50: number; p99: number };
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
  };
  return {
    rps: result.requests.total / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    requests: result.requests.total,
    errors: result.errors + result.timeouts + result.non2xx,
  };
}
