import { conformance } from "./_conformance.ts";

conformance("deno-node-http");
