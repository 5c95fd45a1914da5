import { HTTPException } from "hono/http-exception";
import { isTrackedStream } from "../src/lifecycle.ts";
import { bunIdleSeconds, rearmBeforeEnd } from "./_bun_idle.ts";
import { main } from "./_main.ts";
import { withBodyDeadline } from "./_request_deadline.ts";
import { displayUrl, type Serve } from "./_types.ts";

/** Serves the app with Bun.serve, keeping Bun's one idle timer off while a request is at work. */
export const serve: Serve = async (fetch, config, logger) => {
  const idleSeconds = bunIdleSeconds(config.idleTimeoutMs);
  const server = Bun.serve({
    hostname: config.host,
    port: config.port,
    // Also what a new request resets the connection's timer to, before fetch turns it off.
    idleTimeout: idleSeconds,
    fetch(raw, server) {
      // Bun's idle timer also kills slow handlers and silent streams: off while we work.
      server.timeout(raw, 0);
      const request = withBodyDeadline(raw, config.requestTimeoutMs, () => {});
      const rearm = () => server.timeout(raw, idleSeconds);
      const answer = (response: Response) => {
        // Only streams that go through the lifecycle helper can be told apart: reading
        // `response.body` or `response.headers` of a string body makes Bun drop the content type
        // it would infer (text/plain becomes application/octet-stream).
        if (isTrackedStream(response) && response.body !== null) {
          const body = rearmBeforeEnd(response.body, rearm);
          return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
        }
        rearm();
        return response;
      };
      const result = fetch(request, server);
      return result instanceof Promise ? result.then(answer) : answer(result);
    },
    error(error) {
      if (error instanceof HTTPException) return error.getResponse();
      logger.error("handler_error", { error });
      return Response.json({ error: "internal_error", message: "The server failed to handle this request" }, { status: 500 });
    },
  });
  return {
    url: displayUrl(config.host, server.port ?? config.port),
    engine: "Bun.serve",
    inFlight: () => server.pendingRequests,
    drain: () => server.stop(),
    cut() {
      const cut = server.pendingRequests;
      void server.stop(true);
      return cut;
    },
  };
};

await main("bun", serve);
