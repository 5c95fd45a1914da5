import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";

conformance("deno-per-connection");
hardening("deno-per-connection");
