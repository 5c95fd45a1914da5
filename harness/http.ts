/**
 * One request on a connection of its own, which `Connection: close` leaves nothing of on the
 * server; rejects when no answer comes within `timeoutMs`.
 */
export function fetchOnce(url: string | URL, timeoutMs = 5_000): Promise<Response> {
  return fetch(url, { headers: { connection: "close" }, signal: AbortSignal.timeout(timeoutMs) });
}

/** A keep-alive GET as raw bytes. */
export function get(path: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
}

/** True once `data` holds a complete response whose body is fixed-length or chunked. */
export function completeResponses(data: string): number {
  let count = 0;
  let rest = data;
  for (;;) {
    const headEnd = rest.indexOf("\r\n\r\n");
    if (headEnd < 0) return count;
    const head = rest.slice(0, headEnd).toLowerCase();
    const body = rest.slice(headEnd + 4);
    const length = /content-length:\s*(\d+)/.exec(head);
    if (length) {
      const n = Number(length[1]);
      if (body.length < n) return count;
      rest = body.slice(n);
    } else if (/transfer-encoding:\s*chunked/.test(head)) {
      const end = body.indexOf("\r\n0\r\n\r\n");
      const atStart = body.startsWith("0\r\n\r\n");
      if (end < 0 && !atStart) return count;
      rest = atStart ? body.slice(5) : body.slice(end + 7);
    } else {
      return count;
    }
    count += 1;
  }
}

/** The value of one sample line of a Prometheus exposition; fails the test when it is missing. */
export function metric(exposition: string, series: string): number {
  const line = exposition.split("\n").find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no ${series} in /metrics:\n${exposition}`);
  return Number(line.slice(series.length + 1));
}
