import { conformance } from "./_conformance.ts";
import { hardening } from "./_hardening.ts";

conformance("node-http");
hardening("node-http");
