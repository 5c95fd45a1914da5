import { describe, expect, test } from "bun:test";
import { rejectionOf, startTopicServer, type TopicServer, withTopicServer } from "./_topic_server.ts";
import { discover } from "../../src/websub/discovery.ts";
import { backoffMs, HubRequestError, postToHub, retryable } from "../../src/websub/hub_client.ts";

const TIMEOUT_MS = 2_000;
const TEST_MS = 10_000;
const SLACK_MS = 450;
const SECRET = "s3cret-Value/with+chars&=";

function subscribeForm(topic: string): URLSearchParams {
  return new URLSearchParams({
    "hub.mode": "subscribe",
    "hub.topic": topic,
    "hub.callback": "http://127.0.0.1:1/websub/abc",
    "hub.secret": SECRET,
    "hub.lease_seconds": "3600",
  });
}

const failure = (promise: Promise<unknown>) => rejectionOf(promise, HubRequestError);
const withServer = withTopicServer;

function expectNoSecret(error: HubRequestError): void {
  for (const form of [SECRET, encodeURIComponent(SECRET), new URLSearchParams({ s: SECRET }).toString().slice(2)]) {
    expect(error.message).not.toContain(form);
    expect(String(error)).not.toContain(form);
  }
}

describe("postToHub: websub.rocks hub redirects (203, 204)", () => {
  /** POSTs to `hub` and checks that the form arrived unchanged at the hub's new place, after one `status` redirect. */
  async function subscribesThroughRedirect(server: TopicServer, hub: string, status: number): Promise<void> {
    const form = subscribeForm(`${server.url}/blog/203`);
    const answer = await postToHub(hub, form, { timeoutMs: TIMEOUT_MS });
    expect(answer).toEqual({ status: 202, hub: `${server.url}/hub/final?from=${status}`, body: "Subscription request accepted" });
    expect(server.hubPosts).toEqual([
      { path: `/hub/final?from=${status}`, method: "POST", contentType: "application/x-www-form-urlencoded", body: form.toString() },
    ]);
    const posts = server.requests.filter((r) => r.method === "POST").map((r) => r.path);
    expect(posts).toEqual([new URL(hub).pathname, `/hub/final?from=${status}`]);
  }

  test(
    "203: re-POSTs the same form to the new location of a hub that answers 302",
    withServer(async (server) => {
      const { hubs } = await discover(`${server.url}/blog/203`, { timeoutMs: TIMEOUT_MS });
      expect(hubs).toEqual([`${server.url}/hub/redirect/302`]);
      await subscribesThroughRedirect(server, hubs[0]!, 302);
    }),
    TEST_MS,
  );

  test(
    "203: re-POSTs the same form to a hub that answers 307 (websub.rocks' temporary hub redirect)",
    withServer((server) => subscribesThroughRedirect(server, `${server.url}/hub/redirect/307`, 307)),
    TEST_MS,
  );

  test(
    "204: re-POSTs the same form to the new location of a hub that answers 308",
    withServer(async (server) => {
      const { hubs } = await discover(`${server.url}/blog/204`, { timeoutMs: TIMEOUT_MS });
      expect(hubs).toEqual([`${server.url}/hub/redirect/308`]);
      await subscribesThroughRedirect(server, hubs[0]!, 308);
    }),
    TEST_MS,
  );

  test(
    "204: re-POSTs the form on 301, and on 303 too, where fetch alone would switch to GET",
    withServer(async (server) => {
      for (const status of [301, 303]) {
        const answer = await postToHub(`${server.url}/hub/redirect/${status}`, subscribeForm("https://t.example/"), {
          timeoutMs: TIMEOUT_MS,
        });
        expect(answer.status).toBe(202);
        expect(answer.hub).toBe(`${server.url}/hub/final?from=${status}`);
      }
      expect(server.hubPosts.map((p) => [p.method, p.contentType])).toEqual([
        ["POST", "application/x-www-form-urlencoded"],
        ["POST", "application/x-www-form-urlencoded"],
      ]);
    }),
    TEST_MS,
  );
});

describe("postToHub: failures", () => {
  test(
    "a hub that never answers fails with a timeout error, not before timeoutMs and not long after",
    withServer(async (server) => {
      const timeoutMs = 500;
      const hub = `${server.url}/hub/silent`;
      const started = performance.now();
      const error = await failure(postToHub(hub, subscribeForm("https://t.example/"), { timeoutMs }));
      const elapsedMs = performance.now() - started;
      expect(error.kind).toBe("timeout");
      expect(error.hub).toBe(hub);
      expect(error.message).toBe(`Hub "${hub}" did not answer the POST within 500ms`);
      // Timers may fire up to a millisecond early against performance.now(); the upper bound leaves a
      // loaded machine room but stays under twice the timeout, which two timed-out requests in a row would take.
      expect(elapsedMs).toBeGreaterThanOrEqual(timeoutMs - 1);
      expect(elapsedMs).toBeLessThan(timeoutMs + SLACK_MS);
      expectNoSecret(error);
    }),
    TEST_MS,
  );

  test(
    "a redirect loop fails after maxRedirects, naming the hub",
    withServer(async (server) => {
      const hub = `${server.url}/hub/loop`;
      const error = await failure(postToHub(hub, subscribeForm("https://t.example/"), { timeoutMs: TIMEOUT_MS, maxRedirects: 3 }));
      expect(error.kind).toBe("redirects");
      expect(error.message).toStartWith(`Hub "${hub}" redirected more than 3 times`);
      expect(server.requests.filter((r) => r.path === "/hub/loop")).toHaveLength(4);
      expectNoSecret(error);
    }),
    TEST_MS,
  );

  test(
    "an unreachable hub fails with a network error that keeps its cause",
    async () => {
      const server = await startTopicServer();
      const hub = `${server.url}/hub/final`;
      await server.close();
      const error = await failure(postToHub(hub, subscribeForm("https://t.example/"), { timeoutMs: TIMEOUT_MS }));
      expect(error.kind).toBe("network");
      expect(error.message).toStartWith(`Hub "${hub}" could not be reached: `);
      expect(error.cause).toBeDefined();
      expectNoSecret(error);
    },
    TEST_MS,
  );

  test("the secret never appears in an error message, even when the runtime's error quotes the request", async () => {
    const leaky = ((_input: string | URL | Request, init?: RequestInit) =>
      Promise.reject(new TypeError(`socket hang up while sending ${String(init?.body)} (raw ${SECRET})`))) as typeof fetch;
    const error = await failure(
      postToHub("https://hub.example/", subscribeForm("https://t.example/"), { timeoutMs: TIMEOUT_MS, fetch: leaky }),
    );
    expect(error.kind).toBe("network");
    expect(error.message).toContain("[hub.secret]");
    expectNoSecret(error);
  }, TEST_MS);

  test("a redirect from https to plain http is refused: the form carries the secret", async () => {
    const requested: string[] = [];
    const downgrade = ((input: string | URL | Request) => {
      requested.push(String(input));
      return Promise.resolve(new Response(null, { status: 307, headers: { location: "http://hub.example/new" } }));
    }) as typeof fetch;
    const error = await failure(
      postToHub("https://hub.example/", subscribeForm("https://t.example/"), { timeoutMs: TIMEOUT_MS, fetch: downgrade }),
    );
    expect(error.kind).toBe("redirects");
    expect(error.message).toBe(
      'Hub "https://hub.example/" redirected to "http://hub.example/new": refusing to send the form from https to plain http',
    );
    expect(requested).toEqual(["https://hub.example/"]);
  }, TEST_MS);

  test(
    "a refusal is an answer, not an error: its status and the start of its body",
    withServer(async (server) => {
      const answer = await postToHub(`${server.url}/hub/status/500`, subscribeForm("https://t.example/"), { timeoutMs: TIMEOUT_MS });
      expect(answer.status).toBe(500);
      expect(answer.hub).toBe(`${server.url}/hub/status/500`);
      expect(answer.body).toBe("500 ".repeat(125));
    }),
    TEST_MS,
  );

  test("a hub URL that is not http(s) is refused before any request", async () => {
    await expect(postToHub("ftp://hub.example/", new URLSearchParams(), { timeoutMs: TIMEOUT_MS })).rejects.toThrow(
      'Hub URL "ftp://hub.example/" is not an http(s) URL',
    );
  }, TEST_MS);
});

describe("retryable", () => {
  test("5xx, 429 and 408 are retryable; other 4xx are final refusals; 2xx and 3xx are not failures to retry", () => {
    for (const status of [500, 502, 503, 504, 599, 429, 408]) expect([status, retryable(status)]).toEqual([status, true]);
    for (const status of [200, 202, 204, 301, 302, 400, 401, 403, 404, 405, 409, 410, 413, 422, 499, 600]) {
      expect([status, retryable(status)]).toEqual([status, false]);
    }
  }, TEST_MS);
});

describe("backoffMs", () => {
  const options = { baseMs: 1_000, maxMs: 60_000 };

  test("no failure, no wait", () => {
    expect(backoffMs(0, { ...options, random: () => 0.5 })).toBe(0);
  }, TEST_MS);

  test("doubles with each failure, equal jitter: between half the step and the step", () => {
    const steps = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000];
    steps.forEach((stepMs, i) => {
      expect(backoffMs(i + 1, { ...options, random: () => 0 })).toBe(stepMs / 2);
      expect(backoffMs(i + 1, { ...options, random: () => 0.5 })).toBe(stepMs * 0.75);
      expect(backoffMs(i + 1, { ...options, random: () => 0.999_999 })).toBe(stepMs - 1);
    });
  }, TEST_MS);

  test("is capped at maxMs, even after very many failures", () => {
    for (const failures of [7, 8, 20, 1_100, 100_000]) {
      expect(backoffMs(failures, { ...options, random: () => 0 })).toBe(30_000);
      expect(backoffMs(failures, { ...options, random: () => 0.999_999 })).toBe(59_999);
    }
  }, TEST_MS);

  test("stays within bounds with the real random", () => {
    for (let failures = 1; failures <= 12; failures++) {
      const ceilingMs = Math.min(60_000, 1_000 * 2 ** (failures - 1));
      for (let i = 0; i < 50; i++) {
        const waitMs = backoffMs(failures, options);
        expect(waitMs).toBeGreaterThanOrEqual(ceilingMs / 2);
        expect(waitMs).toBeLessThanOrEqual(ceilingMs);
      }
    }
  }, TEST_MS);

  test("a random() out of [0, 1) cannot push it past the cap", () => {
    expect(backoffMs(30, { ...options, random: () => 7 })).toBe(60_000);
    expect(backoffMs(30, { ...options, random: () => -1 })).toBe(30_000);
  }, TEST_MS);

  test("refuses arguments that make no sense, quoting them", () => {
    expect(() => backoffMs(-1, options)).toThrow('failures "-1" must be a whole number, 0 or more');
    expect(() => backoffMs(1.5, options)).toThrow('failures "1.5" must be a whole number');
    expect(() => backoffMs(1, { baseMs: 0, maxMs: 10 })).toThrow('baseMs "0" must be a positive number');
    expect(() => backoffMs(1, { baseMs: 100, maxMs: 10 })).toThrow('maxMs "10" must be a number no less than baseMs "100"');
  }, TEST_MS);
});
