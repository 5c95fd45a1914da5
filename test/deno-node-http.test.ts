import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";
import { longLived } from "./_long_lived.ts";

conformance("deno-node-http");
hardening("deno-node-http");
longLived("deno-node-http");
