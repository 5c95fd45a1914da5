/**
 * The helpers for long-lived connections, one import on every runtime: `upgradeWebSocket` with
 * Hono's signature, and `streamSSE` with Hono's shape, each under the policy of the server that
 * carries it (docs/policy.md#long-lived-connections).
 */
export { type CloseReason, PolicyWSContext, upgradeWebSocket } from "./websocket.ts";
export { type SSEStream, streamSSE } from "./sse.ts";
