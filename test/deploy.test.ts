import { describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import { readFileSync } from "node:fs";
import { completeResponses, get } from "../harness/http.ts";
import { ROOT, ServerProcess } from "../harness/process.ts";
import { connect } from "../harness/raw_client.ts";
import { FIXTURE_APP, PROJECT_PATH } from "../harness/servers.ts";
import { using } from "../harness/wait.ts";
import { operationalRoutes } from "../src/main/_routes.ts";
import { DEFAULTS, parseDurationMs } from "../src/policy/config.ts";
import { createRegistry } from "../src/policy/metrics.ts";

/**
 * deploy/: the images' commands run as PID 1, as a container runtime runs them, and the Kubernetes
 * manifest's timing relations and probes hold against what the server does.
 */

/** A Dockerfile's exec-form CMD. */
function imageCommand(dockerfile: string): string[] {
  const line = readFileSync(`${ROOT}deploy/${dockerfile}`, "utf8").split("\n").find((l) => l.startsWith("CMD "));
  if (!line) throw new Error(`deploy/${dockerfile} has no CMD`);
  const command = JSON.parse(line.slice(4));
  if (!Array.isArray(command)) throw new Error(`deploy/${dockerfile}: CMD is not in exec form`);
  return command as string[];
}

interface Container {
  env?: Array<{ name: string; value: string }>;
  readinessProbe?: { httpGet?: { path: string } };
  livenessProbe?: { httpGet?: { path: string } };
  ports?: Array<{ name: string; containerPort: number }>;
}

describe("deploy/kubernetes.yaml", () => {
  // deno-lint-ignore no-explicit-any -- a manifest is whatever YAML it holds; the tests check its shape
  const documents = Bun.YAML.parse(readFileSync(`${ROOT}deploy/kubernetes.yaml`, "utf8")) as Array<Record<string, any>>;
  const deployment = documents.find((d) => d.kind === "Deployment")!;
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0] as Container;
  const env = (name: string) => container.env?.find((e) => e.name === name)?.value;
  const ms = (name: string, fallback: number) => (env(name) === undefined ? fallback : parseDurationMs(env(name)!));

  test("the grace period outlasts SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT, so the kubelet's SIGKILL never cuts a drain short", () => {
    const drainMs = ms("SHUTDOWN_DELAY", 0) + ms("SHUTDOWN_TIMEOUT", DEFAULTS.shutdownTimeoutMs);
    expect(pod.terminationGracePeriodSeconds * 1_000).toBeGreaterThan(drainMs);
    // A delay is what lets the endpoint removal catch up with the SIGTERM.
    expect(ms("SHUTDOWN_DELAY", 0)).toBeGreaterThan(0);
  });

  test("readiness probes /readyz, liveness /healthz, on the port the server listens on", () => {
    expect(container.readinessProbe?.httpGet?.path).toBe("/readyz");
    expect(container.livenessProbe?.httpGet?.path).toBe("/healthz");
    // Both are routes the entry points serve in front of any app.
    const served = operationalRoutes(createRegistry(), () => true).map(([path]) => path);
    expect(served).toContain(container.readinessProbe!.httpGet!.path);
    expect(served).toContain(container.livenessProbe!.httpGet!.path);
    expect(container.ports?.[0]?.containerPort).toBe(Number(env("PORT") ?? DEFAULTS.port));
    expect(pod.securityContext.runAsNonRoot).toBe(true);
  });

  test("the Service selects the Deployment's pods", () => {
    const service = documents.find((d) => d.kind === "Service")!;
    expect(service.spec.selector).toEqual(deployment.spec.template.metadata.labels);
  });
});

const canUnshare = spawnSync(["unshare", "--pid", "--fork", "--mount-proc", "true"]).exitCode === 0;

describe("the images' commands as PID 1", () => {
  for (const dockerfile of ["Dockerfile.node", "Dockerfile.bun", "Dockerfile.deno"]) {
    const name = `${dockerfile}: the CMD as PID 1 with WORKERS=2 serves, and on SIGTERM finishes the request in flight and exits 0`;
    if (!canUnshare) {
      test.skip(`${name} (skipped: unshare --pid --fork --mount-proc is not permitted here; it needs root)`, () => {});
      continue;
    }
    test.concurrent(name, () =>
      using(async (defer) => {
        // The image's command, in a PID namespace of its own (the container's), serving the suites'
        // fixture rather than the example app, with the project's pinned runtimes first on PATH.
        const command = ["unshare", "--pid", "--fork", "--mount-proc", ...imageCommand(dockerfile), FIXTURE_APP];
        const server = new ServerProcess(command, {
          ...process.env,
          PATH: PROJECT_PATH,
          PORT: "0",
          HOST: "127.0.0.1",
          WORKERS: "2",
        } as Record<string, string>);
        defer(() => server.kill());
        const listening = await server.waitForEvent("listening", 15_000);
        // The supervisor is PID 1; its workers are its children, which it reaps.
        expect(listening.pid).toBe(1);
        expect(listening.workers).toHaveLength(2);
        const port = Number(new URL(String(listening.url)).port);
        const busy = await connect(port);
        defer(() => busy.destroy());
        busy.write(get("/slow?ms=800"));
        await busy.waitFor((d) => d.includes("Hello World"), 2_000, "the first chunk");

        // SIGTERM from outside the namespace, to the process that is PID 1 inside it: only a
        // signal it installed a handler for reaches it at all.
        const children = readFileSync(`/proc/${server.proc.pid}/task/${server.proc.pid}/children`, "utf8").trim();
        const pid1 = Number(children.split(" ")[0]);
        expect(pid1).toBeGreaterThan(1); // never 0: that would signal this test's own process group
        process.kill(pid1, "SIGTERM");
        await busy.waitFor((d) => completeResponses(d) === 1, 3_000, "the in-flight response");
        expect(await server.exitCode(5_000)).toBe(0);
        const completes = server.named("shutdown_complete");
        expect(completes.filter((e) => e.worker !== undefined).map((e) => e.cut)).toEqual([0, 0]);
        expect(completes.filter((e) => e.worker === undefined)).toMatchObject([{ signal: "SIGTERM", killed: 0 }]);
        expect(server.nonJsonLines).toEqual([]);
      }), 30_000);
  }
});
