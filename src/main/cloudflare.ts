// Serves the app as a Cloudflare Workers module worker: `npm run start:workerd` runs it on local
// workerd, `npx wrangler deploy` (wrangler.jsonc) on Cloudflare's network. It reads its bindings,
// never a process, signals or sockets: the platform owns those (docs/policy.md#cloudflare-workers-workerd).
import createApp from "../app.ts";
import { worker } from "../../adapters/cloudflare/mod.ts";
import { loadCloudflareConfig } from "./_workerd_config.ts";

export default worker(createApp, loadCloudflareConfig);
