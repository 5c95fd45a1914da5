/**
 * WebSub discovery (W3C WebSub §4): from a topic URL to the hubs that publish it and the topic URL
 * they know it by (rel=self). Link headers first (RFC 8288), then `<link>` elements of an HTML
 * page, an Atom feed or an RSS feed's `<atom:link>` (read with htmlparser2); runtime-free (fetch,
 * Web APIs and htmlparser2 only).
 */
import { Parser } from "htmlparser2";

/** What discovery found: subscribe to `topic` at one of `hubs`. */
export interface Discovered {
  /** The rel=self URL, absolute; the final URL fetched when the topic names none. */
  topic: string;
  /** The rel=hub URLs, absolute, in document order; at least one. */
  hubs: string[];
  /** The URL finally fetched, after redirects. */
  url: string;
}

/** How discovery fetches the topic. */
export interface DiscoverOptions {
  /** Bound on each request (HEAD, GET, each redirect hop), headers and body together. */
  timeoutMs: number;
  /** The fetch to use; tests inject one. */
  fetch?: typeof fetch;
  /** Redirects followed per request before giving up. @default 5 */
  maxRedirects?: number;
}

/** Why discovery failed, for callers that decide on retries. */
export type DiscoveryFailure = "url" | "timeout" | "network" | "redirects" | "status" | "no_hub";

/** A discovery that failed; the message names the topic URL and what went wrong. */
export class DiscoveryError extends Error {
  readonly topicUrl: string;
  readonly kind: DiscoveryFailure;
  /** The status of the answer that was not 2xx, for kind "status". */
  readonly status?: number;

  constructor(message: string, topicUrl: string, kind: DiscoveryFailure, options: { cause?: unknown; status?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "DiscoveryError";
    this.topicUrl = topicUrl;
    this.kind = kind;
    if (options.status !== undefined) this.status = options.status;
  }
}

/** One link: its absolute target and its relation types, lower-cased. */
export interface FoundLink {
  href: string;
  rels: string[];
}

// Documents put the hub near the top; 1 MiB bounds memory against a huge or endless body.
const MAX_DOCUMENT_BYTES = 1_048_576;
const DEFAULT_MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const ACCEPT = "application/atom+xml, application/rss+xml, text/html;q=0.9, application/xml;q=0.8, */*;q=0.5";

function httpUrl(value: string, base?: string): URL | undefined {
  if (!URL.canParse(value, base)) return undefined;
  const url = new URL(value, base);
  return url.protocol === "http:" || url.protocol === "https:" ? url : undefined;
}

/** Finds the hubs and the rel=self of `topicUrl`: HEAD first, then GET; Link headers win over the document, of which at most 1 MiB is read. */
export async function discover(topicUrl: string, options: DiscoverOptions): Promise<Discovered> {
  const { timeoutMs, maxRedirects = DEFAULT_MAX_REDIRECTS } = options;
  if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) throw new RangeError(`timeoutMs "${timeoutMs}" must be a positive number`);
  if (!Number.isInteger(maxRedirects) || maxRedirects < 0) {
    throw new RangeError(`maxRedirects "${maxRedirects}" must be a whole number, 0 or more`);
  }
  if (httpUrl(topicUrl) === undefined) throw new DiscoveryError(`Topic URL "${topicUrl}" is not an http(s) URL`, topicUrl, "url");
  const context: Context = { topicUrl, timeoutMs, maxRedirects, fetch: options.fetch ?? ((url, init) => fetch(url, init)) };

  // HEAD is cheap and enough when the Link headers carry both relations (§4: headers come first).
  const head = await request(context, "HEAD", topicUrl);
  await discard(head.response);
  const headOk = head.response.status >= 200 && head.response.status < 300;
  if (headOk) {
    const links = fromLinks(linksInHeaders(head.response.headers, head.url));
    if (links.hubs.length > 0 && links.self !== undefined) return { topic: links.self, hubs: links.hubs, url: head.url };
  }
  // A HEAD that failed (405, 501, ...) says nothing about GET: start again from the topic URL.
  const get = await request(context, "GET", headOk ? head.url : topicUrl);
  const { response, url } = get;
  if (response.status < 200 || response.status >= 300) {
    await discard(response);
    throw new DiscoveryError(`Topic "${topicUrl}" answered ${response.status} to GET "${url}"`, topicUrl, "status", {
      status: response.status,
    });
  }
  const fromHeaders = fromLinks(linksInHeaders(response.headers, url));
  let hubs = fromHeaders.hubs;
  let self = fromHeaders.self;
  if (hubs.length > 0 && self !== undefined) {
    await discard(response);
  } else {
    const text = await readDocument(context, get);
    // A relation found in the headers is not taken from the body (§4, websub.rocks test 104).
    const fromBody = fromLinks(linksInDocument(text, url, response.headers.get("content-type")));
    if (hubs.length === 0) hubs = fromBody.hubs;
    self ??= fromBody.self;
  }
  if (hubs.length === 0) {
    throw new DiscoveryError(
      `No hub found for topic "${topicUrl}": neither the Link headers nor the document at "${url}" name a rel="hub"`,
      topicUrl,
      "no_hub",
    );
  }
  return { topic: self ?? url, hubs, url };
}

interface Context {
  topicUrl: string;
  timeoutMs: number;
  maxRedirects: number;
  fetch: (url: string, init: RequestInit) => Promise<Response>;
}

interface Fetched {
  response: Response;
  url: string;
  signal: AbortSignal;
}

// Redirects by hand: fetch would follow them but not tell which URL answered, and the final URL
// is the topic when the document names no rel=self (websub.rocks tests 201, 202).
async function request(context: Context, method: "HEAD" | "GET", startUrl: string): Promise<Fetched> {
  const { topicUrl, timeoutMs, maxRedirects } = context;
  let url = startUrl;
  for (let redirects = 0;; redirects++) {
    const signal = AbortSignal.timeout(timeoutMs);
    let response: Response;
    try {
      response = await context.fetch(url, { method, redirect: "manual", signal, headers: { accept: ACCEPT } });
    } catch (error) {
      throw failure(context, method, url, signal, error);
    }
    const location = REDIRECTS.has(response.status) ? response.headers.get("location") : null;
    // A 3xx without a Location is an answer like any other; the caller judges its status.
    if (location === null) return { response, url, signal };
    await discard(response);
    if (redirects >= maxRedirects) {
      throw new DiscoveryError(
        `Topic "${topicUrl}" redirected more than ${maxRedirects} times (last from "${url}" to "${location}")`,
        topicUrl,
        "redirects",
      );
    }
    const next = httpUrl(location, url);
    if (next === undefined) {
      throw new DiscoveryError(
        `Topic "${topicUrl}" redirected from "${url}" to "${location}", which is not an http(s) URL`,
        topicUrl,
        "redirects",
      );
    }
    url = next.href;
  }
}

function failure(context: Context, method: string, url: string, signal: AbortSignal, error: unknown): DiscoveryError {
  const { topicUrl, timeoutMs } = context;
  // The signal, not the error's name: runtimes reject an aborted fetch with different error types.
  if (signal.aborted) {
    return new DiscoveryError(`Topic "${topicUrl}" did not answer ${method} "${url}" within ${timeoutMs}ms`, topicUrl, "timeout", {
      cause: error,
    });
  }
  const reason = error instanceof Error ? error.message : String(error);
  return new DiscoveryError(`Topic "${topicUrl}" could not be fetched (${method} "${url}"): ${reason}`, topicUrl, "network", {
    cause: error,
  });
}

async function discard(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

// Reads at most MAX_DOCUMENT_BYTES, bounded by the request's own timeout even if a runtime does not
// propagate the abort to the body stream.
async function readDocument(context: Context, fetched: Fetched): Promise<string> {
  const { response, url, signal } = fetched;
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  let onAbort: () => void = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    if (signal.aborted) throw signal.reason;
    while (total < MAX_DOCUMENT_BYTES) {
      const { done, value } = await Promise.race([reader.read(), aborted]);
      if (done) break;
      chunks.push(value);
      total += value.byteLength;
    }
  } catch (error) {
    throw failure(context, "GET", url, signal, error);
  } finally {
    signal.removeEventListener("abort", onAbort);
    reader.cancel().catch(() => undefined);
  }
  const bytes = new Uint8Array(Math.min(total, MAX_DOCUMENT_BYTES));
  let offset = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, bytes.byteLength - offset);
    bytes.set(part, offset);
    offset += part.byteLength;
  }
  // Non-UTF-8 documents still yield their ASCII URLs; replacement characters elsewhere do no harm.
  return new TextDecoder().decode(bytes);
}

function fromLinks(links: FoundLink[]): { hubs: string[]; self?: string } {
  const hubs: string[] = [];
  let self: string | undefined;
  for (const link of links) {
    if (link.rels.includes("hub") && !hubs.includes(link.href)) hubs.push(link.href);
    if (link.rels.includes("self")) self ??= link.href;
  }
  return self === undefined ? { hubs } : { hubs, self };
}

function linksInHeaders(headers: Headers, url: string): FoundLink[] {
  const value = headers.get("link");
  // Headers.get joins several Link headers with ", ", which is the list syntax RFC 8288 parses anyway.
  return value === null ? [] : parseLinkHeader(value, url);
}

const WHITESPACE = /[ \t\r\n]/;

/**
 * Parses RFC 8288 Link header values (a comma-separated list, commas allowed inside `<>` and quoted
 * strings) into http(s) links resolved against `baseUrl`. A link with an `anchor` naming another
 * resource describes that resource, not this one, so it is left out.
 */
export function parseLinkHeader(header: string, baseUrl: string): FoundLink[] {
  const links: FoundLink[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = () => {
    while (i < n && WHITESPACE.test(header[i]!)) i++;
  };
  // Skips a malformed part up to the next separator outside a quoted string.
  const skipTo = (stops: string) => {
    while (i < n && !stops.includes(header[i]!)) {
      if (header[i] === '"') i = endOfQuoted(header, i).end;
      else i++;
    }
  };
  while (i < n) {
    skipSpace();
    if (header[i] === ",") {
      i++;
      continue;
    }
    if (i >= n) break;
    if (header[i] !== "<") {
      skipTo(",");
      continue;
    }
    const close = header.indexOf(">", i + 1);
    if (close < 0) break;
    const target = header.slice(i + 1, close).trim();
    i = close + 1;
    const params = new Map<string, string>();
    for (;;) {
      skipSpace();
      if (i >= n || header[i] === ",") break;
      if (header[i] !== ";") {
        skipTo(";,");
        continue;
      }
      i++;
      skipSpace();
      const nameStart = i;
      while (i < n && !"=;,".includes(header[i]!) && !WHITESPACE.test(header[i]!)) i++;
      const name = header.slice(nameStart, i).toLowerCase();
      skipSpace();
      let value = "";
      if (header[i] === "=") {
        i++;
        skipSpace();
        if (header[i] === '"') {
          const quoted = endOfQuoted(header, i);
          value = quoted.value;
          i = quoted.end;
        } else {
          const valueStart = i;
          while (i < n && !";,".includes(header[i]!) && !WHITESPACE.test(header[i]!)) i++;
          value = header.slice(valueStart, i);
        }
      }
      // RFC 8288 §3: occurrences of a parameter after the first are ignored.
      if (name !== "" && !params.has(name)) params.set(name, value);
    }
    const rel = params.get("rel");
    const href = httpUrl(target, baseUrl);
    if (rel === undefined || href === undefined) continue;
    const anchor = params.get("anchor");
    if (anchor !== undefined && (!URL.canParse(anchor, baseUrl) || new URL(anchor, baseUrl).href !== new URL(baseUrl).href)) continue;
    links.push({ href: href.href, rels: relations(rel) });
  }
  return links;
}

// A quoted-string starting at `start` (the opening quote): its unescaped value and the index after it.
function endOfQuoted(text: string, start: number): { value: string; end: number } {
  let value = "";
  let i = start + 1;
  while (i < text.length && text[i] !== '"') {
    if (text[i] === "\\" && i + 1 < text.length) i++;
    value += text[i];
    i++;
  }
  return { value, end: Math.min(i + 1, text.length) };
}

function relations(rel: string): string[] {
  return rel.toLowerCase().split(/[ \t\r\n]+/).filter((r) => r !== "");
}

// Document-level metadata ends where content starts; a `<link rel="self">` of an Atom entry or an
// RSS item describes that entry, and links in an HTML body are not the page's.
const CONTENT_STARTS = new Set(["body", "entry", "item"]);
// A media type ending in xml (application/atom+xml, application/rss+xml, text/xml, ...).
const XML_MEDIA_TYPE = /^[^;]*[/+]xml\s*(;|$)/i;

/**
 * The `<link>` elements (any namespace prefix, so RSS's `<atom:link>` too) of an HTML page, Atom
 * feed or RSS feed, up to its first `<body>`, `<entry>` or `<item>`; none from comments, CDATA,
 * raw text (script, style, title, textarea, ...) or a `<template>`. hrefs are resolved against
 * `<base href>` (or the feed's `xml:base`) and then `documentUrl`. Parsed by htmlparser2: as XML
 * when `contentType` is an XML media type, else as HTML (which reads a feed as well).
 */
export function linksInDocument(text: string, documentUrl: string, contentType?: string | null): FoundLink[] {
  const found: Array<{ href: string; rel: string; xmlBase?: string }> = [];
  let base: string | undefined;
  // A template's content is not part of the document.
  let templates = 0;
  let done = false;
  const parser = new Parser({
    onopentag(name, attributes) {
      if (done) return;
      const local = name.slice(name.indexOf(":") + 1);
      if (CONTENT_STARTS.has(local)) {
        done = true;
        return parser.pause();
      }
      if (name === "template") templates++;
      if (templates > 0) return;
      const { href, rel } = attributes as Partial<Record<string, string>>;
      if (local === "link" && href !== undefined && rel !== undefined) {
        found.push({ href, rel, xmlBase: attributes["xml:base"] });
      } else if (name === "base" && href !== undefined) {
        // HTML: the first <base href> applies to the whole document, links before it included.
        base ??= href;
      } else if (local === "feed" || local === "rss" || local === "channel") {
        base ??= attributes["xml:base"];
      }
    },
    onclosetag(name) {
      if (name === "template" && templates > 0) templates--;
    },
  }, { xmlMode: contentType != null && XML_MEDIA_TYPE.test(contentType), lowerCaseTags: true, lowerCaseAttributeNames: true });
  parser.end(text);
  const documentBase = base !== undefined && URL.canParse(base, documentUrl) ? new URL(base, documentUrl).href : documentUrl;
  const links: FoundLink[] = [];
  for (const link of found) {
    const linkBase = link.xmlBase !== undefined && URL.canParse(link.xmlBase, documentBase)
      ? new URL(link.xmlBase, documentBase).href
      : documentBase;
    const href = httpUrl(link.href.trim(), linkBase);
    if (href !== undefined) links.push({ href: href.href, rels: relations(link.rel) });
  }
  return links;
}
