import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { fetchOnce } from "../harness/http.ts";
import { ROOT, ServerProcess } from "../harness/process.ts";
import { using } from "../harness/wait.ts";

const ENTRY = "docs/examples/own-entry.ts";

test("the README shows the own-entry example exactly as the file that this test runs", () => {
  const readme = readFileSync(`${ROOT}README.md`, "utf8");
  const block = new RegExp(`<!-- ${ENTRY} -->\\n\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme);
  expect(block?.[1]).toBe(readFileSync(`${ROOT}${ENTRY}`, "utf8"));
});

test(
  "a user's own entry file serves its own app through serve() with the whole policy, and shuts down on SIGTERM",
  () =>
    using(async (defer) => {
      // The command the file's first line gives.
      const server = new ServerProcess(
        ["npm", "run", "--silent", "node", "--", ENTRY],
        { ...process.env, PORT: "0" } as Record<string, string>,
      );
      defer(() => server.kill());
      const listening = await server.waitForEvent("listening", 15_000);
      const url = String(listening.url);
      // What serve() adds by itself, with no entry point of ours around it.
      expect(listening).toMatchObject({ runtime: "node", engine: "node-http", idleTimeoutMs: 900_000, maxConnectionsFrom: "fd limit" });
      expect(await (await fetchOnce(url)).text()).toBe("Hello from my app");
      expect(await (await fetchOnce(`${url}/users/7`)).json()).toEqual({ id: "7" });
      server.signal("SIGTERM");
      expect(await server.exitCode(5_000)).toBe(0);
      expect(server.named("shutdown_complete")).toMatchObject([{ signal: "SIGTERM", cut: 0 }]);
      expect(server.nonJsonLines).toEqual([]);
    }),
  30_000,
);
