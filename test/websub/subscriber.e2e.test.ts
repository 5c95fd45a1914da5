import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fetchOnce, metric } from "../../harness/http.ts";
import { startServer } from "../../harness/servers.ts";
import { using, within } from "../../harness/wait.ts";
import type { Engine } from "../../src/policy/types.ts";
import { HUB_TOPIC, startHub } from "./_hub.ts";

const SECRET = "e2e-secret";
const DELIVERIES = 20;

/** The module as the entry points mount it, against a real hub simulator, on each runtime's default engine. */
for (const engine of ["node-http", "bun-serve", "deno-per-connection"] as const satisfies readonly Engine[]) {
  describe(`websub on ${engine}`, () => {
    test.concurrent(
      "subscribes at startup, confirms the hub's verification, and acknowledges signed deliveries on keep-alive connections",
      () =>
        using(async (defer) => {
          const hub = await startHub();
          defer(() => hub.close());
          const dir = mkdtempSync(join(tmpdir(), "websub-e2e-"));
          defer(() => rmSync(dir, { recursive: true, force: true }));
          const store = join(dir, "websub.sqlite");
          const server = await startServer(engine, {
            WEBSUB_HUB: hub.url,
            WEBSUB_TOPIC: HUB_TOPIC,
            WEBSUB_SECRET: SECRET,
            WEBSUB_STORE: store,
          });
          defer(() => server.kill());
          const callback = await within(hub.verified, 5_000, "verification of intent");
          expect(callback).toStartWith(`${server.url}/websub/`);
          const requested = await server.waitForEvent("websub_subscribe_requested", 2_000);
          expect(requested.status).toBe(202);

          const delivered = await hub.deliver(DELIVERIES);
          expect(new Set(delivered.statuses)).toEqual(new Set([202]));
          await server.waitForEvent("content_received", 2_000, () => server.named("content_received").length === DELIVERIES);
          const metrics = await (await fetchOnce(`${server.url}/metrics`)).text();
          expect(metric(metrics, 'websub_deliveries_total{result="accepted"}')).toBe(DELIVERIES);
          expect(metric(metrics, 'websub_deliveries_total{result="signature_rejected"}')).toBe(0);
          expect(server.nonJsonLines).toEqual([]);
        }),
      30_000,
    );
  });
}

describe("websub off", () => {
  test.concurrent(
    "without WEBSUB_HUB and WEBSUB_TOPIC the module mounts nothing and counts nothing",
    () =>
      using(async (defer) => {
        const server = await startServer("node-http", {});
        defer(() => server.kill());
        const callback = await fetchOnce(`${server.url}/websub/anything?hub.mode=subscribe`);
        expect(callback.status).toBe(404);
        const metrics = await (await fetchOnce(`${server.url}/metrics`)).text();
        expect(metrics).not.toContain("websub_");
      }),
    30_000,
  );
});
