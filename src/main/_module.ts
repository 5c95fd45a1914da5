import type { ConfigResult } from "../policy/config.ts";
import type { AppContext, FetchHandler } from "../policy/types.ts";

/** What an optional module adds to the server once enabled: routes under a path, and work to start once listening. */
export interface Mounted {
  /** The path its routes live under, ending in `/`, e.g. `/websub/`. */
  readonly prefix: string;
  readonly fetch: FetchHandler;
  /** Called once the server listens, with its URL. */
  listening?(url: string): void;
  /** Called once the server has drained, before the process exits: stop work, release files and sockets. */
  close?(): Promise<void>;
}

/**
 * An optional module (src/main/modules.ts lists them): it reads its own variables, and is off
 * (no routes, nothing started) unless they enable it.
 */
export interface Module<C> {
  /** Validates this module's variables: its configuration, null when they leave it off, or the problems (exit 2). */
  configure(env: Record<string, string | undefined>): ConfigResult<C | null>;
  /** Makes the module's routes and work; a rejection stops the server at startup (exit 1) with its message. */
  create(config: C, context: AppContext): Mounted | Promise<Mounted>;
  /** Why the module, configured so, cannot run in several processes at once (WORKERS above 1), if it cannot. */
  singleProcess?(config: C): string | undefined;
}
