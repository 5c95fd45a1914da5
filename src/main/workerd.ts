/**
 * Runs the module worker on local workerd: `npm run start:workerd` (src/main/cloudflare.ts, the example
 * app), or `npm run start:workerd -- path/to/app.ts`. Validates PORT and HOST (its own: they make the
 * socket) and the worker's bindings as the worker would, bundles, starts workerd, and prints the
 * same `listening` line as the other entries, with the port workerd reports back.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import { displayUrl } from "../../adapters/_types.ts";
import { EnvSchema, loadConfig } from "./_env.ts";
import { createLogger } from "../policy/log.ts";
import { loadCloudflareConfig } from "./_workerd_config.ts";
import { bundleWorker, WORKERD, writeWorkerdConfig } from "./_workerd_build.ts";
import { COMPATIBILITY_DATE, PLATFORM_OWNED } from "./_workerd_platform.ts";

/** Exit code for a configuration the worker cannot run with, before anything is bound. */
const EXIT_CONFIG = 2;
/** Exit code for a worker that could not start (it does not bundle, workerd cannot bind). */
const EXIT_START = 1;

/**
 * Said after Bun's own message when a polyfill lacks what the app imports: `node:*` is left to
 * workerd (./_workerd_build.ts), so only a built-in imported by its bare name meets a polyfill.
 */
const BARE_BUILTIN_HINT =
  `Import Node's built-ins with the node: prefix (import process from "node:process"): workerd provides those, and Bun's browser polyfills lack parts of them (docs/runtimes.md#workerds-nodejs-built-ins)`;

/**
 * The variables that become the worker's bindings: the template's own, less PORT and HOST. Passed
 * on even when the platform owns them, so that the worker's own refusal names them.
 */
function bindingNames(env: NodeJS.ProcessEnv): string[] {
  const known = new Set([...Object.keys(EnvSchema.entries), ...Object.keys(PLATFORM_OWNED)]);
  return Object.keys(env).filter((name) =>
    (known.has(name) || name.startsWith("WEBSUB_")) && name !== "PORT" && name !== "HOST" && env[name]?.trim()
  );
}

function exit(code: number, lines: readonly string[]): never {
  for (const line of lines) process.stderr.write(`${line}\n`);
  process.exit(code);
}

function run(): void {
  const env = process.env;
  // A deployed worker can only answer 500 to a bad binding; here it can still refuse to start.
  // Loopback unless HOST says otherwise: this is a local run of what Cloudflare serves (as `wrangler dev`).
  const address = loadConfig({ PORT: env.PORT, HOST: env.HOST?.trim() ? env.HOST : "127.0.0.1" });
  const bindings = bindingNames(env);
  const worker = loadCloudflareConfig(Object.fromEntries(bindings.map((name) => [name, env[name]])));
  const problems = [...(address.ok ? [] : address.problems), ...(worker.ok ? [] : worker.problems)];
  if (!address.ok || problems.length > 0) exit(EXIT_CONFIG, problems);
  const { host, port } = address.config;

  const dir = mkdtempSync(join(tmpdir(), "hono-workerd-"));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    bundleWorker(dir, process.argv[2]);
  } catch (error) {
    cleanup();
    const output = (error as { stderr?: Buffer }).stderr?.toString().trim();
    const hint = output?.includes("Browser polyfill for module") ? [BARE_BUILTIN_HINT] : [];
    exit(EXIT_START, [`Cannot bundle the worker: ${output || (error as Error).message}`, ...hint]);
  }
  const config = writeWorkerdConfig(dir, host, port, bindings);

  const logger = createLogger((line) => console.log(line), { runtime: "workerd" });
  // stdout and stderr are workerd's own: the worker's console.log lines are the JSON events.
  const child = spawn(WORKERD.default, ["serve", config, "--control-fd=3"], { stdio: ["ignore", "inherit", "inherit", "pipe"] });
  let listening = false;
  createInterface({ input: child.stdio[3] as NodeJS.ReadableStream }).on("line", (line) => {
    let message: { event?: string; port?: number };
    try {
      message = JSON.parse(line);
    } catch {
      return; // A control message of a later workerd's that this runner does not know.
    }
    if (message.event !== "listen" || listening) return;
    listening = true;
    // workerd has read the config and the bundle by now: nothing is left behind by a SIGKILL later.
    cleanup();
    logger.info("listening", {
      runtime: "workerd",
      // As the other entries say it: the address bound, and a URL a client on this machine can use.
      address: host,
      port: message.port,
      url: displayUrl(host, message.port!),
      // workerd's: the process that holds the socket and runs the worker.
      pid: child.pid,
      engine: "workerd",
      workerd: WORKERD.version,
      compatibilityDate: COMPATIBILITY_DATE,
    });
  });
  // workerd drains on SIGTERM itself, with no deadline (docs/runtimes.md#workerd-drains-on-sigterm-with-no-deadline):
  // the signal is passed on, and this process exits with workerd.
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => child.kill(signal));
  // However this process ends, workerd does not outlive it.
  process.on("exit", () => child.kill("SIGKILL"));
  child.on("exit", (code, signal) => {
    cleanup();
    if (!listening) exit(EXIT_START, [`workerd exited before listening on ${host}:${port} (${signal ?? `code ${code}`})`]);
    process.exit(code ?? 1);
  });
}

run();
