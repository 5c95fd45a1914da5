import { createServer } from "node:net";

/**
 * A port on 127.0.0.1 that was free a moment ago: bound on port 0, then released. Only for
 * servers that cannot bind port 0 and report their port themselves (nginx, redis-server: to it
 * `--port 0` means no TCP listener); another process may take the port in between, so callers retry.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
