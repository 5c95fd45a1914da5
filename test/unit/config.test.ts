import { describe, expect, test } from "bun:test";
import { loadConfig } from "../../src/main/_env.ts";
import { ConfigError, formatDuration, parseDurationMs, resolveServeOptions } from "../../src/policy/config.ts";

describe("parseDurationMs", () => {
  test("reads every unit", () => {
    expect(parseDurationMs("500ms")).toBe(500);
    expect(parseDurationMs("75s")).toBe(75_000);
    expect(parseDurationMs("15m")).toBe(900_000);
    expect(parseDurationMs("2h")).toBe(7_200_000);
    expect(parseDurationMs("0")).toBe(0);
  });

  test("a bare number other than 0 is rejected, because Node counts ms and Bun seconds", () => {
    expect(() => parseDurationMs("15")).toThrow('"15" has no unit: use e.g. 15s or 15m');
  });

  test("what 0 means is said only when the caller says it: it differs between variables", () => {
    expect(() => parseDurationMs("15")).toThrow(new Error('"15" has no unit: use e.g. 15s or 15m'));
    expect(() => parseDurationMs("15", "0 disables")).toThrow(new Error('"15" has no unit: use e.g. 15s or 15m (0 disables)'));
  });

  test("a bare number's examples are ones that would be accepted", () => {
    expect(() => parseDurationMs("2000")).toThrow(new Error('"2000" has no unit: use e.g. 2000s or 2000ms'));
    expect(() => parseDurationMs("100000")).toThrow(new Error('"100000" has no unit: use e.g. 100000ms'));
    expect(() => parseDurationMs("100000000")).toThrow(new Error('"100000000" has no unit, and is over the maximum of 24h in any unit'));
  });

  test("a fraction is refused, naming the same duration in a smaller unit", () => {
    expect(() => parseDurationMs("1.5s")).toThrow(new Error('"1.5s" is not an integer: use e.g. 1500ms'));
    expect(() => parseDurationMs("1.5h")).toThrow(new Error('"1.5h" is not an integer: use e.g. 90m'));
    expect(() => parseDurationMs("0.5ms")).toThrow(new Error('"0.5ms" is not an integer: use an integer with a unit ms, s, m or h'));
  });

  test("fractions, signs, spaces inside and unknown units are rejected", () => {
    for (const bad of ["1.5s", "-1s", "1 s", "10d", "s", "", "1e3ms", "0x10s"]) {
      expect(() => parseDurationMs(bad)).toThrow(`"${bad}"`);
    }
  });

  test("durations longer than a day are rejected", () => {
    expect(parseDurationMs("24h")).toBe(86_400_000);
    expect(() => parseDurationMs("25h")).toThrow(new Error('"25h" is over the maximum of 24h'));
    expect(() => parseDurationMs("1441m")).toThrow(new Error('"1441m" is over the maximum of 24h'));
  });

  test("formatDuration is the inverse for whole units", () => {
    for (const text of ["500ms", "75s", "15m", "2h", "0", "1500ms"]) {
      expect(formatDuration(parseDurationMs(text))).toBe(text);
    }
  });
});

describe("loadConfig", () => {
  test("defaults live in the schema", () => {
    expect(loadConfig({})).toEqual({
      ok: true,
      config: {
        port: 8080,
        host: "0.0.0.0",
        idleTimeoutMs: 75_000,
        headersTimeoutMs: 20_000,
        requestTimeoutMs: 60_000,
        shutdownTimeoutMs: 10_000,
        shutdownDelayMs: 0,
        bodyLimitBytes: 1_048_576,
        maxConnections: null,
        trustProxy: false,
        websocketPingIntervalMs: 30_000,
        websocketMaxMessageBytes: 1_048_576,
        websocketMaxBufferedBytes: 4_194_304,
        sseHeartbeatMs: 15_000,
      },
    });
  });

  test("empty variables count as unset", () => {
    const result = loadConfig({ PORT: "", IDLE_TIMEOUT: " " });
    expect(result.ok && result.config.port).toBe(8080);
    expect(result.ok && result.config.idleTimeoutMs).toBe(75_000);
  });

  test("reads every variable", () => {
    const result = loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      IDLE_TIMEOUT: "15m",
      HEADERS_TIMEOUT: "0",
      REQUEST_TIMEOUT: "2s",
      SHUTDOWN_TIMEOUT: "500ms",
      SHUTDOWN_DELAY: "15s",
      MAX_CONNECTIONS: "500",
      TRUST_PROXY: "true",
      WEBSOCKET_PING_INTERVAL: "0",
      WEBSOCKET_MAX_MESSAGE: "64kb",
      WEBSOCKET_MAX_BUFFERED: "1mb",
      SSE_HEARTBEAT: "5s",
    });
    expect(result).toEqual({
      ok: true,
      config: {
        port: 0,
        host: "127.0.0.1",
        idleTimeoutMs: 900_000,
        headersTimeoutMs: 0,
        requestTimeoutMs: 2_000,
        shutdownTimeoutMs: 500,
        shutdownDelayMs: 15_000,
        bodyLimitBytes: 1_048_576,
        maxConnections: 500,
        trustProxy: true,
        websocketPingIntervalMs: 0,
        websocketMaxMessageBytes: 65_536,
        websocketMaxBufferedBytes: 1_048_576,
        sseHeartbeatMs: 5_000,
      },
    });
  });

  test("every problem is one line that names the variable, the value and what is allowed", () => {
    const result = loadConfig({ PORT: "99999", HOST: "a b", IDLE_TIMEOUT: "15", SHUTDOWN_TIMEOUT: "soon" });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.problems).toEqual([
      'PORT "99999" is over the maximum of 65535 (0 picks a free one)',
      'HOST "a b" is not an address: use an IP address or a host name, e.g. 0.0.0.0 or 127.0.0.1',
      'IDLE_TIMEOUT "15" has no unit: use e.g. 15s or 15m (0 disables)',
      'SHUTDOWN_TIMEOUT "soon" is not a duration: use an integer with a unit ms, s, m or h, e.g. 500ms, 75s, 15m',
    ]);
  });

  test("each duration variable says what 0 means for it", () => {
    const problem = (name: string) => {
      const result = loadConfig({ [name]: "10" });
      return result.ok ? [] : result.problems;
    };
    expect(problem("IDLE_TIMEOUT")).toEqual(['IDLE_TIMEOUT "10" has no unit: use e.g. 10s or 10m (0 disables)']);
    expect(problem("HEADERS_TIMEOUT")).toEqual(['HEADERS_TIMEOUT "10" has no unit: use e.g. 10s or 10m (0 disables)']);
    expect(problem("REQUEST_TIMEOUT")).toEqual(['REQUEST_TIMEOUT "10" has no unit: use e.g. 10s or 10m (0 disables)']);
    // Shutdown is never disabled: 0 cuts what is in flight when the delay ends.
    expect(problem("SHUTDOWN_TIMEOUT")).toEqual([
      'SHUTDOWN_TIMEOUT "10" has no unit: use e.g. 10s or 10m (0 cuts in-flight requests at once)',
    ]);
    expect(problem("SHUTDOWN_DELAY")).toEqual(['SHUTDOWN_DELAY "10" has no unit: use e.g. 10s or 10m (0 closes the listener at once)']);
  });

  test("a value over a maximum is said to be over it", () => {
    const problems = (env: Record<string, string>) => {
      const result = loadConfig(env);
      return result.ok ? [] : result.problems;
    };
    expect(problems({ IDLE_TIMEOUT: "25h" })).toEqual(['IDLE_TIMEOUT "25h" is over the maximum of 24h']);
    expect(problems({ PORT: "65536" })).toEqual(['PORT "65536" is over the maximum of 65535 (0 picks a free one)']);
    expect(problems({ MAX_CONNECTIONS: "12345678" })).toEqual([
      'MAX_CONNECTIONS "12345678" is over the maximum of 1000000 (0 means no limit)',
    ]);
    expect(problems({ BODY_LIMIT: "5gb" })).toEqual(['BODY_LIMIT "5gb" is over the maximum of 100mb']);
    expect(problems({ BODY_LIMIT: "1TB" })).toEqual(['BODY_LIMIT "1TB" is over the maximum of 100mb']);
  });

  test("a port that is not a number is named once", () => {
    const result = loadConfig({ PORT: "http" });
    expect(result.ok ? [] : result.problems).toEqual([
      'PORT "http" is not a port: use an integer from 0 to 65535 (0 picks a free one)',
    ]);
  });

  test("HEADERS_TIMEOUT may not exceed REQUEST_TIMEOUT", () => {
    const result = loadConfig({ HEADERS_TIMEOUT: "30s", REQUEST_TIMEOUT: "10s" });
    expect(result.ok ? [] : result.problems).toEqual([
      'HEADERS_TIMEOUT "30s" is longer than REQUEST_TIMEOUT "10s": the head is part of the request, so use at most that',
    ]);
  });

  test("either deadline at 0 disables the cross-field rule", () => {
    expect(loadConfig({ HEADERS_TIMEOUT: "30s", REQUEST_TIMEOUT: "0" }).ok).toBe(true);
    expect(loadConfig({ HEADERS_TIMEOUT: "0", REQUEST_TIMEOUT: "10s" }).ok).toBe(true);
  });

  test("BODY_LIMIT takes a size with a unit, from 1b to 100mb; each refusal says which of those it broke", () => {
    const result = loadConfig({ BODY_LIMIT: "512kb" });
    expect(result.ok && result.config.bodyLimitBytes).toBe(524_288);
    expect(loadConfig({ BODY_LIMIT: "100MB" })).toMatchObject({ ok: true, config: { bodyLimitBytes: 104_857_600 } });
    const problems = (value: string) => {
      const result = loadConfig({ BODY_LIMIT: value });
      return result.ok ? [] : result.problems;
    };
    expect(problems("1048576")).toEqual(['BODY_LIMIT "1048576" has no unit: use e.g. 1048576b']);
    expect(problems("512")).toEqual(['BODY_LIMIT "512" has no unit: use e.g. 512b or 512kb']);
    expect(problems("999999999")).toEqual(['BODY_LIMIT "999999999" has no unit, and is over the maximum of 100mb in any unit']);
    expect(problems("101mb")).toEqual(['BODY_LIMIT "101mb" is over the maximum of 100mb']);
    expect(problems("5gb")).toEqual(['BODY_LIMIT "5gb" is over the maximum of 100mb']);
    // There is no "no limit": 0 is under the minimum, not a size without a unit.
    expect(problems("0")).toEqual(['BODY_LIMIT "0" is under the minimum of 1b: use a size from 1b to 100mb']);
    expect(problems("0kb")).toEqual(['BODY_LIMIT "0kb" is under the minimum of 1b: use a size from 1b to 100mb']);
    expect(problems("1.5mb")).toEqual(['BODY_LIMIT "1.5mb" is not an integer: use e.g. 1536kb']);
    expect(problems("0.5b")).toEqual(['BODY_LIMIT "0.5b" is not an integer: use an integer with a unit b, kb or mb']);
    expect(problems("lots")).toEqual(['BODY_LIMIT "lots" is not a size: use an integer with a unit b, kb or mb, e.g. 512kb or 1mb']);
    expect(problems("10k")).toEqual(['BODY_LIMIT "10k" is not a size: use an integer with a unit b, kb or mb, e.g. 512kb or 1mb']);
  });

  test("MAX_CONNECTIONS is a plain count; 0 turns the limit off", () => {
    expect(loadConfig({ MAX_CONNECTIONS: "0" })).toMatchObject({ ok: true, config: { maxConnections: 0 } });
    expect(loadConfig({ MAX_CONNECTIONS: "1000000" })).toMatchObject({ ok: true, config: { maxConnections: 1_000_000 } });
    for (const value of ["-1", "1.5", "10k", "many"]) {
      expect(loadConfig({ MAX_CONNECTIONS: value })).toEqual({
        ok: false,
        problems: [`MAX_CONNECTIONS "${value}" is not a connection count: use an integer from 1 to 1000000, or 0 for no limit`],
      });
    }
    expect(loadConfig({ MAX_CONNECTIONS: "1000001" })).toEqual({
      ok: false,
      problems: ['MAX_CONNECTIONS "1000001" is over the maximum of 1000000 (0 means no limit)'],
    });
  });

  test("SHUTDOWN_DELAY is a duration, 0 by default, at most 24h", () => {
    expect(loadConfig({ SHUTDOWN_DELAY: "1500ms" })).toMatchObject({ ok: true, config: { shutdownDelayMs: 1_500 } });
    expect(loadConfig({ SHUTDOWN_DELAY: "0" })).toMatchObject({ ok: true, config: { shutdownDelayMs: 0 } });
    expect(loadConfig({ SHUTDOWN_DELAY: "" })).toMatchObject({ ok: true, config: { shutdownDelayMs: 0 } });
    expect(loadConfig({ SHUTDOWN_DELAY: "24h" })).toMatchObject({ ok: true, config: { shutdownDelayMs: 86_400_000 } });
    expect(loadConfig({ SHUTDOWN_DELAY: "5" })).toEqual({
      ok: false,
      problems: ['SHUTDOWN_DELAY "5" has no unit: use e.g. 5s or 5m (0 closes the listener at once)'],
    });
    expect(loadConfig({ SHUTDOWN_DELAY: "soon" })).toEqual({
      ok: false,
      problems: ['SHUTDOWN_DELAY "soon" is not a duration: use an integer with a unit ms, s, m or h, e.g. 500ms, 75s, 15m'],
    });
    expect(loadConfig({ SHUTDOWN_DELAY: "25h" })).toEqual({ ok: false, problems: ['SHUTDOWN_DELAY "25h" is over the maximum of 24h'] });
  });

  test("unrelated variables are ignored", () => {
    expect(loadConfig({ PATH: "/bin", IDLE_TIMEOUTS: "x" }).ok).toBe(true);
  });
});

describe("resolveServeOptions (what serve() accepts)", () => {
  test("fills in the same defaults the environment has", () => {
    const config = resolveServeOptions({});
    const env = loadConfig({});
    expect(env.ok).toBe(true);
    if (!env.ok) return;
    expect(config).toEqual({ ...env.config, bodyLimitByPath: {}, probes: {}, engine: "auto", reusePort: false });
  });

  test("every wrong option is named in one ConfigError, with its value", () => {
    let caught: unknown;
    try {
      resolveServeOptions({ port: 70_000, idleTimeoutMs: -1, headersTimeoutMs: 1.5, maxConnections: 2_000_000 });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems).toEqual([
      "port 70000 is over the maximum of 65535",
      "idleTimeoutMs -1 is not a duration in milliseconds: use an integer from 0 to 86400000",
      "headersTimeoutMs 1.5 is not a duration in milliseconds: use an integer from 0 to 86400000",
      "maxConnections 2000000 is over the maximum of 1000000",
    ]);
    expect((caught as Error).message).toBe((caught as ConfigError).problems.join("\n"));
  });

  test("shutdownDelayMs is 0 by default and a whole number of milliseconds up to a day", () => {
    expect(resolveServeOptions({}).shutdownDelayMs).toBe(0);
    expect(resolveServeOptions({ shutdownDelayMs: 5_000 }).shutdownDelayMs).toBe(5_000);
    for (const bad of [-1, 1.5]) {
      expect(() => resolveServeOptions({ shutdownDelayMs: bad })).toThrow(
        `shutdownDelayMs ${bad} is not a duration in milliseconds: use an integer from 0 to 86400000`,
      );
    }
    expect(() => resolveServeOptions({ shutdownDelayMs: 86_400_001 })).toThrow(
      new Error("shutdownDelayMs 86400001 is over the maximum of 86400000"),
    );
    expect(() => resolveServeOptions({ shutdownDelayMs: "5s" } as never)).toThrow(ConfigError);
  });

  test("a misspelt option is refused rather than ignored", () => {
    expect(() => resolveServeOptions({ idleTimeout: 5 } as never)).toThrow(ConfigError);
  });

  test("the head deadline may not be longer than the request's", () => {
    expect(() => resolveServeOptions({ headersTimeoutMs: 30_000, requestTimeoutMs: 10_000 })).toThrow(
      "headersTimeoutMs 30000 is longer than requestTimeoutMs 10000: the head is part of the request",
    );
    expect(resolveServeOptions({ headersTimeoutMs: 30_000, requestTimeoutMs: 0 }).headersTimeoutMs).toBe(30_000);
  });
});
