import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";

conformance("bun-node-http");
hardening("bun-node-http");
