/**
 * What running a module worker on local workerd takes: the worker bundled into one ES module
 * (workerd resolves neither node_modules nor TypeScript; Bun, a devDependency, bundles it) and a
 * workerd config around it. Used by `npm run start:workerd` (./workerd.ts) and the workerd suite.
 */
import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { COMPATIBILITY_DATE } from "./_workerd_platform.ts";

/** The project's root, where node_modules is. */
const ROOT = new URL("../../", import.meta.url).pathname;

/** workerd's npm package (a devDependency): the binary for this platform, and its version. */
export const WORKERD = createRequire(import.meta.url)("workerd") as { default: string; version: string };

/**
 * How Bun bundles a worker for workerd. `--target=browser` bundles for a web runtime, as workerd
 * is, but swaps Node's built-ins for Bun's browser polyfills (whose `node:process` has no default
 * export): `node:*` is left external, for workerd's own modules, which the compatibility date
 * enables; a `require()` of one in a CommonJS dependency goes through the banner's `require`
 * (workerd's `node:module`). A bare `process` or `buffer` still gets the polyfill: Bun keeps no
 * bare built-in external for the browser. Measured: docs/runtimes.md#workerds-nodejs-built-ins.
 */
export const BUNDLE_ARGS: readonly string[] = [
  "--target=browser",
  "--format=esm",
  "--external=node:*",
  '--banner=import { createRequire as __workerdCreateRequire } from "node:module"; const require = __workerdCreateRequire(import.meta.url);',
];

/**
 * Bundles the module worker into `dir`/worker.js: src/main/cloudflare.ts (the example app), or, given
 * `appPath`, a worker serving that app module's default export the same way.
 */
export function bundleWorker(dir: string, appPath?: string): void {
  let entry = join(ROOT, "src/main/cloudflare.ts");
  if (appPath) {
    entry = join(dir, "entry.ts");
    const [app, adapter, config] = [resolve(appPath), join(ROOT, "adapters/cloudflare/mod.ts"), join(ROOT, "src/main/_workerd_config.ts")]
      .map((path) => JSON.stringify(path));
    writeFileSync(
      entry,
      `import made from ${app};\nimport { worker } from ${adapter};\nimport { loadCloudflareConfig } from ${config};\nexport default worker(made, loadCloudflareConfig);\n`,
    );
  }
  const bun = existsSync(join(ROOT, "node_modules/.bin/bun")) ? join(ROOT, "node_modules/.bin/bun") : "bun";
  execFileSync(bun, ["build", entry, ...BUNDLE_ARGS, `--outfile=${join(dir, "worker.js")}`], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "pipe"],
  });
}

/**
 * Writes `dir`/config.capnp: the worker in `dir`/worker.js on one HTTP socket at `host`:`port`,
 * with a text binding for each name in `bindings`, read from workerd's own environment
 * (`fromEnvironment`: no value is written into the file, nor needs escaping there). Port 0 is
 * passed on: workerd binds a free port and reports it on its control descriptor (`--control-fd`).
 * No `compatibilityFlags`: the date enables `nodejs_compat`, and the pinned workerd warns at every
 * start when the flag is given as well (docs/runtimes.md#workerds-nodejs-built-ins).
 */
export function writeWorkerdConfig(dir: string, host: string, port: number, bindings: readonly string[]): string {
  const address = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const list = bindings.map((name) => `(name = "${name}", fromEnvironment = "${name}")`).join(", ");
  const path = join(dir, "config.capnp");
  writeFileSync(
    path,
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "app", worker = .worker)],
  sockets = [(name = "http", address = "${address}", http = (), service = "app")],
);
const worker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  compatibilityDate = "${COMPATIBILITY_DATE}",
  bindings = [${list}],
);
`,
  );
  return path;
}
