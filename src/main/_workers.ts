/**
 * WORKERS > 1: one supervisor process and N server processes that share one port (SO_REUSEPORT,
 * the engines' `reusePort` option; docs/runtimes.md#several-processes-on-one-port). Each worker is
 * a whole server (src/main/_main.ts in worker mode) with the whole policy; the supervisor serves
 * nothing itself. It prints the one `listening` event, restarts a worker that dies (with backoff),
 * forwards SIGTERM and SIGINT, and kills what is left once the drain's deadline has passed.
 *
 * Supervisor and workers talk over a small HTTP control server on 127.0.0.1 (no IPC channel works
 * the same on Node, Bun and Deno, and prom-client's own cluster aggregation rides on node:cluster's):
 * a worker announces itself once listening, and a worker asked for /metrics learns its siblings'
 * private metrics addresses there, so one scrape covers them all.
 */
import * as v from "valibot";
import { type ChildProcess, spawn } from "node:child_process";
import { createServer, type IncomingMessage, type Server as HttpServer } from "node:http";
import { createServer as createNetServer } from "node:net";
import { availableParallelism } from "node:os";
import process from "node:process";
import { readEnv } from "../policy/config.ts";
import type { Logger } from "../policy/log.ts";
import type { Registry } from "../policy/metrics.ts";
import type { Runtime } from "../policy/types.ts";
import { decodeFamilies, encodeFamilies, mergeWorkers } from "./_merge_metrics.ts";

/** What a worker is told in its environment: its number and where the supervisor listens. */
export const WORKER_INDEX = "WORKER_INDEX";
export const WORKERS_CONTROL = "WORKERS_CONTROL";

/** The first wait before a dead worker is started again; it doubles up to the last while workers keep dying young. */
const RESTART_FIRST_MS = 100;
const RESTART_MAX_MS = 10_000;
/** A worker that lived this long died of something other than starting: its next restart waits the first delay again. */
const STABLE_MS = 30_000;
/** How long after the drain's own deadline (SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT) what is left is killed. */
const KILL_AFTER_MS = 2_000;
/** How long a control request may take. */
const CONTROL_TIMEOUT_MS = 2_000;
/** Exit code of a worker whose configuration was refused: the supervisor gives up with it too. */
const EXIT_CONFIG = 2;

const NOT_A_COUNT = (issue: v.BaseIssue<unknown>) => `"${issue.input}" is not a worker count: use auto, or an integer from 1 to 256`;

/** WORKERS: how many server processes share the port; `auto` is one per available core. */
export const WorkersEnvSchema = v.object({
  WORKERS: v.optional(
    v.pipe(
      v.string(),
      v.check((value) => value.trim() === "auto" || /^\d{1,3}$/.test(value.trim()), NOT_A_COUNT),
      v.transform((value) => (value.trim() === "auto" ? availableParallelism() : Number(value))),
      v.minValue(1, NOT_A_COUNT),
      v.maxValue(256, NOT_A_COUNT),
    ),
    "1",
  ),
});

/** Reads WORKERS (exit 2 on a bad value, like every variable). */
export function loadWorkers(env: Record<string, string | undefined>) {
  return readEnv(WorkersEnvSchema, env);
}

/** A worker as it announces itself once listening. */
export interface WorkerInfo {
  index: number;
  pid: number;
  url: string;
  engine: string;
  /** Its private address for the supervisor and its siblings: serves its own registry as JSON at GET /metrics.json. */
  adminUrl: string;
}

/** What the supervisor answers a worker that asks for the others: how many there are, and those listening. */
interface WorkerList {
  count: number;
  workers: WorkerInfo[];
}

export interface SuperviseOptions {
  runtime: Runtime;
  workers: number;
  /** How to start one worker: this entry again. */
  command: readonly string[];
  host: string;
  /** The port the workers share; 0 picks a free one for all. */
  port: number;
  /** SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT: how long a worker may drain after a signal. */
  drainMs: number;
  logger: Logger;
}

/** A port free right now on `host`, for PORT=0: the workers then bind it together. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createNetServer();
    probe.once("error", reject);
    probe.listen(0, host, () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

function readJson(request: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk: string) => (body += chunk));
    request.on("end", () => {
      try {
        resolve(JSON.parse(body));
      } catch (error) {
        reject(error);
      }
    });
    request.on("error", reject);
  });
}

/** Runs the workers until a signal has drained them; resolves with the exit code for the supervisor. */
export async function supervise(options: SuperviseOptions): Promise<number> {
  const { logger, workers } = options;
  const port = options.port === 0 ? await freePort(options.host) : options.port;
  const live = new Map<number, { child: ChildProcess; startedAt: number; info?: WorkerInfo }>();
  const backoff = new Map<number, number>();
  const restarts = new Set<ReturnType<typeof setTimeout>>();
  let announced = false;
  let stopping: string | undefined;
  let allExited: () => void = () => {};
  const exited = new Promise<void>((resolve) => (allExited = resolve));
  let done: (code: number) => void = () => {};
  const result = new Promise<number>((resolve) => (done = resolve));

  const control: HttpServer = createServer(async (request, response) => {
    const send = (status: number, body: unknown) =>
      response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (request.method === "POST" && request.url === "/listening") {
      const info = await readJson(request).catch(() => undefined) as WorkerInfo | undefined;
      const entry = info && live.get(info.index);
      if (!info || !entry || entry.child.pid !== info.pid) return send(400, { error: "unknown worker" });
      entry.info = info;
      const listening = [...live.values()].filter((w) => w.info);
      if (!announced && listening.length === workers) {
        announced = true;
        logger.info("listening", {
          runtime: options.runtime,
          url: info.url,
          pid: process.pid,
          engine: info.engine,
          workers: listening.map((w) => ({ worker: w.info!.index, pid: w.info!.pid })),
        });
      }
      return send(200, { ok: true });
    }
    if (request.method === "GET" && request.url === "/workers") {
      const listening: WorkerList = { count: workers, workers: [...live.values()].flatMap((w) => (w.info ? [w.info] : [])) };
      return send(200, listening);
    }
    send(404, { error: "not_found" });
  });
  await new Promise<void>((resolve) => control.listen(0, "127.0.0.1", resolve));
  const controlUrl = `http://127.0.0.1:${(control.address() as { port: number }).port}`;

  const start = (index: number) => {
    const [command, ...args] = options.command;
    const child = spawn(command!, args, {
      stdio: "inherit",
      env: { ...process.env, PORT: String(port), [WORKER_INDEX]: String(index), [WORKERS_CONTROL]: controlUrl },
    });
    live.set(index, { child, startedAt: Date.now() });
    child.on("exit", (code, signal) => {
      const entry = live.get(index);
      if (entry?.child !== child) return;
      live.delete(index);
      if (stopping !== undefined) {
        if (live.size === 0) allExited();
        return;
      }
      if (code === EXIT_CONFIG && !entry.info) {
        // Refused its configuration before it listened: every restart would be refused too.
        logger.error("worker_refused", { worker: index, pid: child.pid, code });
        void stop("worker_refused", EXIT_CONFIG);
        return;
      }
      const lived = Date.now() - entry.startedAt;
      const delay = lived >= STABLE_MS ? RESTART_FIRST_MS : Math.min((backoff.get(index) ?? RESTART_FIRST_MS / 2) * 2, RESTART_MAX_MS);
      backoff.set(index, delay);
      logger.error("worker_exited", { worker: index, pid: child.pid, code, signal, livedMs: lived, restartInMs: delay });
      const timer = setTimeout(() => {
        restarts.delete(timer);
        if (stopping === undefined) {
          start(index);
          logger.info("worker_restarted", { worker: index, pid: live.get(index)?.child.pid });
        }
      }, delay);
      restarts.add(timer);
    });
  };

  const stop = async (signal: string, code = 0) => {
    if (stopping !== undefined) return;
    stopping = signal;
    const started = Date.now();
    for (const timer of restarts) clearTimeout(timer);
    logger.info("shutdown_started", { signal, workers: live.size, drainMs: options.drainMs });
    for (const { child } of live.values()) child.kill(signal === "SIGINT" ? "SIGINT" : "SIGTERM");
    let killed = 0;
    const deadline = setTimeout(() => {
      for (const { child } of live.values()) {
        killed += 1;
        child.kill("SIGKILL");
      }
      if (killed > 0) logger.error("workers_killed", { count: killed, afterMs: Date.now() - started });
    }, options.drainMs + KILL_AFTER_MS);
    if (live.size === 0) allExited();
    await exited;
    clearTimeout(deadline);
    control.close();
    logger.info("shutdown_complete", { signal, killed, durationMs: Date.now() - started });
    done(killed > 0 ? 1 : code);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));

  for (let index = 0; index < workers; index++) start(index);
  return await result;
}

/** This process's worker number and the supervisor's control address, when it is a worker. */
export function workerOf(env: Record<string, string | undefined>): { index: number; control: string } | null {
  const index = env[WORKER_INDEX];
  const control = env[WORKERS_CONTROL];
  return index !== undefined && control ? { index: Number(index), control } : null;
}

async function controlRequest(url: string, init?: RequestInit): Promise<Response> {
  return await fetch(url, { ...init, signal: AbortSignal.timeout(CONTROL_TIMEOUT_MS) });
}

/**
 * What a worker adds to itself: a private listener on 127.0.0.1 serving its own registry as
 * prom-client's JSON (for the scrape of a sibling), and, once it listens, its announcement to the
 * supervisor.
 */
export async function startWorker(worker: { index: number; control: string }, registry: Registry): Promise<{
  announce(info: Omit<WorkerInfo, "adminUrl" | "index">): Promise<void>;
  /** The whole server's exposition: this worker's and every sibling's, aggregated. */
  metrics(): Promise<string>;
}> {
  const admin = createServer(async (request, response) => {
    if (request.url !== "/metrics.json") return response.writeHead(404).end();
    try {
      const body = encodeFamilies(await registry.json());
      response.writeHead(200, { "content-type": "application/json" }).end(body);
    } catch (error) {
      response.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end((error as Error).message);
    }
  });
  await new Promise<void>((resolve) => admin.listen(0, "127.0.0.1", resolve));
  admin.unref();
  let known: WorkerList | undefined;
  const adminUrl = `http://127.0.0.1:${(admin.address() as { port: number }).port}`;
  return {
    async announce(info) {
      const body = JSON.stringify({ ...info, index: worker.index, adminUrl });
      await (await controlRequest(`${worker.control}/listening`, { method: "POST", body })).body?.cancel();
    },
    async metrics() {
      const list = known ?? await (await controlRequest(`${worker.control}/workers`)).json() as WorkerList;
      let allAnswered = true;
      const workers = await Promise.all(list.workers.map(async (sibling) => {
        if (sibling.index === worker.index) return { worker: String(sibling.index), families: await registry.json() };
        // A sibling that does not answer (it is restarting) is left out of this scrape.
        const families = await controlRequest(`${sibling.adminUrl}/metrics.json`)
          .then(async (r) => (r.ok ? decodeFamilies(await r.text()) : null))
          .catch(() => null);
        if (families === null) allAnswered = false;
        return { worker: String(sibling.index), families: families ?? [] };
      }));
      // The addresses are kept while every worker listens and answers: one changes only when its
      // worker restarts, which then stops answering at the old one. That saves each scrape a round
      // trip to the supervisor (docs/workers.md#metrics).
      known = allAnswered && list.workers.length === list.count ? list : undefined;
      return await mergeWorkers(workers).metrics();
    },
  };
}
