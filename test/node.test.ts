import { conformance } from "./_conformance.ts";

conformance("node");
