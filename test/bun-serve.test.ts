import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";

conformance("bun-serve");
hardening("bun-serve");
