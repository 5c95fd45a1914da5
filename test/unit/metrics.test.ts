import { describe, expect, test } from "bun:test";
import { createRegistry, METRICS_CONTENT_TYPE } from "../../src/policy/metrics.ts";

interface ParsedFamily {
  name: string;
  help: string;
  type: string;
  samples: { labels: [string, string][]; value: number }[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Reads a 0.0.4 exposition strictly, throwing on the first line that breaks a rule this project relies on. */
function parseExposition(text: string): ParsedFamily[] {
  if (text === "") return [];
  if (!text.endsWith("\n") || text.endsWith("\n\n")) throw new Error("must end with exactly one newline");
  if (text.includes("\r")) throw new Error("lines must be separated by \\n only");
  const lines = text.slice(0, -1).split("\n");
  const families: ParsedFamily[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const at = `line ${i + 1} "${line}"`;
    const current = families.at(-1);
    const help = /^# HELP (\S+) (.*)$/.exec(line);
    if (help) {
      if (current && current.samples.length === 0) throw new Error(`${at}: previous family has no samples`);
      if (!NAME.test(help[1])) throw new Error(`${at}: bad metric name`);
      if (families.some((f) => f.name === help[1])) throw new Error(`${at}: family repeated`);
      if (/\\[^\\n]|\\$/.test(help[2].replace(/\\\\/g, ""))) throw new Error(`${at}: bad escape in HELP`);
      const unescaped = help[2].replace(/\\(\\|n)/g, (_, c: string) => (c === "n" ? "\n" : "\\"));
      families.push({ name: help[1], help: unescaped, type: "", samples: [] });
      continue;
    }
    const type = /^# TYPE (\S+) (counter|gauge)$/.exec(line);
    if (type) {
      if (!current || current.name !== type[1] || current.type !== "" || i === 0 || !lines[i - 1].startsWith("# HELP ")) {
        throw new Error(`${at}: TYPE must directly follow the HELP of the same family`);
      }
      current.type = type[2];
      continue;
    }
    if (line.startsWith("#")) throw new Error(`${at}: unexpected comment`);
    if (!current || current.type === "") throw new Error(`${at}: sample before HELP and TYPE`);
    const sample = /^([^{ ]+)(\{.*\})? (\S+)$/.exec(line);
    if (!sample) throw new Error(`${at}: not a sample line`);
    if (sample[1] !== current.name) throw new Error(`${at}: sample does not belong to family ${current.name}`);
    if (sample[2] === "{}") throw new Error(`${at}: empty braces`);
    const labels = sample[2] ? parseLabels(sample[2].slice(1, -1), at) : [];
    const raw = sample[3];
    const special: Record<string, number> = { NaN: NaN, "+Inf": Infinity, "-Inf": -Infinity };
    if (!(raw in special) && !FLOAT.test(raw)) throw new Error(`${at}: bad value`);
    current.samples.push({ labels, value: raw in special ? special[raw] : Number(raw) });
  }
  if (families.at(-1)?.samples.length === 0) throw new Error("last family has no samples");
  return families;
}

/** Parses `a="x",b="y\"z"` into pairs, unescaping values. */
function parseLabels(body: string, at: string): [string, string][] {
  const pairs: [string, string][] = [];
  let rest = body;
  while (rest !== "") {
    const m = /^([^=]+)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/.exec(rest);
    if (!m || !LABEL.test(m[1]) || m[1].startsWith("__")) throw new Error(`${at}: bad label syntax near ${rest}`);
    if (pairs.some(([k]) => k === m[1])) throw new Error(`${at}: label ${m[1]} repeated`);
    if (m[3] === "," && m[0].length === rest.length) throw new Error(`${at}: trailing comma`);
    pairs.push([m[1], m[2].replace(/\\([\\"n])/g, (_, c: string) => (c === "n" ? "\n" : c))]);
    rest = rest.slice(m[0].length);
  }
  return pairs;
}

describe("exposition layout", () => {
  test("HELP, TYPE, then samples; no braces without labels; one trailing newline", () => {
    const r = createRegistry();
    r.counter("jobs_total", "Jobs run.").inc();
    r.gauge("queue_depth", "Jobs waiting.", ["queue"]).set(3, { queue: "a" });
    expect(r.render()).toBe(
      "# HELP jobs_total Jobs run.\n# TYPE jobs_total counter\njobs_total 1\n" +
        '# HELP queue_depth Jobs waiting.\n# TYPE queue_depth gauge\nqueue_depth{queue="a"} 3\n',
    );
  });

  test("the content type names format 0.0.4", () => {
    expect(METRICS_CONTENT_TYPE).toBe("text/plain; version=0.0.4; charset=utf-8");
  });

  test("an empty registry renders nothing", () => {
    expect(createRegistry().render()).toBe("");
  });

  test("HELP escapes backslash and newline but not quotes", () => {
    const r = createRegistry();
    r.gauge("g", 'a\\b\nc "q"');
    expect(r.render().split("\n")[0]).toBe('# HELP g a\\\\b\\nc "q"');
  });

  test("label values escape backslash, double quote and newline", () => {
    const r = createRegistry();
    r.counter("c_total", "c", ["path"]).inc({ path: 'C:\\x "y"\nz' });
    expect(r.render()).toContain('c_total{path="C:\\\\x \\"y\\"\\nz"} 1\n');
  });
});

describe("values", () => {
  test("integers without a decimal point, fractions as JS prints them, NaN and infinities spelled out", () => {
    const r = createRegistry();
    const g = r.gauge("v", "v", ["k"]);
    const cases: [number, string][] = [
      [2, "2"],
      [-7, "-7"],
      [2.0, "2"],
      [0.25, "0.25"],
      [1e-7, "1e-7"],
      [NaN, "NaN"],
      [Infinity, "+Inf"],
      [-Infinity, "-Inf"],
    ];
    cases.forEach(([value], i) => g.set(value, { k: String(i) }));
    const lines = r.render().trimEnd().split("\n").slice(2);
    expect(lines).toEqual(cases.map(([, text], i) => `v{k="${i}"} ${text}`));
  });

  test("gauges set, inc and dec; get reads back, 0 for an unused combination", () => {
    const r = createRegistry();
    const g = r.gauge("g", "g", ["k"]);
    g.set(5, { k: "a" });
    g.inc({ k: "a" });
    g.inc({ k: "a" }, 2.5);
    g.dec({ k: "a" }, 0.5);
    g.dec({ k: "b" });
    expect(g.get({ k: "a" })).toBe(8);
    expect(g.get({ k: "b" })).toBe(-1);
    expect(g.get({ k: "never" })).toBe(0);
  });

  test("counters add `by`, defaulting to 1, and accept 0", () => {
    const c = createRegistry().counter("c_total", "c");
    c.inc();
    c.inc(undefined, 4);
    c.inc({}, 0);
    expect(c.get()).toBe(5);
  });

  test("labels() binds one series once: it shows at 0 at once, counts with inc(), and checks its labels and `by` like inc", () => {
    const r = createRegistry();
    const c = r.counter("req_total", "r", ["class"]);
    const ok = c.labels({ class: "2xx" });
    expect(r.render()).toContain('\nreq_total{class="2xx"} 0\n');
    ok.inc();
    ok.inc(2);
    c.inc({ class: "2xx" });
    expect(c.get({ class: "2xx" })).toBe(4);
    expect(() => ok.inc(-1)).toThrow("counters only go up");
    expect(() => c.labels({ status: "200" })).toThrow('label "status" was not declared');
  });
});

describe("series", () => {
  test("an unlabelled counter or gauge shows 0 before any update", () => {
    const r = createRegistry();
    r.counter("c_total", "c");
    r.gauge("g", "g");
    expect(r.render()).toBe("# HELP c_total c\n# TYPE c_total counter\nc_total 0\n# HELP g g\n# TYPE g gauge\ng 0\n");
  });

  test("a labelled family shows only combinations used, in first-use order, and nothing at all before", () => {
    const r = createRegistry();
    const c = r.counter("hits_total", "h", ["route"]);
    expect(r.render()).toBe("");
    c.inc({ route: "/b" });
    c.inc({ route: "/a" });
    c.inc({ route: "/b" });
    expect(r.render().split("\n").slice(2, -1)).toEqual(['hits_total{route="/b"} 2', 'hits_total{route="/a"} 1']);
  });

  test("labels print in declared order whatever order the keys were passed in", () => {
    const r = createRegistry();
    const c = r.counter("req_total", "r", ["method", "status"]);
    c.inc({ status: "200", method: "GET" });
    c.inc({ method: "GET", status: "200" });
    expect(r.render()).toContain('req_total{method="GET",status="200"} 2\n');
  });

  test("families render in registration order", () => {
    const r = createRegistry();
    r.gauge("b", "b");
    r.collect("a", "a", "gauge", () => [{ value: 1 }]);
    r.counter("c_total", "c");
    const names = r.render().split("\n").filter((l) => l.startsWith("# TYPE")).map((l) => l.split(" ")[2]);
    expect(names).toEqual(["b", "a", "c_total"]);
  });
});

describe("collect", () => {
  test("samples are read at each render", () => {
    const r = createRegistry();
    let fds = 10;
    r.collect("process_open_fds", "Open fds.", "gauge", () => [{ value: fds }]);
    expect(r.render()).toBe("# HELP process_open_fds Open fds.\n# TYPE process_open_fds gauge\nprocess_open_fds 10\n");
    fds = 12;
    expect(r.render()).toContain("process_open_fds 12\n");
  });

  test("a family whose read() returns [] is omitted entirely", () => {
    const r = createRegistry();
    r.gauge("before", "b");
    r.collect("absent", "x", "gauge", () => []);
    r.gauge("after", "a");
    const out = r.render();
    expect(out).not.toContain("absent");
    expect(out).toBe("# HELP before b\n# TYPE before gauge\nbefore 0\n# HELP after a\n# TYPE after gauge\nafter 0\n");
  });

  test("collected labels are escaped and their names validated at render", () => {
    const r = createRegistry();
    r.collect("info", "i", "gauge", () => [{ labels: { v: 'a"b' }, value: 1 }]);
    expect(r.render()).toContain('info{v="a\\"b"} 1\n');
    const bad = createRegistry();
    bad.collect("info", "i", "gauge", () => [{ labels: { "bad-name": "x" }, value: 1 }]);
    expect(() => bad.render()).toThrow('invalid label name "bad-name"');
  });
});

describe("validation", () => {
  test("metric names must match the Prometheus name pattern", () => {
    const r = createRegistry();
    for (const bad of ["", "1abc", "a-b", "a b", "é"]) {
      expect(() => r.gauge(bad, "x")).toThrow("invalid metric name");
      expect(() => r.collect(bad, "x", "gauge", () => [])).toThrow("invalid metric name");
    }
    expect(() => r.gauge("ns:sub_name:x", "x")).not.toThrow();
  });

  test("counter names must end in _total, including collected counters", () => {
    const r = createRegistry();
    expect(() => r.counter("requests", "x")).toThrow("must end in _total");
    expect(() => r.counter("a-b_total", "x")).toThrow("invalid metric name");
    expect(() => r.collect("cpu_seconds", "x", "counter", () => [])).toThrow("must end in _total");
    expect(() => r.counter("requests_total", "x")).not.toThrow();
  });

  test("label names must match the pattern and not start with __", () => {
    const r = createRegistry();
    for (const bad of ["1a", "a-b", "__name", "a:b", ""]) {
      expect(() => r.counter("x_total", "x", [bad])).toThrow(`invalid label name "${bad}"`);
    }
    expect(() => r.counter("x_total", "x", ["_ok", "a1"])).not.toThrow();
  });

  test("a label name declared twice throws", () => {
    expect(() => createRegistry().gauge("g", "g", ["a", "a"])).toThrow("duplicate label names");
  });

  test("registering a family name twice throws, across kinds", () => {
    const r = createRegistry();
    r.counter("dup_total", "x");
    expect(() => r.counter("dup_total", "x")).toThrow("registered twice");
    expect(() => r.collect("dup_total", "x", "counter", () => [])).toThrow("registered twice");
    r.gauge("g", "x");
    expect(() => r.gauge("g", "x", ["k"])).toThrow("registered twice");
  });

  test("an undeclared label or a missing declared label throws, for updates and reads", () => {
    const r = createRegistry();
    const c = r.counter("c_total", "c", ["a", "b"]);
    expect(() => c.inc({ a: "1", b: "2", z: "3" })).toThrow('label "z" was not declared');
    expect(() => c.inc({ a: "1" })).toThrow('missing label "b"');
    expect(() => c.inc()).toThrow('missing label "a"');
    expect(() => c.get({ a: "1" })).toThrow('missing label "b"');
    const g = r.gauge("g", "g");
    expect(() => g.set(1, { a: "1" })).toThrow('label "a" was not declared');
    expect(r.render()).toBe("# HELP g g\n# TYPE g gauge\ng 0\n");
  });

  test("a counter refuses a negative or NaN increment and keeps its value", () => {
    const c = createRegistry().counter("c_total", "c");
    c.inc(undefined, 2);
    expect(() => c.inc(undefined, -1)).toThrow("counters only go up");
    expect(() => c.inc(undefined, NaN)).toThrow("counters only go up");
    expect(c.get()).toBe(2);
  });
});

describe("parser over a registry exercising every feature", () => {
  function fullRegistry() {
    const r = createRegistry();
    r.counter("app_requests_total", "Requests by method and status.", ["method", "status"]).inc({ status: "200", method: "GET" }, 3);
    r.counter("app_boots_total", "Boots.");
    const g = r.gauge("app_temperature_celsius", 'Temp with "quotes", a \\ and\na newline.', ["room"]);
    g.set(21.5, { room: 'lab "1"\\west\nwing' });
    g.set(NaN, { room: "nan" });
    g.set(Infinity, { room: "hot" });
    g.set(-Infinity, { room: "cold" });
    r.gauge("app_unused", "Never set.", ["x"]);
    r.collect("process_open_fds", "Open fds.", "gauge", () => [{ value: 7 }]);
    r.collect("app_empty", "Empty.", "gauge", () => []);
    r.collect(
      "app_jobs_done_total",
      "Jobs.",
      "counter",
      () => [{ labels: { queue: "a" }, value: 1e21 }, { labels: { queue: "b" }, value: 0.1 }],
    );
    return r;
  }

  test("every line follows the rules and the values round-trip", () => {
    const families = parseExposition(fullRegistry().render());
    expect(families.map((f) => [f.name, f.type])).toEqual([
      ["app_requests_total", "counter"],
      ["app_boots_total", "counter"],
      ["app_temperature_celsius", "gauge"],
      ["process_open_fds", "gauge"],
      ["app_jobs_done_total", "counter"],
    ]);
    expect(families[0].samples).toEqual([{ labels: [["method", "GET"], ["status", "200"]], value: 3 }]);
    expect(families[1].samples).toEqual([{ labels: [], value: 0 }]);
    expect(families[2].help).toBe('Temp with "quotes", a \\ and\na newline.');
    expect(families[2].samples).toEqual([
      { labels: [["room", 'lab "1"\\west\nwing']], value: 21.5 },
      { labels: [["room", "nan"]], value: NaN },
      { labels: [["room", "hot"]], value: Infinity },
      { labels: [["room", "cold"]], value: -Infinity },
    ]);
    expect(families[3].samples).toEqual([{ labels: [], value: 7 }]);
    expect(families[4].samples).toEqual([
      { labels: [["queue", "a"]], value: 1e21 },
      { labels: [["queue", "b"]], value: 0.1 },
    ]);
  });

  test("the parser itself rejects what the rules forbid", () => {
    const ok = "# HELP a x\n# TYPE a gauge\na 1\n";
    expect(parseExposition(ok)).toHaveLength(1);
    const broken: [string, string][] = [
      ["# HELP a x\n# TYPE a gauge\na 1", "exactly one newline"],
      [ok + "\n", "exactly one newline"],
      ["# HELP a x\r\n# TYPE a gauge\r\na 1\r\n", "\\n only"],
      ["# HELP a x\n# TYPE a gauge\nb 1\n", "does not belong"],
      ["# TYPE a gauge\na 1\n", "TYPE must directly follow"],
      ["# HELP a x\n# TYPE a summary\na 1\n", "unexpected comment"],
      ["# HELP a x\n# TYPE a gauge\na 1.2.3\n", "bad value"],
      ["# HELP a x\n# TYPE a gauge\na Inf\n", "bad value"],
      ['# HELP a x\n# TYPE a gauge\na{k="v} 1\n', "bad label syntax"],
      ['# HELP a x\n# TYPE a gauge\na{__k="v"} 1\n', "bad label syntax"],
      ['# HELP a x\n# TYPE a gauge\na{k="v",} 1\n', "trailing comma"],
      ["# HELP a x\n# TYPE a gauge\na{} 1\n", "empty braces"],
      ["# HELP a x\\t\n# TYPE a gauge\na 1\n", "bad escape"],
      ["# HELP a x\n# TYPE a gauge\n# HELP b y\n# TYPE b gauge\nb 1\n", "no samples"],
      ["# HELP a x\n# TYPE a gauge\na 1\n# HELP a x\n# TYPE a gauge\na 1\n", "family repeated"],
    ];
    for (const [text, message] of broken) expect(() => parseExposition(text)).toThrow(message);
  });
});
