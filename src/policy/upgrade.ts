/**
 * The mark on the response `upgradeWebSocket` answers with: the request path carries it like any
 * response, and the engine that gets it performs the upgrade (src/policy/websocket.ts). Its own
 * module so the lifecycle can count an upgrade as a 101 without importing the WebSocket policy.
 */
import type { WSEvents } from "hono/ws";

/** What the app's upgrade asked for: its events, for the engine to attach to the socket it makes. */
export interface Upgrade {
  readonly events: WSEvents<unknown>;
  readonly request: Request;
}

/** The status of the marked response: what an engine that cannot upgrade sends as it is. */
export const UPGRADE_STATUS = 501;
const UPGRADES = new WeakMap<Response, Upgrade>();

/**
 * The WebSocket upgrade the app asked for with `response`, or undefined. Engines ask only about a
 * 501, so a response of any other status costs nothing more than the comparison.
 */
export function upgradeOf(response: Response): Upgrade | undefined {
  return response.status === UPGRADE_STATUS ? UPGRADES.get(response) : undefined;
}

/** Marks `response` as the upgrade `upgrade` asks for. */
export function markUpgrade(response: Response, upgrade: Upgrade): void {
  UPGRADES.set(response, upgrade);
}

/** The status to count for `response`: 101 for an upgrade, which the engine turns into one. */
export function countedStatus(response: Response): number {
  const status = response.status;
  return status === UPGRADE_STATUS && UPGRADES.has(response) ? 101 : status;
}

/**
 * The upgrade an app asked for with Hono's own `upgradeWebSocket` from `hono/bun`, which calls
 * `c.env.upgrade(request, { data: { events, url, protocol } })` (Bun's `server.upgrade`) itself:
 * undefined for data of any other shape. Engines that meet such a call (Bun.serve's socket data,
 * the `upgrade` a node:http engine offers an upgrade request's env) carry it like their own.
 */
export function honoBunUpgrade(data: unknown, request: Request): Upgrade | undefined {
  const hono = data as { events?: unknown; url?: unknown } | null | undefined;
  if (typeof hono?.events !== "object" || hono.events === null || !(hono.url instanceof URL)) return undefined;
  return { events: hono.events as WSEvents<unknown>, request };
}
