import { describe, expect, test } from "bun:test";
import { rejectionOf, startTopicServer, type TopicServer, withTopicServer } from "./_topic_server.ts";
import { discover, DiscoveryError, linksInDocument, parseLinkHeader } from "../../src/websub/discovery.ts";

const TIMEOUT_MS = 2_000;
const TEST_MS = 10_000;
const SLACK_MS = 450;

const failure = (promise: Promise<unknown>) => rejectionOf(promise, DiscoveryError);
const withServer = withTopicServer;

const methods = (server: TopicServer, path: string) => server.requests.filter((r) => r.path === path).map((r) => r.method);

describe("websub.rocks discovery (100-104)", () => {
  test(
    "100: finds the hub and self in HTTP Link headers",
    withServer(async (server) => {
      const found = await discover(`${server.url}/blog/100`, { timeoutMs: TIMEOUT_MS });
      expect(found).toEqual({ topic: `${server.url}/blog/100`, hubs: [`${server.url}/blog/hub`], url: `${server.url}/blog/100` });
      // Both relations in the HEAD's headers: no GET needed.
      expect(methods(server, "/blog/100")).toEqual(["HEAD"]);
    }),
    TEST_MS,
  );

  test(
    "101: finds the hub and self in HTML <link> tags",
    withServer(async (server) => {
      const found = await discover(`${server.url}/blog/101`, { timeoutMs: TIMEOUT_MS });
      expect(found).toEqual({ topic: `${server.url}/blog/101`, hubs: [`${server.url}/blog/hub`], url: `${server.url}/blog/101` });
      expect(methods(server, "/blog/101")).toEqual(["HEAD", "GET"]);
    }),
    TEST_MS,
  );

  test(
    "102: finds the hub and self in an Atom feed's <link> elements, not in its entries",
    withServer(async (server) => {
      const found = await discover(`${server.url}/blog/102`, { timeoutMs: TIMEOUT_MS });
      expect(found).toEqual({ topic: `${server.url}/blog/102`, hubs: [`${server.url}/blog/hub`], url: `${server.url}/blog/102` });
    }),
    TEST_MS,
  );

  test(
    "103: finds the hub and self in an RSS feed's <atom:link> elements, not in its items",
    withServer(async (server) => {
      const found = await discover(`${server.url}/blog/103`, { timeoutMs: TIMEOUT_MS });
      expect(found).toEqual({ topic: `${server.url}/blog/103`, hubs: [`${server.url}/blog/hub`], url: `${server.url}/blog/103` });
    }),
    TEST_MS,
  );

  test(
    "104: HTTP Link headers win over the document's links",
    withServer(async (server) => {
      const found = await discover(`${server.url}/blog/104`, { timeoutMs: TIMEOUT_MS });
      expect(found).toEqual({ topic: `${server.url}/blog/104`, hubs: [`${server.url}/blog/hub`], url: `${server.url}/blog/104` });
      // The GET was made (HEAD had no Link headers), so the document's wrong links were there to take.
      expect(methods(server, "/blog/104")).toEqual(["HEAD", "GET"]);
    }),
    TEST_MS,
  );

  test(
    "104: a relation found in the headers is not taken from the body, a missing one is",
    withServer(async (server) => {
      const found = await discover(`${server.url}/partial`, { timeoutMs: TIMEOUT_MS });
      expect(found).toEqual({ topic: `${server.url}/partial/self`, hubs: [`${server.url}/blog/hub`], url: `${server.url}/partial` });
    }),
    TEST_MS,
  );
});

describe("websub.rocks topic URLs (200-202)", () => {
  test(
    "200: subscribes with the rel=self when it differs from the URL fetched",
    withServer(async (server) => {
      const found = await discover(`${server.url}/blog/200`, { timeoutMs: TIMEOUT_MS });
      expect(found.topic).toBe(`${server.url}/blog/200?self=other`);
      expect(found.url).toBe(`${server.url}/blog/200`);
    }),
    TEST_MS,
  );

  test(
    "201: follows a 302 temporary redirect of the topic and subscribes with the final URL's rel=self",
    withServer(async (server) => {
      const found = await discover(`${server.url}/blog/201`, { timeoutMs: TIMEOUT_MS });
      expect(found).toEqual({
        topic: `${server.url}/blog/201?redirect=complete`,
        hubs: [`${server.url}/blog/hub`],
        url: `${server.url}/blog/201?redirect=complete`,
      });
    }),
    TEST_MS,
  );

  test(
    "202: follows a 301 permanent redirect of the topic and subscribes with the final URL's rel=self",
    withServer(async (server) => {
      const found = await discover(`${server.url}/blog/202`, { timeoutMs: TIMEOUT_MS });
      expect(found.topic).toBe(`${server.url}/blog/202?redirect=complete`);
      expect(found.url).toBe(`${server.url}/blog/202?redirect=complete`);
    }),
    TEST_MS,
  );

  test(
    "203 and 204: discovery hands back the hub URL as advertised; postToHub follows its redirect",
    withServer(async (server) => {
      expect((await discover(`${server.url}/blog/203`, { timeoutMs: TIMEOUT_MS })).hubs).toEqual([`${server.url}/hub/redirect/302`]);
      expect((await discover(`${server.url}/blog/204`, { timeoutMs: TIMEOUT_MS })).hubs).toEqual([`${server.url}/hub/redirect/308`]);
    }),
    TEST_MS,
  );
});

describe("discovery edge cases", () => {
  test(
    "relative URIs resolve against the URL fetched (Link headers) and <base href> (HTML)",
    withServer(async (server) => {
      const fromHeaders = await discover(`${server.url}/relative/feed`, { timeoutMs: TIMEOUT_MS });
      expect(fromHeaders).toEqual({
        topic: `${server.url}/relative/feed?v=1`,
        hubs: [`${server.url}/hub/final`],
        url: `${server.url}/relative/feed`,
      });
      const fromHtml = await discover(`${server.url}/relative/html/page`, { timeoutMs: TIMEOUT_MS });
      expect(fromHtml.hubs).toEqual([`${server.url}/base/dir/hub?a=1&b=2`]);
      expect(fromHtml.topic).toBe(`${server.url}/base/self`);
    }),
    TEST_MS,
  );

  test(
    "a Link header with several link-values and a quoted rel of several types",
    withServer(async (server) => {
      const found = await discover(`${server.url}/several-rels`, { timeoutMs: TIMEOUT_MS });
      // The anchored link describes another resource and is left out.
      expect(found).toEqual({
        topic: `${server.url}/topics/x`,
        hubs: ["https://hub-a.example/", "https://hub-b.example/"],
        url: `${server.url}/several-rels`,
      });
    }),
    TEST_MS,
  );

  test(
    "HTML <link> tags in any attribute order, quoting and case; none from comments, script, style or the body",
    withServer(async (server) => {
      const found = await discover(`${server.url}/tricky-html`, { timeoutMs: TIMEOUT_MS });
      expect(found.hubs).toEqual([`${server.url}/hub/one`, `${server.url}/hub/two`]);
      expect(found.topic).toBe(`${server.url}/topic?id=1&lang=en`);
    }),
    TEST_MS,
  );

  test(
    "HEAD unsupported (405) falls back to GET",
    withServer(async (server) => {
      const found = await discover(`${server.url}/head-405`, { timeoutMs: TIMEOUT_MS });
      expect(found).toEqual({ topic: `${server.url}/head-405`, hubs: [`${server.url}/blog/hub`], url: `${server.url}/head-405` });
      expect(methods(server, "/head-405")).toEqual(["HEAD", "GET"]);
    }),
    TEST_MS,
  );

  test("a topic with no rel=self is subscribed to at the final URL", async () => {
    const fake = ((input: string | URL | Request, init?: RequestInit) => {
      if (String(input) === "https://pub.example/moved") {
        return Promise.resolve(new Response(null, { status: 303, headers: { location: "/here" } }));
      }
      const headers = { link: '</hub>; rel="hub"' };
      return Promise.resolve(new Response(init?.method === "HEAD" ? null : "<p>no links</p>", { headers }));
    }) as typeof fetch;
    const found = await discover("https://pub.example/moved", { timeoutMs: TIMEOUT_MS, fetch: fake });
    expect(found).toEqual({ topic: "https://pub.example/here", hubs: ["https://pub.example/hub"], url: "https://pub.example/here" });
  }, TEST_MS);

  test(
    "a topic that never answers fails with a timeout error, not before timeoutMs and not long after",
    withServer(async (server) => {
      const timeoutMs = 500;
      const started = performance.now();
      const error = await failure(discover(`${server.url}/never`, { timeoutMs }));
      const elapsedMs = performance.now() - started;
      expect(error.kind).toBe("timeout");
      expect(error.message).toBe(`Topic "${server.url}/never" did not answer HEAD "${server.url}/never" within 500ms`);
      // Timers may fire up to a millisecond early against performance.now(); the upper bound leaves a
      // loaded machine room but stays under twice the timeout, which two timed-out requests in a row would take.
      expect(elapsedMs).toBeGreaterThanOrEqual(timeoutMs - 1);
      expect(elapsedMs).toBeLessThan(timeoutMs + SLACK_MS);
    }),
    TEST_MS,
  );

  test(
    "a document whose body stalls fails with a timeout error, bounded on both sides",
    withServer(async (server) => {
      const timeoutMs = 500;
      const started = performance.now();
      const error = await failure(discover(`${server.url}/slow-body`, { timeoutMs }));
      const elapsedMs = performance.now() - started;
      expect(error.kind).toBe("timeout");
      expect(error.message).toContain(`GET "${server.url}/slow-body" within 500ms`);
      expect(elapsedMs).toBeGreaterThanOrEqual(timeoutMs - 1);
      expect(elapsedMs).toBeLessThan(timeoutMs + SLACK_MS);
    }),
    TEST_MS,
  );

  test(
    "redirect loops fail after maxRedirects",
    withServer(async (server) => {
      const self = await failure(discover(`${server.url}/loop`, { timeoutMs: TIMEOUT_MS }));
      expect(self.kind).toBe("redirects");
      expect(self.message).toStartWith(`Topic "${server.url}/loop" redirected more than 5 times`);
      expect(methods(server, "/loop")).toEqual(["HEAD", "HEAD", "HEAD", "HEAD", "HEAD", "HEAD"]);
      const pair = await failure(discover(`${server.url}/loop-a`, { timeoutMs: TIMEOUT_MS, maxRedirects: 2 }));
      expect(pair.kind).toBe("redirects");
      expect(pair.message).toContain("more than 2 times");
    }),
    TEST_MS,
  );

  test(
    "no hub found: the error names the topic and says where it looked",
    withServer(async (server) => {
      const error = await failure(discover(`${server.url}/no-hub`, { timeoutMs: TIMEOUT_MS }));
      expect(error.kind).toBe("no_hub");
      expect(error.message).toBe(
        `No hub found for topic "${server.url}/no-hub": neither the Link headers nor the document at "${server.url}/no-hub" name a rel="hub"`,
      );
    }),
    TEST_MS,
  );

  test(
    "a status other than 2xx fails with it",
    withServer(async (server) => {
      const error = await failure(discover(`${server.url}/missing`, { timeoutMs: TIMEOUT_MS }));
      expect(error.kind).toBe("status");
      expect(error.status).toBe(404);
      expect(error.message).toBe(`Topic "${server.url}/missing" answered 404 to GET "${server.url}/missing"`);
    }),
    TEST_MS,
  );

  test(
    "a network error keeps its cause",
    async () => {
      const server = await startTopicServer();
      const url = `${server.url}/blog/100`;
      await server.close();
      const error = await failure(discover(url, { timeoutMs: TIMEOUT_MS }));
      expect(error.kind).toBe("network");
      expect(error.message).toStartWith(`Topic "${url}" could not be fetched (HEAD "${url}"): `);
      expect(error.cause).toBeDefined();
    },
    TEST_MS,
  );

  test("a topic URL that is not http(s) is refused before any request", async () => {
    const error = await failure(discover("ftp://example.com/feed", { timeoutMs: TIMEOUT_MS }));
    expect(error.kind).toBe("url");
    expect(error.message).toBe('Topic URL "ftp://example.com/feed" is not an http(s) URL');
  }, TEST_MS);
});

describe("parseLinkHeader", () => {
  const base = "https://pub.example/feeds/a";

  test("splits link-values on commas outside <> and quoted strings", () => {
    const header = '<https://h.example/a,b>; rel="hub"; title="x, y", <https://h.example/c>; rel=self';
    expect(parseLinkHeader(header, base)).toEqual([
      { href: "https://h.example/a,b", rels: ["hub"] },
      { href: "https://h.example/c", rels: ["self"] },
    ]);
  }, TEST_MS);

  test("a quoted rel with several relation types, only the first rel parameter counts", () => {
    expect(parseLinkHeader('<../hub>; rel="hub  self"; rel="next"', base)).toEqual([{
      href: "https://pub.example/hub",
      rels: ["hub", "self"],
    }]);
  }, TEST_MS);

  test("escaped quotes, junk and non-http targets are tolerated", () => {
    const header = 'junk, <mailto:a@b.example>; rel=hub, <x>; title="say \\"hi\\", ok"; rel=hub, <y> rel=self; rel=self';
    expect(parseLinkHeader(header, base)).toEqual([
      { href: "https://pub.example/feeds/x", rels: ["hub"] },
      { href: "https://pub.example/feeds/y", rels: ["self"] },
    ]);
  }, TEST_MS);

  test("a link anchored at another resource is left out; one anchored here is kept", () => {
    const header = '<https://h.example/1>; rel=hub; anchor="#other", <https://h.example/2>; rel=hub; anchor="/feeds/a"';
    expect(parseLinkHeader(header, base)).toEqual([{ href: "https://h.example/2", rels: ["hub"] }]);
  }, TEST_MS);
});

describe("linksInDocument", () => {
  test("unterminated comments and script end the scan instead of leaking their contents", () => {
    expect(linksInDocument("<link rel=hub href=/a><!-- a > b <link rel=hub href=/b>", "https://x.example/")).toEqual([
      { href: "https://x.example/a", rels: ["hub"] },
    ]);
    expect(linksInDocument("<script><link rel=hub href=/b>", "https://x.example/")).toEqual([]);
  }, TEST_MS);

  test("an Atom feed's xml:base applies to its links", () => {
    const feed = '<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://cdn.example/blog/"><link rel="hub" href="hub"/></feed>';
    expect(linksInDocument(feed, "https://x.example/")).toEqual([{ href: "https://cdn.example/blog/hub", rels: ["hub"] }]);
  }, TEST_MS);

  test("numeric character references in an href are decoded", () => {
    expect(linksInDocument('<link rel="hub" href="/h?a=1&#38;b=2&#x26;c=3">', "https://x.example/")).toEqual([
      { href: "https://x.example/h?a=1&b=2&c=3", rels: ["hub"] },
    ]);
  }, TEST_MS);
});
