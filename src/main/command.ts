// Runs an optional module's command line: `node src/main/command.ts websub list`, what
// `npm run websub -- list` runs. Like the server's entries, the one place that reads the
// environment and exits; the module's command (Module.command) is given both.
import process from "node:process";
import type { Module } from "../policy/types.ts";
import * as modules from "./modules.ts";

const print = (line: object) => console.log(JSON.stringify(line));
const [name = "", ...args] = process.argv.slice(2);
const installed = modules as Record<string, Module<unknown>>;
const command = Object.hasOwn(installed, name) ? installed[name]!.command : undefined;
if (command === undefined) {
  const names = Object.keys(installed).filter((key) => installed[key]!.command !== undefined);
  print({
    error: "usage",
    message: `no module command "${name}": the installed ones are ${names.join(", ") || "none"} (src/main/modules.ts)`,
  });
  process.exit(2);
}
process.exit(await command(args, process.env, print));
