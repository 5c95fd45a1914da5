/**
 * Headless Chromium (Debian's `chromium`), driven over the DevTools protocol: open a page, evaluate
 * an expression in it. For the tests that need a real browser's EventSource and WebSocket.
 */
import { spawn, type Subprocess } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

/** Chromium from PATH, or where Debian puts it; undefined when it is not installed. */
export const CHROMIUM = Bun.which("chromium") ?? Bun.which("chromium-browser") ?? undefined;

export interface Browser {
  /** Opens `url` in a new page. */
  open(url: string): Promise<Page>;
  close(): Promise<void>;
}

export interface Page {
  /** The value of `expression` in the page (JSON-serializable). */
  evaluate<T>(expression: string): Promise<T>;
}

/** Starts headless Chromium with a profile of its own on a DevTools port it picks. */
export async function launchChromium(): Promise<Browser> {
  if (!CHROMIUM) throw new Error("chromium is not installed: apt-get install chromium");
  const profile = mkdtempSync(join(tmpdir(), "chromium-profile-"));
  const proc: Subprocess = spawn([
    CHROMIUM,
    "--headless=new",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
    `--user-data-dir=${profile}`,
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--disable-extensions",
    "--disable-background-networking",
    // Root (CI's container) has no sandbox to drop into.
    ...(process.getuid?.() === 0 ? ["--no-sandbox"] : []),
    "about:blank",
  ], { stdout: "ignore", stderr: "ignore" });
  const close = async () => {
    proc.kill("SIGKILL");
    await Promise.race([proc.exited, Bun.sleep(5_000)]);
    rmSync(profile, { recursive: true, force: true });
  };
  try {
    const port = await devToolsPort(profile, proc);
    const sockets: WebSocket[] = [];
    return {
      async open(url) {
        const target = await (await fetch(`http://127.0.0.1:${port}/json/new?${encodeURI(url)}`, { method: "PUT" })).json() as {
          webSocketDebuggerUrl: string;
        };
        const socket = await connectDevTools(target.webSocketDebuggerUrl);
        sockets.push(socket);
        return { evaluate: (expression) => evaluate(socket, expression) };
      },
      async close() {
        for (const socket of sockets) socket.close();
        await close();
      },
    };
  } catch (error) {
    await close();
    throw error;
  }
}

/** The DevTools port Chromium writes to its profile once it listens (bounded: 15 s). */
async function devToolsPort(profile: string, proc: Subprocess): Promise<number> {
  const file = join(profile, "DevToolsActivePort");
  for (let waited = 0; waited < 15_000; waited += 50) {
    if (existsSync(file)) {
      const [port] = readFileSync(file, "utf8").split("\n");
      if (port && /^\d+$/.test(port)) return Number(port);
    }
    if (proc.exitCode !== null) throw new Error(`chromium exited with ${proc.exitCode} before listening`);
    await Bun.sleep(50);
  }
  throw new Error("chromium wrote no DevToolsActivePort within 15 s");
}

function connectDevTools(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.onopen = () => resolve(socket);
    socket.onerror = () => reject(new Error(`cannot connect to chromium's DevTools at ${url}`));
  });
}

let nextId = 1;

/** Runtime.evaluate of `expression`, its value returned (bounded: 5 s). */
function evaluate<T>(socket: WebSocket, expression: string): Promise<T> {
  const id = nextId++;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.removeEventListener("message", onMessage);
      reject(new Error(`no answer from chromium to ${expression} within 5 s`));
    }, 5_000);
    const onMessage = (event: MessageEvent) => {
      const message = JSON.parse(String(event.data)) as {
        id?: number;
        result?: { result?: { value?: T }; exceptionDetails?: { text: string } };
        error?: { message: string };
      };
      if (message.id !== id) return;
      clearTimeout(timer);
      socket.removeEventListener("message", onMessage);
      if (message.error) reject(new Error(message.error.message));
      else if (message.result?.exceptionDetails) reject(new Error(message.result.exceptionDetails.text));
      else resolve(message.result?.result?.value as T);
    };
    socket.addEventListener("message", onMessage);
    socket.send(JSON.stringify({ id, method: "Runtime.evaluate", params: { expression, returnByValue: true } }));
  });
}
