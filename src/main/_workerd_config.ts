/**
 * The Cloudflare worker's configuration from its bindings, in the entries' variables. What the
 * platform owns instead is in ./_workerd_platform.ts and docs/policy.md#cloudflare-workers-workerd.
 */
import type { CloudflareOptions } from "../../adapters/cloudflare/mod.ts";
import type { ConfigResult } from "../policy/config.ts";
import { EnvSchema, loadConfig } from "./_env.ts";
import { MAX_MESSAGE_OVER, PLATFORM_OWNED, WEBSUB_OUT_OF_SCOPE, WORKERD_LIMITS } from "./_workerd_platform.ts";

/**
 * Validates the worker's bindings with the entries' own schema (EnvSchema), after refusing every
 * variable the platform owns, each with its reason, and every `WEBSUB_*`; WEBSOCKET_MAX_MESSAGE
 * holds up to the platform's own limit, and is refused above it. Bindings that are not
 * the template's (a KV namespace, the app's own secrets) are left alone.
 */
export function loadCloudflareConfig(bindings: Record<string, unknown>): ConfigResult<CloudflareOptions> {
  const problems: string[] = [];
  const env: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(bindings)) {
    const shown = typeof value === "string" ? ` "${value}"` : "";
    if (Object.hasOwn(PLATFORM_OWNED, name)) problems.push(`${name}${shown} cannot be set on Cloudflare Workers: ${PLATFORM_OWNED[name]}`);
    // Never quoted: WEBSUB_SECRET is a secret.
    else if (name.startsWith("WEBSUB_")) problems.push(`${name} cannot be set on Cloudflare Workers: ${WEBSUB_OUT_OF_SCOPE}`);
    else if (Object.hasOwn(EnvSchema.entries, name)) {
      if (typeof value === "string") env[name] = value;
      else problems.push(`${name} is not a text binding: set it as a text variable (vars in wrangler.jsonc)`);
    }
  }
  // The entries' own reading of the variables into options, of which a worker takes its part.
  const result = loadConfig(env);
  if (!result.ok) problems.push(...result.problems);
  else if (result.config.websocketMaxMessageBytes > WORKERD_LIMITS.maxMessageBytes) {
    problems.push(`WEBSOCKET_MAX_MESSAGE "${env.WEBSOCKET_MAX_MESSAGE}" ${MAX_MESSAGE_OVER}`);
  }
  if (!result.ok || problems.length > 0) return { ok: false, problems };
  const { bodyLimitBytes, websocketMaxMessageBytes, websocketMaxBufferedBytes, sseHeartbeatMs } = result.config;
  return { ok: true, config: { bodyLimitBytes, websocketMaxMessageBytes, websocketMaxBufferedBytes, sseHeartbeatMs } };
}
