// Starts the app on Deno: `npm run start:deno`. Reads the environment, serves, handles signals.
import { serve } from "../../adapters/deno/mod.ts";
import { main } from "./_main.ts";

await main("deno", serve);
