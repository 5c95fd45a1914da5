import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";
import { longLived } from "./_long_lived.ts";

conformance("node-http");
hardening("node-http");
longLived("node-http");
