import { spawn } from "bun";
import { expect } from "bun:test";
import { ROOT } from "../../harness/process.ts";
import { PROJECT_PATH } from "../../harness/servers.ts";
import { within } from "../../harness/wait.ts";

/** `npm run websub -- ...args` with `env`, as a user runs it: its JSON lines and exit code; nothing on stderr. */
export async function websubCli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; lines: Array<Record<string, unknown>> }> {
  const child = spawn(["npm", "run", "--silent", "websub", "--", ...args], {
    cwd: ROOT,
    env: { ...process.env, PATH: PROJECT_PATH, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  try {
    const [out, err, code] = await within(
      Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]),
      15_000,
      `npm run websub -- ${args.join(" ")}`,
    );
    expect(err).toBe("");
    return { code, lines: out.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line)) };
  } finally {
    child.kill("SIGKILL");
  }
}
