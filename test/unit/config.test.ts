// The agent's command line and environment (local-agent/config/config.ts): defaults, every flag, and
// the ConfigError (exit code 2 in cli.ts) for each bad value.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, DEFAULTS, DEFAULT_LISTEN, parseAgentCommand, parseEdgeUrl, parseListen, type AgentConfig } from "../../local-agent/config/config.ts";
import { PRIVATE_RULES } from "../../local-agent/config/routing.ts";
import { DEFAULT_WINDOW_BYTES, MAX_WINDOW_BYTES, MIN_TOKEN_LENGTH, MIN_WINDOW_BYTES } from "../../worker/protocol/index.ts";

const TOKEN = "agent-test-token-0123456789";
const ENV = { EDGESOCKS_TOKEN: TOKEN };
const EDGE = ["--edge", "https://edgesocks.example.workers.dev"];

const tempDir = mkdtempSync(join(tmpdir(), "edgesocks-config-test-"));
afterAll(() => rmSync(tempDir, { recursive: true, force: true }));

/** Writes `contents` to a new file in the test's temporary directory and returns its path. */
function tempFile(name: string, contents: string): string {
  const path = join(tempDir, name);
  writeFileSync(path, contents, { mode: 0o600 });
  return path;
}

/** The config parseAgentCommand produces for a run command; fails the test for help or version. */
function runConfig(argv: string[], env: Record<string, string | undefined> = ENV): AgentConfig {
  const command = parseAgentCommand(argv, env);
  if (command.kind !== "run") throw new Error(`expected a run command, got ${command.kind}`);
  return command.config;
}

/** The ConfigError `action` throws, a single line; fails the test if it returns. */
function configError(action: () => unknown): ConfigError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).name).toBe("ConfigError");
    expect((error as ConfigError).message).not.toContain("\n");
    return error as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

describe("parseAgentCommand", () => {
  it("fills every default from --edge and EDGESOCKS_TOKEN alone", () => {
    expect(DEFAULT_LISTEN).toBe("127.0.0.1:1080");
    expect(runConfig(EDGE)).toEqual({
      listenHost: "127.0.0.1",
      listenPort: 1080,
      edges: [{ tunnelUrl: "wss://edgesocks.example.workers.dev/tunnel", edgeLabel: "https://edgesocks.example.workers.dev" }],
      tunnelUrl: "wss://edgesocks.example.workers.dev/tunnel",
      edgeLabel: "https://edgesocks.example.workers.dev",
      token: TOKEN,
      windowBytes: DEFAULT_WINDOW_BYTES,
      handshakeTimeoutMs: 10_000,
      openTimeoutMs: 15_000,
      pingIntervalMs: 15_000,
      maxConnections: 1024,
      poolSize: 4,
      maxStreamsPerTunnel: 4,
      drainTimeoutMs: 5_000,
      maxWindowBytes: 16 * 1024 * 1024,
      windowBudgetBytes: 256 * 1024 * 1024,
      logLevel: "info",
      bypass: "private",
      rules: [...PRIVATE_RULES],
      users: new Map(),
      zeroRtt: false,
      onCloudflare: "refuse",
    } satisfies AgentConfig);
    expect(DEFAULTS).toMatchObject({ handshakeTimeoutMs: 10_000, openTimeoutMs: 15_000, pingIntervalMs: 15_000, maxConnections: 1024, poolSize: 4, logLevel: "info" });
  });

  it("applies every flag", () => {
    const tokenFile = tempFile("every-flag-token", "file-token-abcdefghijklmnop\n");
    const config = runConfig(
      [
        "--edge",
        "http://127.0.0.1:8787",
        "--listen",
        "[::1]:9050",
        "--token-file",
        tokenFile,
        "--window-bytes",
        "65536",
        "--max-window-bytes",
        "4194304",
        "--window-budget-bytes",
        "33554432",
        "--handshake-timeout-ms",
        "2000",
        "--open-timeout-ms",
        "3000",
        "--ping-interval-ms",
        "4000",
        "--max-connections",
        "5",
        "--pool-size",
        "0",
        "--max-streams-per-tunnel",
        "1",
        "--drain-timeout-ms",
        "0",
        "--zero-rtt",
        "--log-level",
        "debug",
        "--bypass",
        "none",
        "--rule",
        "direct:suffix=corp.example",
        "--on-cloudflare",
        "direct",
      ],
      {},
    );
    expect(config).toEqual({
      listenHost: "::1",
      listenPort: 9050,
      edges: [{ tunnelUrl: "ws://127.0.0.1:8787/tunnel", edgeLabel: "http://127.0.0.1:8787" }],
      tunnelUrl: "ws://127.0.0.1:8787/tunnel",
      edgeLabel: "http://127.0.0.1:8787",
      token: "file-token-abcdefghijklmnop",
      windowBytes: 65_536,
      maxWindowBytes: 4_194_304,
      windowBudgetBytes: 33_554_432,
      handshakeTimeoutMs: 2000,
      openTimeoutMs: 3000,
      pingIntervalMs: 4000,
      maxConnections: 5,
      poolSize: 0,
      maxStreamsPerTunnel: 1,
      drainTimeoutMs: 0,
      logLevel: "debug",
      bypass: "none",
      rules: [{ route: "direct", domainSuffix: "corp.example", text: "direct:suffix=corp.example" }],
      users: new Map(),
      zeroRtt: true,
      onCloudflare: "direct",
    } satisfies AgentConfig);
  });

  it("refuses a --max-window-bytes below --window-bytes, and lets the default ceiling follow a larger start", () => {
    expect(() => runConfig(["--edge", "http://127.0.0.1:8787", "--window-bytes", "2097152", "--max-window-bytes", "1048576"])).toThrow(
      "--max-window-bytes (1048576) must not be smaller than --window-bytes (2097152)",
    );
    expect(runConfig(["--edge", "http://127.0.0.1:8787", "--window-bytes", "33554432"])).toMatchObject({ windowBytes: 33_554_432, maxWindowBytes: 33_554_432 });
  });

  it("accepts --flag=value", () => {
    expect(runConfig(["--edge=wss://edge.example", "--window-bytes=16384"])).toMatchObject({ tunnelUrl: "wss://edge.example/tunnel", windowBytes: 16_384 });
  });

  it("keeps every --edge in order, the first as tunnelUrl, and refuses one named twice", () => {
    const config = runConfig(["--edge", "https://a.example", "--edge", "http://127.0.0.1:8788"]);
    expect(config.edges.map((edge) => edge.tunnelUrl)).toEqual(["wss://a.example/tunnel", "ws://127.0.0.1:8788/tunnel"]);
    expect(config.tunnelUrl).toBe("wss://a.example/tunnel");
    expect(() => runConfig(["--edge", "https://a.example", "--edge", "wss://a.example"])).toThrow("--edge: wss://a.example is named twice");
  });

  it.each([["--help"], ["-h"]])("returns help for %s, needing neither --edge nor a token", (flag) => {
    expect(parseAgentCommand([flag], {})).toEqual({ kind: "help" });
  });

  it("returns help before validating other values", () => {
    expect(parseAgentCommand(["--window-bytes", "1", "--help"], {})).toEqual({ kind: "help" });
  });

  it.each([["--version"], ["-v"]])("returns version for %s", (flag) => {
    expect(parseAgentCommand([flag], {})).toEqual({ kind: "version" });
  });

  it("requires --edge", () => {
    expect(configError(() => parseAgentCommand([], ENV)).message).toMatch(/--edge URL is required/);
  });

  it.each([
    [["--bogus"], /^unknown option --bogus; see edgesocks --help$/],
    [["--edge"], /^--edge needs a value: --edge URL; /],
    [[...EDGE, "extra"], /^unexpected argument "extra"; this command takes only options/],
    [["--edge", "--listen"], /^--edge needs a value: --edge URL, not the option --listen; /],
    [["--help", "--bogus"], /^unknown option --bogus/],
  ])("refuses argv %j with one line naming the flag or argument", (argv, pattern) => {
    expect(configError(() => parseAgentCommand(argv, ENV)).message).toMatch(pattern);
  });

  describe("integer options", () => {
    const ranges: Array<[string, number, number]> = [
      ["--window-bytes", MIN_WINDOW_BYTES, MAX_WINDOW_BYTES],
      ["--handshake-timeout-ms", 100, 600_000],
      ["--open-timeout-ms", 100, 600_000],
      ["--ping-interval-ms", 100, 600_000],
      ["--max-connections", 1, 100_000],
    ];
    const key = (flag: string): keyof AgentConfig =>
      flag.slice(2).replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase()) as keyof AgentConfig;

    it.each(ranges)("%s accepts its bounds %i and %i", (flag, min, max) => {
      expect(runConfig([...EDGE, flag, String(min)])[key(flag)]).toBe(min);
      expect(runConfig([...EDGE, flag, String(max)])[key(flag)]).toBe(max);
    });

    it.each(ranges)("%s refuses values outside %i..%i and anything but decimal digits", (flag, min, max) => {
      for (const text of [String(min - 1), String(max + 1), "", "abc", "1.5", "-1", "1e3", " 200", "200 ", "0x100", "+200", "99999999999999999999"]) {
        // --flag=value: node:util's parseArgs would take "--flag -1" for a missing value.
        const error = configError(() => parseAgentCommand([...EDGE, `${flag}=${text}`], ENV));
        expect(error.message).toBe(`${flag} must be an integer from ${min} to ${max}, not "${text}"`);
      }
    });
  });

  it.each(["error", "warn", "info", "debug"])("accepts --log-level %s", (level) => {
    expect(runConfig([...EDGE, "--log-level", level]).logLevel).toBe(level);
  });

  it.each(["verbose", "INFO", ""])("refuses --log-level %j", (level) => {
    expect(configError(() => parseAgentCommand([...EDGE, "--log-level", level], ENV)).message).toMatch(/--log-level must be one of error, warn, info, debug/);
  });

  it("refuses --on-cloudflare other than refuse or direct, with one line naming both", () => {
    expect(configError(() => parseAgentCommand([...EDGE, "--on-cloudflare", "relay"], ENV)).message).toBe('--on-cloudflare must be one of refuse, direct, not "relay"');
  });

  it("takes onCloudflare from the config file unless the flag overrides it", () => {
    expect(runConfig([...EDGE]).onCloudflare).toBe("refuse");
    expect(runConfig([...EDGE, "--on-cloudflare", "direct"]).onCloudflare).toBe("direct");
  });

  it("refuses a non-loopback --listen", () => {
    expect(configError(() => parseAgentCommand([...EDGE, "--listen", "0.0.0.0:1080"], ENV)).message).toMatch(/refusing to listen on 0\.0\.0\.0/);
  });
});

describe("the token", () => {
  it("comes from EDGESOCKS_TOKEN, trimmed", () => {
    expect(runConfig(EDGE, { EDGESOCKS_TOKEN: `  ${TOKEN}\n` }).token).toBe(TOKEN);
  });

  it("comes from --token-file, trimmed, in preference to EDGESOCKS_TOKEN", () => {
    const path = tempFile("token", "\n  from-the-file-0123456789  \r\n");
    expect(runConfig([...EDGE, "--token-file", path], ENV).token).toBe("from-the-file-0123456789");
  });

  it.each([{}, { EDGESOCKS_TOKEN: "" }, { EDGESOCKS_TOKEN: " \t\n" }])("is required: env %j with no --token-file", (env) => {
    expect(configError(() => parseAgentCommand(EDGE, env)).message).toMatch(/no token: set EDGESOCKS_TOKEN .* or pass --token-file/);
  });

  it("refuses a --token-file that does not exist, naming the error code", () => {
    const path = join(tempDir, "missing");
    expect(configError(() => parseAgentCommand([...EDGE, "--token-file", path], ENV)).message).toBe(`--token-file ${path} cannot be read (ENOENT)`);
  });

  it("refuses a --token-file that is a directory", () => {
    const path = join(tempDir, "a-directory");
    mkdirSync(path);
    expect(configError(() => parseAgentCommand([...EDGE, "--token-file", path], ENV)).message).toMatch(/cannot be read \(EISDIR\)/);
  });

  it("refuses an empty or blank --token-file rather than falling back to the environment", () => {
    for (const contents of ["", " \n\t\n"]) {
      const path = tempFile("blank-token", contents);
      expect(configError(() => parseAgentCommand([...EDGE, "--token-file", path], ENV)).message).toBe(`--token-file ${path} is empty`);
    }
  });

  it.each(["two words-0123456789", "a,list-0123456789", "tab\tinside-0123456789", "line\nbreak-0123456789"])(
    "refuses %j, which holds white space or a comma",
    (token) => {
      expect(configError(() => parseAgentCommand(EDGE, { EDGESOCKS_TOKEN: token })).message).toMatch(/must not contain white space or commas/);
      const path = tempFile("bad-token", token);
      expect(configError(() => parseAgentCommand([...EDGE, "--token-file", path], {})).message).toMatch(/must not contain white space or commas/);
    },
  );

  it("refuses a token shorter than the edge's minimum, without printing it", () => {
    expect(() => runConfig(EDGE, { EDGESOCKS_TOKEN: "short-secret" })).toThrow(
      new ConfigError(`the token is shorter than ${MIN_TOKEN_LENGTH} characters; the edge would refuse it`),
    );
    expect(runConfig(EDGE, { EDGESOCKS_TOKEN: "x".repeat(MIN_TOKEN_LENGTH) }).token).toHaveLength(MIN_TOKEN_LENGTH);
  });
});

describe("parseEdgeUrl", () => {
  it.each([
    ["http://127.0.0.1:8787", "ws://127.0.0.1:8787/tunnel", "http://127.0.0.1:8787"],
    ["https://edgesocks.me.workers.dev", "wss://edgesocks.me.workers.dev/tunnel", "https://edgesocks.me.workers.dev"],
    ["https://edgesocks.me.workers.dev/", "wss://edgesocks.me.workers.dev/tunnel", "https://edgesocks.me.workers.dev"],
    ["ws://localhost:8787", "ws://localhost:8787/tunnel", "ws://localhost:8787"],
    ["wss://edge.example", "wss://edge.example/tunnel", "wss://edge.example"],
    ["http://[::1]:8787", "ws://[::1]:8787/tunnel", "http://[::1]:8787"],
    ["HTTPS://Edge.Example:443", "wss://edge.example/tunnel", "https://edge.example"],
    ["http://edge.example:80", "ws://edge.example/tunnel", "http://edge.example"],
    ["https://edge.example:8443", "wss://edge.example:8443/tunnel", "https://edge.example:8443"],
  ])("turns %s into %s", (text, tunnelUrl, edgeLabel) => {
    expect(parseEdgeUrl(text)).toEqual({ tunnelUrl, edgeLabel });
  });

  it.each([
    ["https://edge.example/tunnel", "wss://edge.example/tunnel"],
    ["https://edge.example/tunnel/", "wss://edge.example/tunnel"],
    ["https://edge.example/prefix", "wss://edge.example/prefix/tunnel"],
    ["https://edge.example/prefix//", "wss://edge.example/prefix/tunnel"],
    ["https://edge.example/prefix/tunnel", "wss://edge.example/prefix/tunnel"],
    ["https://edge.example/mytunnel", "wss://edge.example/mytunnel/tunnel"],
  ])("appends /tunnel to the path of %s unless it is already there", (text, tunnelUrl) => {
    expect(parseEdgeUrl(text).tunnelUrl).toBe(tunnelUrl);
  });

  it.each([
    ["ftp://edge.example", /must be an http, https, ws or wss URL, not ftp:\/\//],
    ["file:///tmp/edge", /not file:\/\//],
    ["localhost:8787", /not localhost:\/\//],
    ["127.0.0.1:8787", /is not a URL/],
    ["edge.example", /is not a URL/],
    ["", /is not a URL/],
    ["https://edge.example/?token=x", /must not carry a query or fragment/],
    ["https://edge.example/#x", /must not carry a query or fragment/],
  ])("refuses %j", (text, pattern) => {
    expect(configError(() => parseEdgeUrl(text)).message).toMatch(pattern);
  });

  it("refuses credentials in the URL without repeating them", () => {
    const message = configError(() => parseEdgeUrl("https://user:hunter2@edge.example")).message;
    expect(message).toMatch(/must not carry credentials/);
    expect(message).not.toContain("hunter2");
  });
});

describe("parseListen", () => {
  it.each([
    ["127.0.0.1:1080", "127.0.0.1", 1080],
    ["127.255.0.9:65535", "127.255.0.9", 65535],
    ["127.0.0.1:0", "127.0.0.1", 0],
    ["localhost:9050", "localhost", 9050],
    ["[::1]:1080", "::1", 1080],
    ["[0:0:0:0:0:0:0:1]:1080", "0:0:0:0:0:0:0:1", 1080],
    ["[0000:0000:0000:0000:0000:0000:0000:0001]:1080", "0000:0000:0000:0000:0000:0000:0000:0001", 1080],
  ])("accepts loopback %s", (text, host, port) => {
    expect(parseListen(text)).toEqual({ host, port });
  });

  it.each([
    ["0.0.0.0:1080", "0.0.0.0"],
    ["192.168.1.2:1080", "192.168.1.2"],
    ["10.0.0.1:1080", "10.0.0.1"],
    ["[::]:1080", "::"],
    ["[2001:db8::1]:1080", "2001:db8::1"],
    ["[::2]:1080", "::2"],
    ["example.com:1080", "example.com"],
    ["127.0.0.1.nip.io:1080", "127.0.0.1.nip.io"],
  ])("parses non-loopback %s, which parseAgentCommand allows only with users", (text, host) => {
    expect(parseListen(text)).toEqual({ host, port: 1080 });
    const error = configError(() => parseAgentCommand([...EDGE, "--listen", text], ENV));
    expect(error.message).toBe(
      `refusing to listen on ${host}: no users are configured, so anyone who can reach it could use the proxy; add users (--user NAME:PASS, --users-file PATH or "users" in --config) or serve loopback only (127.0.0.1, ::1, localhost)`,
    );
    expect(runConfig([...EDGE, "--listen", text, "--user", "alice:secret"])).toMatchObject({ listenHost: host, listenPort: 1080 });
  });

  it.each(["[localhost]:1080", "[127.0.0.1]:1080"])("refuses %s: only IPv6 goes in brackets", (text) => {
    expect(configError(() => parseListen(text)).message).toMatch(/only an IPv6 address goes in brackets/);
  });

  it.each(["1080", "127.0.0.1", "127.0.0.1:", ":1080", "::1:1080", "[::1]1080", "[::1]:", "127.0.0.1:-1", "127.0.0.1:http", "127.0.0.1:123456", "127.0.0.1:1080 "])(
    "refuses %j, which is not HOST:PORT",
    (text) => {
      expect(configError(() => parseListen(text)).message).toMatch(/is not HOST:PORT \(IPv6 as \[::1\]:1080\)/);
    },
  );

  it("refuses a port over 65535", () => {
    expect(configError(() => parseListen("127.0.0.1:65536")).message).toMatch(/port 65536 is outside 0\.\.65535/);
  });
});
