// The --config file (local-agent/config/config-file.ts): the shipped example parses, and every bad file
// is a ConfigError naming the file, the field path and the reason, never a secret's value.

import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseConfigFile } from "../../local-agent/config/config-file.ts";
import { ConfigError } from "../../local-agent/config/config-values.ts";
import { routeFor } from "../../local-agent/config/routing.ts";
import { AddressType, type Destination } from "../../worker/protocol/index.ts";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const FILE = "/etc/edgesocks/edgesocks.json";
const SECRET = "hunter2-do-not-print";

/** parseConfigFile on `value` serialized as JSON. */
function parse(value: unknown, file = FILE) {
  return parseConfigFile(JSON.stringify(value), file);
}

/** The one-line ConfigError message parsing `text` produces; fails the test if it parses. */
function errorFor(text: string, file = FILE): string {
  try {
    parseConfigFile(text, file);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    const { message } = error as ConfigError;
    expect(message).not.toContain("\n");
    expect(message.startsWith(`${file}: `)).toBe(true);
    expect(message).not.toContain(SECRET);
    return message;
  }
  throw new Error(`expected a ConfigError for ${text}`);
}

const fieldError = (value: unknown) => errorFor(JSON.stringify(value));

function domain(host: string, port: number): Destination {
  return { type: AddressType.Domain, host, port };
}
function ipv4(host: string, port: number): Destination {
  return { type: AddressType.IPv4, host, port };
}

describe("the example docs/edgesocks.example.json", () => {
  const path = join(repoRoot, "docs", "edgesocks.example.json");
  const settings = parseConfigFile(readFileSync(path, "utf8"), path);
  const docs = join(repoRoot, "docs");

  it("takes a list of edges in order", () => {
    const parsed = parseConfigFile(JSON.stringify({ edge: ["https://a.example", "http://127.0.0.1:8788"] }), FILE);
    expect(parsed.edges).toEqual([
      { tunnelUrl: "wss://a.example/tunnel", edgeLabel: "https://a.example" },
      { tunnelUrl: "ws://127.0.0.1:8788/tunnel", edgeLabel: "http://127.0.0.1:8788" },
    ]);
  });

  it("parses, with its relative paths resolved against docs/", () => {
    expect(settings.listen).toEqual({ host: "0.0.0.0", port: 1080 });
    expect(settings.edges).toEqual([{ tunnelUrl: "wss://edgesocks.example.workers.dev/tunnel", edgeLabel: "https://edgesocks.example.workers.dev" }]);
    expect(settings.tokenFile).toBe(join(docs, "edgesocks.token"));
    expect(settings.users).toEqual([
      { name: "alice", label: `${path} users[0]`, password: { kind: "file", path: join(docs, "alice.password"), label: `${path}: users[0].passwordFile` } },
      { name: "bob", label: `${path} users[1]`, password: { kind: "env", variable: "EDGESOCKS_PASSWORD_BOB", label: `${path}: users[1].passwordEnv` } },
    ]);
    expect(settings.bypass).toBe("private");
    expect(settings.logLevel).toBe("info");
    expect(settings.limits).toEqual({ maxConnections: 256, windowBytes: 1_048_576, handshakeTimeoutMs: 10_000, openTimeoutMs: 15_000, pingIntervalMs: 15_000, poolSize: 4, maxStreamsPerTunnel: 4, drainTimeoutMs: 5_000 });
    expect(settings.zeroRtt).toBe(false);
  });

  it("routes by its rules in file order", () => {
    expect(settings.rules.map((rule) => rule.text)).toEqual([
      "direct:suffix=corp.example",
      "block:port=25",
      "direct:cidr=198.51.100.0/24,port=8000-8999",
      "edge:host=api.example.com,port=443",
    ]);
    expect(routeFor(domain("git.corp.example", 25), settings.rules)).toBe("direct");
    expect(routeFor(domain("mail.example.org", 25), settings.rules)).toBe("block");
    expect(routeFor(ipv4("198.51.100.7", 8080), settings.rules)).toBe("direct");
    expect(routeFor(ipv4("198.51.100.7", 443), settings.rules)).toBe("edge");
  });
});

describe("parseConfigFile", () => {
  it("takes an empty object as no settings", () => {
    expect(parse({})).toEqual({ users: [], rules: [], limits: {} });
  });

  it("resolves tokenFile and passwordFile against the file's directory, keeping absolute paths", () => {
    const settings = parse({
      tokenFile: "token",
      users: [
        { name: "alice", passwordFile: "../secrets/alice" },
        { name: "bob", passwordFile: "/run/secrets/bob" },
      ],
    });
    expect(settings.tokenFile).toBe("/etc/edgesocks/token");
    expect(settings.users.map((user) => user.password)).toEqual([
      { kind: "file", path: "/etc/secrets/alice", label: `${FILE}: users[0].passwordFile` },
      { kind: "file", path: "/run/secrets/bob", label: `${FILE}: users[1].passwordFile` },
    ]);
  });

  it("resolves paths of a file given by a relative name against the working directory's subfolder", () => {
    expect(parse({ tokenFile: "token" }, "conf/edgesocks.json").tokenFile).toBe(resolve("conf", "token"));
  });

  it("keeps a literal password and accepts 255-byte names and passwords", () => {
    const name = "n".repeat(255);
    const password = "é".repeat(127) + "x";
    expect(parse({ users: [{ name, password }] }).users).toEqual([{ name, label: `${FILE} users[0]`, password: { kind: "literal", password } }]);
  });

  it("accepts a port as a number or N-M text, and every matcher together", () => {
    const [rule] = parse({ rules: [{ route: "block", suffix: "example.com", host: "www.example.com", port: "80-90" }] }).rules;
    expect(rule).toMatchObject({ route: "block", domainSuffix: "example.com", host: "www.example.com", port: { from: 80, to: 90 } });
    expect(parse({ rules: [{ route: "edge", cidr: "2001:db8::/32", port: 443 }] }).rules[0]).toMatchObject({ port: { from: 443, to: 443 }, cidr: { prefixBits: 32 } });
  });

  describe("refuses text that is not JSON, without quoting it", () => {
    it.each([
      [`{"users": [{"name": "a", "password": "${SECRET}" "x"}]}`, /is not valid JSON: expected ',' or '}' after property value at line 1 column 61$/],
      [`{\n  "listen": "0.0.0.0:1080",\n}`, /is not valid JSON: expected double-quoted property name at line 3 column 1$/],
      [`${SECRET}`, /is not valid JSON: unexpected character$/],
      ["", /is not valid JSON: unexpected end of input$/],
      [`{"a": 1} ${SECRET}`, /is not valid JSON: unexpected non-whitespace character after JSON at line 1 column 10$/],
    ])("%j", (text, pattern) => {
      expect(errorFor(text)).toMatch(pattern);
    });
  });

  it.each([[[]], ["text"], [null], [7]])("refuses a top level of %j", (value) => {
    expect(fieldError(value)).toMatch(new RegExp(`^${FILE}: must hold a JSON object`));
  });

  it("refuses a token, telling where it goes instead, without printing it", () => {
    expect(fieldError({ token: SECRET })).toBe(
      `${FILE}: token: a token in the config file is not supported; put it in a file named by tokenFile, or in EDGESOCKS_TOKEN`,
    );
  });

  it.each([
    [{ lsiten: "127.0.0.1:1080" }, "lsiten: unknown field (expected listen, edge, tokenFile, users, rules, bypass, limits, logLevel, zeroRtt, onCloudflare)"],
    [{ users: [{ name: "a", password: SECRET, passwrd: SECRET }] }, "users[0].passwrd: unknown field (expected name, password, passwordEnv, passwordFile)"],
    [{ rules: [{ route: "direct", domain: "corp.example" }] }, "rules[0].domain: unknown field (expected route, suffix, host, cidr, port)"],
    [{ limits: { maxConnection: 5 } }, "limits.maxConnection: unknown field (expected windowBytes, maxWindowBytes, windowBudgetBytes, handshakeTimeoutMs, openTimeoutMs, pingIntervalMs, maxConnections, poolSize, maxStreamsPerTunnel, drainTimeoutMs)"],
  ])("refuses the unknown field in %j", (value, message) => {
    expect(fieldError(value)).toContain(`${FILE}: ${message}`);
  });

  it("refuses a __proto__ key as an unknown field rather than taking it as the prototype", () => {
    expect(errorFor(`{"__proto__": {"listen": "0.0.0.0:1080"}}`)).toMatch(new RegExp(`^${FILE}: __proto__: unknown field`));
  });

  it.each([
    [{ listen: 1080 }, "listen: must be a string, not a number"],
    [{ edge: null }, "edge: must be a URL string or a list of them, not null"],
    [{ edge: [] }, "edge: must name at least one edge URL"],
    [{ edge: ["https://a.example", 7] }, "edge[1]: must be a URL string, not a number"],
    [{ edge: ["https://a.example", "https://a.example/"] }, "edge: https://a.example is named twice"],
    [{ tokenFile: ["a"] }, "tokenFile: must be a string, not an array"],
    [{ users: { name: "a" } }, "users: must be an array, not an object"],
    [{ users: ["alice:pw"] }, "users[0]: must be an object, not a string"],
    [{ users: [{ name: 7, password: "x" }] }, "users[0].name: must be a string, not a number"],
    [{ users: [{ name: "a", password: 123456 }] }, "users[0].password: must be a string, not a number"],
    [{ users: [{ name: "a", passwordEnv: true }] }, "users[0].passwordEnv: must be a string, not a boolean"],
    [{ users: [{ name: "a", passwordFile: {} }] }, "users[0].passwordFile: must be a string, not an object"],
    [{ rules: "direct:suffix=x" }, "rules: must be an array, not a string"],
    [{ rules: [null] }, "rules[0]: must be an object, not null"],
    [{ rules: [{ route: 1, suffix: "x" }] }, "rules[0].route: must be a string, not a number"],
    [{ rules: [{ route: "direct", suffix: ["a", "b"] }] }, "rules[0].suffix: must be a string, not an array"],
    [{ rules: [{ route: "direct", port: true }] }, "rules[0].port: must be a number or a string N-M, not a boolean"],
    [{ bypass: false }, "bypass: must be a string, not a boolean"],
    [{ limits: 5 }, "limits: must be an object, not a number"],
    [{ limits: { windowBytes: "65536" } }, "limits.windowBytes: must be a number, not a string"],
    [{ logLevel: 2 }, "logLevel: must be a string, not a number"],
    [{ zeroRtt: "yes" }, "zeroRtt: must be true or false, not a string"],
    [{ onCloudflare: "relay" }, 'onCloudflare: must be one of refuse, direct, not "relay"'],
  ])("refuses the wrong type in %j", (value, message) => {
    expect(fieldError(value)).toBe(`${FILE}: ${message}`);
  });

  it.each([
    [{ listen: "0.0.0.0" }, 'listen "0.0.0.0" is not HOST:PORT (IPv6 as [::1]:1080)'],
    [{ listen: "127.0.0.1:70000" }, "listen port 70000 is outside 0..65535"],
    [{ edge: "ftp://edge.example" }, "edge must be an http, https, ws or wss URL, not ftp://"],
    [{ edge: `https://me:${SECRET}@edge.example` }, "edge must not carry credentials; the token comes from EDGESOCKS_TOKEN or --token-file"],
    [{ tokenFile: "" }, "tokenFile: must not be empty"],
    [{ bypass: "all" }, 'bypass: must be one of private, none, not "all"'],
    [{ logLevel: "verbose" }, 'logLevel: must be one of error, warn, info, debug, not "verbose"'],
    [{ limits: { windowBytes: 12 } }, "limits.windowBytes must be an integer from 16384 to 67108864, not 12"],
    [{ limits: { maxConnections: 0 } }, "limits.maxConnections must be an integer from 1 to 100000, not 0"],
    [{ limits: { poolSize: 65 } }, "limits.poolSize must be an integer from 0 to 64, not 65"],
    [{ limits: { openTimeoutMs: 1500.5 } }, "limits.openTimeoutMs must be an integer from 100 to 600000, not 1500.5"],
    [{ limits: { pingIntervalMs: 600_001 } }, "limits.pingIntervalMs must be an integer from 100 to 600000, not 600001"],
  ])("refuses the bad value in %j", (value, message) => {
    expect(fieldError(value)).toBe(`${FILE}: ${message}`);
  });

  describe("users", () => {
    it.each([
      [[{ password: SECRET }], "users[0]: needs a name"],
      [[{ name: "", password: SECRET }], "users[0].name: a user name must be 1..255 bytes, not 0"],
      [[{ name: "n".repeat(256), password: SECRET }], "users[0].name: a user name must be 1..255 bytes, not 256"],
      [[{ name: "al:ice", password: SECRET }], "users[0].name: a user name must not contain ':'"],
      [[{ name: "alice" }], 'users[0]: user "alice" needs one of password, passwordEnv or passwordFile'],
      [[{ name: "alice", password: SECRET, passwordEnv: "PW" }], 'users[0]: user "alice" takes only one of password, passwordEnv or passwordFile'],
      [[{ name: "alice", password: "" }], "users[0].password: a password must be 1..255 bytes (RFC 1929), not 0"],
      [[{ name: "alice", password: SECRET.repeat(20) }], `users[0].password: a password must be 1..255 bytes (RFC 1929), not ${SECRET.length * 20}`],
      [[{ name: "alice", password: "é".repeat(128) }], "users[0].password: a password must be 1..255 bytes (RFC 1929), not 256"],
      [[{ name: "alice", passwordEnv: "MY-PASSWORD" }], "users[0].passwordEnv: must name an environment variable (letters, digits and _, not starting with a digit)"],
      [[{ name: "alice", passwordEnv: `${SECRET}!` }], "users[0].passwordEnv: must name an environment variable (letters, digits and _, not starting with a digit)"],
      [[{ name: "alice", passwordFile: "" }], "users[0].passwordFile: must not be empty"],
    ])("refuses %j", (users, message) => {
      expect(fieldError({ users })).toBe(`${FILE}: ${message}`);
    });

    it("refuses a user listed twice, naming both entries", () => {
      const users = [
        { name: "alice", password: SECRET },
        { name: "bob", passwordEnv: "BOB_PW" },
        { name: "bob", passwordFile: "bob.pw" },
      ];
      expect(fieldError({ users })).toBe(`${FILE}: users[2].name: user "bob" is already users[1]`);
    });
  });

  describe("rules", () => {
    it.each([
      [[{ suffix: "corp.example" }], "rules[0]: needs a route (edge, direct, block)"],
      [[{ route: "proxy", suffix: "corp.example" }], 'rules[0].route: must be one of edge, direct, block, not "proxy"'],
      [[{ route: "direct" }], "rules[0]: needs at least one of suffix, host, cidr, port (a rule matching everything would hide all after it)"],
      [[{ route: "direct", suffix: "corp.example" }, { route: "block", suffix: "bad name!" }], 'rules[1].suffix: suffix "bad name!" is not a domain name'],
      [[{ route: "direct", host: "a b" }], 'rules[0].host: host "a b" is not a host name or IP address'],
      [[{ route: "direct", cidr: "10.0.0.0/33" }], 'rules[0].cidr: "10.0.0.0/33": prefix length must be 0..32'],
      [[{ route: "direct", cidr: "10.0.0/8" }], 'rules[0].cidr: "10.0.0" is not an IPv4 or IPv6 address'],
      [[{ route: "direct", cidr: "::/129" }], 'rules[0].cidr: "::/129": prefix length must be 0..128'],
      [[{ route: "block", port: 0 }], 'rules[0].port: port "0" is not N or N-M within 1..65535'],
      [[{ route: "block", port: 70_000 }], 'rules[0].port: port "70000" is not N or N-M within 1..65535'],
      [[{ route: "block", port: 25.5 }], 'rules[0].port: port "25.5" is not N or N-M within 1..65535'],
      [[{ route: "block", port: "90-80" }], 'rules[0].port: port "90-80" is not N or N-M within 1..65535'],
      [[{ route: "block", suffix: "example.com", port: "smtp" }], 'rules[0].port: port "smtp" is not N or N-M within 1..65535'],
    ])("refuses %j", (rules, message) => {
      expect(fieldError({ rules })).toBe(`${FILE}: ${message}`);
    });
  });
});
