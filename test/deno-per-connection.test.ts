import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";
import { longLived } from "./_long_lived.ts";

conformance("deno-per-connection");
hardening("deno-per-connection");
longLived("deno-per-connection");
