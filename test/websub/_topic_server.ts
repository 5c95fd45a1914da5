import { expect } from "bun:test";
import type { Socket } from "node:net";
import { using } from "../../harness/wait.ts";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

/**
 * A publisher and a hub for the discovery tests, on 127.0.0.1 port 0: topic documents that
 * reproduce websub.rocks' subscriber tests 100-104 and 200-204 (https://websub.rocks/subscriber,
 * source github.com/aaronpk/websub.rocks app/Subscriber.php), paths named after them
 * (`/blog/100`), plus the edge cases the tests need. Internal to the tests, hence node:http.
 */
export interface TopicServer {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:PORT */
  readonly url: string;
  /** Every request, in arrival order. */
  readonly requests: ReadonlyArray<{ method: string; path: string }>;
  /** Forms POSTed to a hub path that accepts them (`/hub/final`, `/blog/N/hub`). */
  readonly hubPosts: ReadonlyArray<HubPost>;
  /** Closes the server and destroys its open sockets (held requests included). */
  close(): Promise<void>;
}

/** One request a hub endpoint accepted. */
export interface HubPost {
  path: string;
  method: string;
  contentType: string | undefined;
  body: string;
}

interface Answer {
  status?: number;
  headers?: Record<string, string | string[]>;
  body?: string;
}

const HTML = "text/html; charset=utf-8";

function page(head: string, body = "<p>Posts</p>"): string {
  return `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Test</title>\n${head}\n</head>\n<body>\n${body}\n</body>\n</html>\n`;
}

function atom(self: string, hub: string): string {
  return `<?xml version="1.0" encoding="UTF-8" ?>
<?xml-stylesheet type="text/xsl" href="/assets/atom.xsl" ?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>WebSub Rocks!</title>
  <link href="${self}" rel="self" type="application/atom+xml" />
  <link href="${hub}" rel="hub" />
  <id>${self}</id>
  <entry>
    <id>${self}#quote-0</id>
    <content type="html"><![CDATA[<link rel="hub" href="/wrong/cdata">]]></content>
    <link rel="self" href="/wrong/entry-self" />
    <link rel="hub" href="/wrong/entry-hub" />
  </entry>
</feed>
`;
}

function rss(self: string, hub: string): string {
  return `<?xml version="1.0" encoding="UTF-8" ?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:atom="http://www.w3.org/2005/Atom">
<channel>
  <title>WebSub Rocks!</title>
  <atom:link href="${self}" rel="self" type="application/rss+xml" />
  <atom:link href="${hub}" rel="hub" />
  <link>${self}</link>
  <item>
    <title></title>
    <description><![CDATA[<atom:link rel="hub" href="/wrong/item-hub" />]]></description>
    <atom:link rel="hub" href="/wrong/item-hub" />
  </item>
</channel>
</rss>
`;
}

function links(...values: Array<[string, string]>): string[] {
  return values.map(([href, rel]) => `<${href}>; rel="${rel}"`);
}

/** Starts the server; `close()` it in a `finally`. */
export async function startTopicServer(): Promise<TopicServer> {
  const sockets = new Set<Socket>();
  const requests: Array<{ method: string; path: string }> = [];
  const hubPosts: HubPost[] = [];
  let base = "";

  // Topic documents by path (query included where the scenario redirects to it); GET and HEAD get
  // the same status and headers, as websub.rocks does, unless `head` says otherwise.
  const topics = (path: string): (Answer & { head?: Answer }) | "hold" | "hold-body" | undefined => {
    const self = `${base}${path}`;
    const hub = `${base}/blog/hub`;
    switch (path) {
      // 100: the hub and self only in HTTP Link headers, two separate headers.
      case "/blog/100":
        return { headers: { link: links([self, "self"], [hub, "hub"]), "content-type": HTML }, body: page("") };
      // 101: only in the HTML head.
      case "/blog/101":
        return { headers: { "content-type": HTML }, body: page(`<link rel="hub" href="${hub}">\n<link rel="self" href="${self}">`) };
      // 102: an Atom feed's <link> elements.
      case "/blog/102":
        return {
          headers: { "content-type": "text/xml" },
          body: atom(self, hub),
          head: { headers: { "content-type": "application/atom+xml" } },
        };
      // 103: an RSS feed's <atom:link> elements.
      case "/blog/103":
        return {
          headers: { "content-type": "text/xml" },
          body: rss(self, hub),
          head: { headers: { "content-type": "application/rss+xml" } },
        };
      // 104: Link headers and a document that names another hub and self; the headers must win.
      // Stricter than websub.rocks: HEAD carries no Link headers, so the body does get read.
      case "/blog/104":
        return {
          headers: { link: links([self, "self"], [hub, "hub"]), "content-type": "text/xml" },
          body: atom(`${self}?error=wrongself`, `${hub}?error=wrongtag`),
          head: { headers: { "content-type": "application/atom+xml" } },
        };
      // 200: a rel=self other than the URL fetched.
      case "/blog/200":
        return { headers: { link: links([`${self}?self=other`, "self"], [hub, "hub"]), "content-type": HTML }, body: page("") };
      // 201: a 302 temporary redirect to the topic's new URL (a relative Location).
      case "/blog/201":
        return { status: 302, headers: { location: "/blog/201?redirect=complete" } };
      // 202: a 301 permanent redirect (an absolute Location).
      case "/blog/202":
        return { status: 301, headers: { location: `${base}/blog/202?redirect=complete` } };
      case "/blog/201?redirect=complete":
      case "/blog/202?redirect=complete":
        return { headers: { link: links([self, "self"], [hub, "hub"]), "content-type": HTML }, body: page("") };
      // 203 and 204: a hub that redirects the subscription request (temporarily, permanently).
      case "/blog/203":
        return { headers: { link: links([self, "self"], [`${base}/hub/redirect/302`, "hub"]) }, body: page("") };
      case "/blog/204":
        return { headers: { link: links([self, "self"], [`${base}/hub/redirect/308`, "hub"]) }, body: page("") };
      // Only a hub in the headers, and a wrong hub plus the self in the body: the hub from the
      // headers, the self from the body.
      case "/partial":
        return {
          headers: { link: links([hub, "hub"]), "content-type": HTML },
          body: page(`<link rel="hub" href="/wrong/body-hub"><link rel="self" href="/partial/self">`),
        };
      // Relative URIs: in Link headers against the URL fetched, in HTML against <base href>.
      case "/relative/feed":
        return { headers: { link: ['<../hub/final>; rel="hub"', "<feed?v=1>; rel=self"], "content-type": HTML }, body: page("") };
      case "/relative/html/page":
        return {
          headers: { "content-type": HTML },
          body: page(`<link rel="hub" href="hub?a=1&amp;b=2">\n<base href="/base/dir/">\n<link rel="self" href="../self">`),
        };
      // One Link header, several link-values: commas inside a quoted parameter, a quoted rel with
      // two relation types, an anchored link about another resource (ignored), a second hub.
      case "/several-rels":
        return {
          headers: {
            link: '<https://hub-a.example/>; rel="hub"; title="a, b; c", <https://wrong.example/>; rel="hub"; ' +
              'anchor="https://other.example/", </topics/x>; rel="alternate self"; type="text/html", <https://hub-b.example/>; REL=Hub',
          },
          body: page(""),
        };
      // HTML the way people write it: attribute order, quotes, case, decoys in comments and script.
      case "/tricky-html":
        return {
          headers: { "content-type": HTML },
          body: page(
            [
              `<!-- a > b, then <link rel="hub" href="/wrong/comment"> -->`,
              `<script>document.write('<link rel="hub" href="/wrong/script">')</script>`,
              `<style>/* <link rel=hub href=/wrong/style> */</style>`,
              `<LINK HREF='/hub/one' REL='Hub' type="text/html">`,
              `<link data-x="a > b" rel=hub href=/hub/two>`,
              `<link rel="stylesheet" href="/style.css">`,
              `<link\n  rel="self"\n  href="/topic?id=1&amp;lang=en"\n/>`,
            ].join("\n"),
            `<link rel="hub" href="/wrong/body">`,
          ),
        };
      // HEAD unsupported: the Link headers come with GET only.
      case "/head-405":
        return {
          headers: { link: links([self, "self"], [hub, "hub"]), "content-type": HTML },
          body: page(""),
          head: { status: 405, headers: { allow: "GET" } },
        };
      case "/no-hub":
        return { headers: { "content-type": HTML }, body: page(`<link rel="self" href="${self}">`) };
      case "/missing":
        return { status: 404, headers: { "content-type": "text/plain" }, body: "not found" };
      case "/loop":
        return { status: 302, headers: { location: "/loop" } };
      case "/loop-a":
        return { status: 307, headers: { location: "/loop-b" } };
      case "/loop-b":
        return { status: 308, headers: { location: "/loop-a" } };
      case "/never":
        return "hold";
      case "/slow-body":
        return "hold-body";
    }
    return undefined;
  };

  const answer = (res: ServerResponse, a: Answer, withBody: boolean) => {
    res.writeHead(a.status ?? 200, a.headers ?? {});
    res.end(withBody ? a.body ?? "" : undefined);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    requests.push({ method, path });
    const chunks: Uint8Array[] = [];
    for await (const chunk of req) chunks.push(chunk as Uint8Array);
    const body = Buffer.concat(chunks).toString();
    const pathname = path.split("?")[0]!;

    if (method === "POST") {
      // A hub that moved: answers the subscription request with a redirect to where it is now.
      const redirect = /^\/hub\/redirect\/(\d{3})$/.exec(pathname);
      if (redirect) return answer(res, { status: Number(redirect[1]), headers: { location: `/hub/final?from=${redirect[1]}` } }, true);
      if (pathname === "/hub/loop") return answer(res, { status: 307, headers: { location: "/hub/loop" } }, true);
      if (pathname === "/hub/silent") return; // never answers; close() destroys the socket
      const status = /^\/hub\/status\/(\d{3})$/.exec(pathname);
      if (status) {
        return answer(
          res,
          { status: Number(status[1]), headers: { "content-type": "text/plain" }, body: `${status[1]} `.repeat(400) },
          true,
        );
      }
      if (pathname === "/hub/final" || pathname === "/blog/hub") {
        hubPosts.push({ path, method, contentType: req.headers["content-type"], body });
        return answer(res, { status: 202, headers: { "content-type": "text/plain" }, body: "Subscription request accepted" }, true);
      }
      return answer(res, { status: 405 }, true);
    }

    const topic = topics(path);
    if (topic === "hold") return;
    if (topic === "hold-body" && method === "HEAD") return answer(res, { headers: { "content-type": HTML } }, false);
    if (topic === "hold-body") {
      // Headers and the start of a document without a hub, then nothing: only a timeout ends it.
      res.writeHead(200, { "content-type": HTML });
      res.write("<!DOCTYPE html><html><head><title>Slow</title>\n");
      return;
    }
    if (topic === undefined) return answer(res, { status: 404, body: "no such test" }, method !== "HEAD");
    if (method === "HEAD") return answer(res, topic.head ?? topic, false);
    return answer(res, topic, true);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  return {
    url: base,
    requests,
    hubPosts,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

if (import.meta.main) {
  const server = await startTopicServer();
  console.log(JSON.stringify({ event: "topic_server_listening", url: server.url }));
}

/** A test body run against a fresh topic server, closed even when the test fails. */
export function withTopicServer(fn: (server: TopicServer) => Promise<void>): () => Promise<void> {
  return () =>
    using(async (defer) => {
      const server = await startTopicServer();
      defer(() => server.close());
      await fn(server);
    });
}

/** What `promise` rejects with, checked to be an instance of `kind` (fails the test if it resolves). */
export async function rejectionOf<E>(promise: Promise<unknown>, kind: new (...args: never[]) => E): Promise<E> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(kind);
  return error as E;
}
