/**
 * Requests to a WebSub hub (W3C WebSub §5.1): a form POST that survives a hub which moved, bounded
 * in time, with errors that never carry `hub.secret`; plus the retry policy (which answers are
 * worth retrying, and how long to wait). Runtime-free: fetch and Web APIs only.
 */

/** How a hub request is made. */
export interface HubRequestOptions {
  /** Bound on each attempt (each redirect hop), from sending the request to reading the answer. */
  timeoutMs: number;
  /** The fetch to use; tests inject one. */
  fetch?: typeof fetch;
  /** Redirects followed before giving up. @default 5 */
  maxRedirects?: number;
}

/** The hub's answer to a subscription request. */
export interface HubAnswer {
  status: number;
  /** The hub URL that answered, after redirects. */
  hub: string;
  /** The start of the answer's body (up to 500 characters), for the log. */
  body: string;
}

/** Why a hub request got no answer. */
export type HubRequestFailure = "timeout" | "network" | "redirects";

/** A hub request that got no answer; the message names the hub and never contains `hub.secret`. */
export class HubRequestError extends Error {
  readonly kind: HubRequestFailure;
  /** The hub URL last tried. */
  readonly hub: string;

  constructor(message: string, kind: HubRequestFailure, hub: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "HubRequestError";
    this.kind = kind;
    this.hub = hub;
  }
}

const DEFAULT_MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const BODY_PREVIEW_CHARS = 500;
// UTF-8 takes at most 4 bytes a character: enough bytes for the preview, never the whole body.
const BODY_PREVIEW_BYTES = BODY_PREVIEW_CHARS * 4;

/** POSTs `form` to `hub` as application/x-www-form-urlencoded, re-POSTing it wherever a 301/302/303/307/308 points. */
export async function postToHub(hub: string, form: URLSearchParams, options: HubRequestOptions): Promise<HubAnswer> {
  const { timeoutMs, maxRedirects = DEFAULT_MAX_REDIRECTS } = options;
  if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) throw new RangeError(`timeoutMs "${timeoutMs}" must be a positive number`);
  if (!Number.isInteger(maxRedirects) || maxRedirects < 0) {
    throw new RangeError(`maxRedirects "${maxRedirects}" must be a whole number, 0 or more`);
  }
  if (httpUrl(hub) === undefined) throw new TypeError(`Hub URL "${hub}" is not an http(s) URL`);
  const doFetch = options.fetch ?? ((url: string, init: RequestInit) => fetch(url, init));
  const body = form.toString();
  const fail = (message: string, kind: HubRequestFailure, at: string, cause?: unknown) =>
    new HubRequestError(withoutSecret(message, form.get("hub.secret")), kind, at, { cause });

  let url = hub;
  for (let redirects = 0;; redirects++) {
    const signal = AbortSignal.timeout(timeoutMs);
    let response: Response;
    try {
      response = await doFetch(url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body,
        // By hand: fetch turns a POST into a GET on 301/302/303, and a hub that moved needs the form
        // again (websub.rocks tests 203, 204). A 303 is re-POSTed too: a GET means nothing to a hub.
        redirect: "manual",
        signal,
      });
    } catch (error) {
      // The signal, not the error's name: runtimes reject an aborted fetch with different error types.
      if (signal.aborted) throw fail(`Hub "${url}" did not answer the POST within ${timeoutMs}ms`, "timeout", url, error);
      throw fail(`Hub "${url}" could not be reached: ${error instanceof Error ? error.message : String(error)}`, "network", url, error);
    }
    const location = REDIRECTS.has(response.status) ? response.headers.get("location") : null;
    // A 3xx without a Location is the hub's answer; the caller sees a status that is not 2xx.
    if (location === null) return { status: response.status, hub: url, body: await preview(response, signal) };
    await response.body?.cancel().catch(() => undefined);
    if (redirects >= maxRedirects) {
      throw fail(`Hub "${hub}" redirected more than ${maxRedirects} times (last from "${url}" to "${location}")`, "redirects", url);
    }
    const next = httpUrl(location, url);
    if (next === undefined) {
      throw fail(`Hub "${url}" redirected to "${location}", which is not an http(s) URL`, "redirects", url);
    }
    // The form may carry hub.secret: never let a redirect move it from https to plain http.
    if (new URL(url).protocol === "https:" && next.protocol === "http:") {
      throw fail(`Hub "${url}" redirected to "${next.href}": refusing to send the form from https to plain http`, "redirects", url);
    }
    url = next.href;
  }
}

function httpUrl(value: string, base?: string): URL | undefined {
  if (!URL.canParse(value, base)) return undefined;
  const url = new URL(value, base);
  return url.protocol === "http:" || url.protocol === "https:" ? url : undefined;
}

// A runtime's error text could in principle echo the request; the secret is cut out wherever it appears.
function withoutSecret(message: string, secret: string | null): string {
  if (secret === null || secret === "") return message;
  let out = message;
  for (const form of new Set([secret, encodeURIComponent(secret), new URLSearchParams({ s: secret }).toString().slice(2)])) {
    out = out.split(form).join("[hub.secret]");
  }
  return out;
}

// The answer's status is what matters: a body that fails or stalls yields what was read by then,
// bounded by the attempt's signal even if a runtime does not propagate the abort to the stream.
async function preview(response: Response, signal: AbortSignal): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let bytes = 0;
  let onAbort: () => void = () => {};
  const aborted = new Promise<{ done: true; value: undefined }>((resolve) => {
    onAbort = () => resolve({ done: true, value: undefined });
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    while (bytes < BODY_PREVIEW_BYTES && !signal.aborted) {
      const { done, value } = await Promise.race([reader.read(), aborted]);
      if (done) break;
      bytes += value.byteLength;
      text += decoder.decode(value, { stream: true });
    }
  } catch {
    // What was read is still worth logging.
  } finally {
    signal.removeEventListener("abort", onAbort);
    reader.cancel().catch(() => undefined);
  }
  return text.slice(0, BODY_PREVIEW_CHARS);
}

/** Whether a hub's answer is worth retrying: 5xx, 429 and 408 are; other answers, 4xx refusals included, are final. */
export function retryable(status: number): boolean {
  return (status >= 500 && status <= 599) || status === 429 || status === 408;
}

/** How long to wait before the next attempt after `failures` consecutive failures: capped exponential backoff, equal jitter. */
export function backoffMs(failures: number, options: { baseMs: number; maxMs: number; random?: () => number }): number {
  const { baseMs, maxMs, random = Math.random } = options;
  if (!Number.isInteger(failures) || failures < 0) throw new RangeError(`failures "${failures}" must be a whole number, 0 or more`);
  if (!(baseMs > 0) || !Number.isFinite(baseMs)) throw new RangeError(`baseMs "${baseMs}" must be a positive number`);
  if (!(maxMs >= baseMs) || !Number.isFinite(maxMs)) {
    throw new RangeError(`maxMs "${maxMs}" must be a number no less than baseMs "${baseMs}"`);
  }
  if (failures === 0) return 0;
  // 2 ** 1100 is Infinity, which the cap turns back into maxMs.
  const ceilingMs = Math.min(maxMs, baseMs * 2 ** (failures - 1));
  // Equal jitter (half fixed, half random) rather than full jitter: workers that failed together
  // still spread out, and none retries at once, so a hub that is down is not hammered.
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.floor(ceilingMs / 2 + r * (ceilingMs / 2));
}
