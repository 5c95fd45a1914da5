import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";

conformance("deno-node-http");
hardening("deno-node-http");
