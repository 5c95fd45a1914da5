// Starts the app on Node: `npm start`. Reads the environment, serves, handles signals.
import { serve } from "../../adapters/node.ts";
import { main } from "./_main.ts";

await main("node", serve);
