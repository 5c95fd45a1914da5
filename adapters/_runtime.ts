import type { Runtime } from "../src/policy/types.ts";

const NAMES: Record<Runtime, string> = { node: "Node", bun: "Bun", deno: "Deno" };

/** The runtime this process runs on: Bun and Deno by their globals, Node otherwise. */
export function currentRuntime(): Runtime {
  const globals = globalThis as { Bun?: unknown; Deno?: unknown };
  if (globals.Bun !== undefined) return "bun";
  if (globals.Deno !== undefined) return "deno";
  return "node";
}

/**
 * Throws, when the adapter for `runtime` is imported on another one, an error naming the adapter
 * to import instead. Bun and Deno run much of Node's API, so the wrong adapter would otherwise
 * start, on an engine with other limits than the runtime's own and under the wrong name.
 */
export function requireRuntime(runtime: Runtime): void {
  const actual = currentRuntime();
  if (actual !== runtime) {
    throw new Error(
      `adapters/${runtime}/mod.ts is for ${NAMES[runtime]}; on ${NAMES[actual]}, import serve from adapters/${actual}/mod.ts`,
    );
  }
}
