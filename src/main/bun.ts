// Starts the app on Bun: `npm run start:bun`. Reads the environment, serves, handles signals.
import { serve } from "../../adapters/bun/mod.ts";
import { main } from "./_main.ts";

await main("bun", serve);
