import type { Server } from "node:http";
import type { Socket } from "node:net";

/** Closes the idle connections the reaper knows. */
export interface IdleReaper {
  /** Closes every connection with no request in flight, now. */
  closeIdle(): void;
}

/**
 * An idle timer per connection for node:http servers whose own keep-alive timer cannot express
 * IDLE_TIMEOUT: Bun's node:http runs on Bun's timers, capped at 255 s, and its
 * closeIdleConnections() leaves keep-alive connections open (docs/runtimes.md#bun-node-http-compatibility). A connection
 * is idle while no request on it is in flight; the timer starts when it opens and again when its
 * last response is done, and a new request stops it; an upgrade (a WebSocket) stops watching it.
 * `onIdle` is called before the close.
 */
export function reapIdleConnections(server: Server, idleTimeoutMs: number, onIdle: (socket: Socket) => void): IdleReaper {
  const inFlight = new Map<Socket, number>();
  const timers = new Map<Socket, ReturnType<typeof setTimeout>>();
  const arm = (socket: Socket) => {
    clearTimeout(timers.get(socket));
    if (idleTimeoutMs === 0) return;
    timers.set(
      socket,
      setTimeout(() => {
        if ((inFlight.get(socket) ?? 0) > 0 || socket.destroyed) return;
        onIdle(socket);
        socket.destroy();
      }, idleTimeoutMs),
    );
  };
  server.on("connection", (socket: Socket) => {
    inFlight.set(socket, 0);
    arm(socket);
    socket.once("close", () => {
      clearTimeout(timers.get(socket));
      timers.delete(socket);
      inFlight.delete(socket);
    });
  });
  // An upgraded socket is no longer HTTP: its WebSocket policy (pings) watches it, not this timer.
  server.on("upgrade", (_req, socket: Socket) => {
    clearTimeout(timers.get(socket));
    timers.delete(socket);
    inFlight.delete(socket);
  });
  server.on("request", (req, res) => {
    const socket = req.socket;
    clearTimeout(timers.get(socket));
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
    res.once("close", () => {
      if (!inFlight.has(socket)) return;
      const left = (inFlight.get(socket) ?? 1) - 1;
      inFlight.set(socket, left);
      if (left === 0 && !socket.destroyed) arm(socket);
    });
  });
  return {
    closeIdle() {
      for (const [socket, n] of inFlight) if (n === 0) socket.destroy();
    },
  };
}
