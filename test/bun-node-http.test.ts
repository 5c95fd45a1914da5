import { conformance } from "./_conformance.ts";

conformance("bun-node-http");
