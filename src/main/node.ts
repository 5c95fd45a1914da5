// Starts the app on Node: `npm start`. Reads the environment, serves, handles signals.
import module from "node:module";

// Node compiles every module, and strips the types of every .ts file, at each start; its compile
// cache keeps that work from one start to the next (docs/runtimes.md#node-compile-cache). It
// applies to modules loaded after it is enabled, hence the dynamic imports.
module.enableCompileCache?.();
const [{ serve }, { main }] = await Promise.all([import("../../adapters/node/mod.ts"), import("./_main.ts")]);

await main("node", serve);
// Written now rather than at exit: a server is often stopped by a signal that skips the exit hooks.
module.flushCompileCache?.();
