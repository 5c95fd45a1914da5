/**
 * The `redis://` URLs the Redis store accepts: parsed into what the client needs, with a printable
 * form that never holds the password. Apart from the store so that checking a `WEBSUB_STORE` spec
 * (open.ts) does not load the Redis client.
 */

/** Where a `redis://` URL points, with its credentials kept apart from its printable form. */
export interface RedisTarget {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  /** The URL without the password: `redis://host:6379/0` or `redis://user:***@host:6379/0`. */
  description: string;
}

const URL_FORM = "use redis://[user:password@]host[:port][/db]";

// For text that is not a URL: everything between the scheme and the last "@" may be a password.
function redactText(text: string): string {
  const scheme = text.indexOf("://");
  const at = text.lastIndexOf("@");
  return scheme >= 0 && at > scheme ? `${text.slice(0, scheme + 3)}***${text.slice(at)}` : text;
}

/** Parses `redis://[user:password@]host[:port][/db]`; throws a sentence that never contains the password. */
export function parseRedisUrl(url: string): RedisTarget {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`"${redactText(url)}" is not a Redis URL: ${URL_FORM}`);
  }
  const username = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = parsed.port === "" ? 6379 : Number(parsed.port);
  const dbText = parsed.pathname.replace(/^\//, "");
  const db = dbText === "" ? 0 : Number(dbText);
  // A lone user part may well be a password written as redis://secret@host, so it is hidden too.
  const auth = password !== "" ? `${username}:***@` : username !== "" ? "***@" : "";
  const description = `${parsed.protocol}//${auth}${parsed.host.replace(/:\d+$/, "")}:${port}/${dbText === "" ? 0 : dbText}`;
  // ioredis could speak TLS, but certificates and their options have no place in this URL: refused
  // by name, so that nobody believes the connection is encrypted.
  if (parsed.protocol === "rediss:") {
    throw new Error(
      `"${description}" asks for TLS, which this Redis client does not support: use redis:// on a private network or through a TLS tunnel`,
    );
  }
  if (parsed.protocol !== "redis:") throw new Error(`"${description}" is not a Redis URL: ${URL_FORM}`);
  if (host === "") throw new Error(`"${description}" has no host: ${URL_FORM}`);
  if (!/^\d+$/.test(dbText) && dbText !== "") {
    throw new Error(`"${description}" has database "${dbText}": use a number, e.g. redis://host:6379/0`);
  }
  if (parsed.search !== "" || parsed.hash !== "") {
    throw new Error(`"${description}" has a query or fragment, which is not read: ${URL_FORM}`);
  }
  if (username !== "" && password === "") throw new Error(`"${description}" has a user but no password: ${URL_FORM}`);
  return {
    host,
    port,
    db,
    ...(username !== "" ? { username } : {}),
    ...(password !== "" ? { password } : {}),
    description,
  };
}
