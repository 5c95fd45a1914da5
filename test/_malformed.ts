/**
 * A seeded generator of malformed HTTP/1.1 requests: the same seed gives the same bytes, so a
 * failure can be replayed (HARDENING_SEED). Each request starts from a well-formed one and breaks
 * one to three things a parser, the framing or the app must reject.
 */

/** A small, fast PRNG (mulberry32): uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

interface Parts {
  method: string;
  target: string;
  version: string;
  headers: Array<[string, string]>;
  body: string;
  eol: string;
}

type Mutation = (p: Parts, pick: <T>(items: readonly T[]) => T, random: () => number) => void;

const CONTROL = [..."\x00\x01\x07\x08\x0b\x0c\x0e\x1f\x7f"];

/** Each breaks one thing; names say what. */
const MUTATIONS: Record<string, Mutation> = {
  badMethod: (p, pick) => (p.method = pick(["G ET", "", "GET\x00", "\u00e9TAT", "GET/", "(GET)", "X".repeat(300)])),
  badTarget: (
    p,
    pick,
  ) => (p.target = pick([
    "",
    "noslash",
    "/a b",
    "/\x01",
    "/%zz",
    "/\x7f",
    "/\u00ff\u00fe",
    "/" + "a".repeat(20_000),
    "//../../etc/passwd",
    "*",
    "http://",
  ])),
  badVersion: (p, pick) => (p.version = pick(["HTTP/2.0", "HTTP/1.x", "HTTP/9.9", "HTTP", "http/1.1", "HTTP/1.1 extra", "", "HTTP/01.1"])),
  badQuery: (
    p,
    pick,
  ) => (p.target = pick([
    "/slow?ms=abc",
    "/slow?ms=-1",
    "/slow?ms=1e3",
    "/slow?ms=999999999",
    "/stream?chunks=0",
    "/stream?interval=x",
    "/delay?ms=1.5",
    "/nope",
    "/echo",
  ])),
  badHeaderName: (p, pick) => p.headers.push([pick(["Bad Header", "X:Y", "", " X-Lead", "X-\x00", "X\u00e9", "("]), "v"]),
  controlInValue: (p, pick) => p.headers.push(["X-Ctl", `a${pick(CONTROL)}b`]),
  obsFold: (p) => p.headers.push(["X-Fold", "a\r\n b"]),
  hugeHeader: (p, pick) => p.headers.push(["X-Big", "a".repeat(pick([17_000, 70_000, 200_000]))]),
  manyHeaders: (p) => {
    for (let i = 0; i < 300; i++) p.headers.push([`X-H${i}`, "v"]);
  },
  noHost: (p) => (p.headers = p.headers.filter(([name]) => name.toLowerCase() !== "host")),
  twoHosts: (p) => p.headers.push(["Host", "other.example"]),
  badContentLength: (p, pick) => {
    p.method = "POST";
    p.target = "/echo";
    p.headers.push(["Content-Length", pick(["abc", "-1", "1.5", "99999999999999999999", "5, 6", ""])]);
    p.body = "hello";
  },
  conflictingLength: (p) => {
    p.method = "POST";
    p.target = "/echo";
    p.headers.push(["Content-Length", "5"], ["Content-Length", "6"]);
    p.body = "hello!";
  },
  lengthAndChunked: (p) => {
    p.method = "POST";
    p.target = "/echo";
    p.headers.push(["Content-Length", "5"], ["Transfer-Encoding", "chunked"]);
    p.body = "0\r\n\r\n";
  },
  badChunks: (p, pick) => {
    p.method = "POST";
    p.target = "/echo";
    p.headers.push(["Transfer-Encoding", pick(["chunked", "gzip, chunked", "chunked, gzip", "identity", "xchunked"])]);
    p.body = pick([
      "ZZ\r\nhello\r\n0\r\n\r\n",
      "5\r\nhel",
      "5\r\nhelloXX\r\n0\r\n\r\n",
      "-1\r\n\r\n",
      "ffffffffffffffff\r\n",
      "5;ext=" + "e".repeat(20_000) + "\r\nhello\r\n0\r\n\r\n",
    ]);
  },
  truncatedBody: (p) => {
    p.method = "POST";
    p.target = "/echo";
    p.headers.push(["Content-Length", "100"]);
    p.body = "only a little";
  },
  oversizedBody: (p) => {
    p.method = "POST";
    p.target = "/echo";
    p.headers.push(["Content-Length", String(2 * 1_048_576)]);
    p.body = "x".repeat(1_100_000);
  },
  bareLf: (p) => (p.eol = "\n"),
  bareCr: (p) => (p.eol = "\r"),
  leadingGarbage: (p, pick) => (p.method = pick(["\r\n\r\nGET", "\x16\x03\x01GET", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET"])),
  flipByte: () => {}, // applied to the serialised bytes below
};

function serialise(p: Parts): Buffer {
  const head = [`${p.method} ${p.target} ${p.version}`.trimEnd(), ...p.headers.map(([k, v]) => `${k}: ${v}`)].join(p.eol);
  return Buffer.from(`${head}${p.eol}${p.eol}${p.body}`, "latin1");
}

/** `count` malformed requests from `random`, as the bytes to write. */
export function malformedRequests(random: () => number, count: number): Buffer[] {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const names = Object.keys(MUTATIONS);
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const parts: Parts = {
      method: "GET",
      target: pick(["/", "/healthz", "/slow?ms=0", "/stream?chunks=1&interval=0"]),
      version: "HTTP/1.1",
      headers: [["Host", "127.0.0.1"]],
      body: "",
      eol: "\r\n",
    };
    const chosen = Array.from({ length: 1 + Math.floor(random() * 3) }, () => pick(names));
    for (const name of chosen) MUTATIONS[name]!(parts, pick, random);
    const bytes = serialise(parts);
    if (chosen.includes("flipByte")) {
      for (let n = 1 + Math.floor(random() * 3); n > 0; n--) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
    }
    out.push(bytes);
  }
  return out;
}
