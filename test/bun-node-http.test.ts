import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";
import { longLived } from "./_long_lived.ts";

conformance("bun-node-http");
hardening("bun-node-http");
longLived("bun-node-http");
