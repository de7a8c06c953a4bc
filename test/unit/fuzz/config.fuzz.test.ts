// Property-based fuzzing of the agent's configuration parsers: the --config file
// (local-agent/config/config-file.ts), users (local-agent/config/users-config.ts), single values
// (local-agent/config/config-values.ts) and rule text (local-agent/config/routing.ts). Random, mutated and
// type-confused input gets settings or the typed error (ConfigError, RuleError), never another
// throw, and no message ever holds a password; every valid setting parses to what it says.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseConfigFile } from "../../../local-agent/config/config-file.ts";
import { ConfigError, LIMITS, LIMIT_NAMES, LOG_LEVELS, ON_CLOUDFLARE_MODES, isLoopbackHost, parseEdgeUrl, parseLimit, parseListen } from "../../../local-agent/config/config-values.ts";
import { BYPASS_MODES, ROUTES, RuleError, parseRuleText } from "../../../local-agent/config/routing.ts";
import { parseUserFlag, parseUsersFile } from "../../../local-agent/config/users-config.ts";
import { ipToBytes, parseCidr } from "../../../worker/dial/cidr.ts";
import { accepted, fuzzIt, hostName, hostileText, ipv4Host, ipv6Host, mutatedText, outcomeOf, port, utf8Bytes, wellFormedText } from "./fuzz-support.ts";

const FILE = "/etc/edgesocks/edgesocks.json";
const EXAMPLE = readFileSync(fileURLToPath(new URL("../../../docs/edgesocks.example.json", import.meta.url)), "utf8");
/** A password distinctive enough that finding it in a message can only mean the message quotes it. */
const SECRET = "Pw-7f3a9c-do-not-print";

/** User names as users-config.ts takes them: 1..255 bytes, no ':'. */
const userName = wellFormedText(20)
  .map((text) => text.replace(/:/g, ""))
  .filter((text) => utf8Bytes(text).byteLength >= 1 && utf8Bytes(text).byteLength <= 255);
const password = wellFormedText(20).filter((text) => utf8Bytes(text).byteLength >= 1 && utf8Bytes(text).byteLength <= 255);

/** One rule as the config file writes it, and the command-line text it must read as. */
const ruleMatchers = fc
  .record(
    {
      suffix: hostName.map((name) => name.toLowerCase()),
      host: fc.oneof(hostName.map((name) => name.toLowerCase()), ipv4Host),
      cidr: fc
        .oneof(fc.tuple(ipv4Host, fc.integer({ min: 0, max: 32 })), fc.tuple(ipv6Host, fc.integer({ min: 0, max: 128 })))
        // An IPv4-mapped block counts its prefix over all 128 bits, so it is at least /96 (worker/dial/cidr.ts).
        .map(([address, bits]) => `${address}/${ipToBytes(address)?.length === 4 && address.includes(":") ? Math.max(96, bits) : bits}`),
      port: fc.oneof(port, fc.tuple(port, port).map(([a, b]) => `${Math.min(a, b)}-${Math.max(a, b)}`)),
    },
    { requiredKeys: [] },
  )
  .filter((matchers) => Object.keys(matchers).length > 0);
const rule = fc.tuple(fc.constantFrom(...ROUTES), ruleMatchers).map(([route, matchers]) => ({ route, ...matchers }));

const limits = fc.record(Object.fromEntries(LIMIT_NAMES.map((name) => [name, fc.integer({ min: LIMITS[name].min, max: LIMITS[name].max })])) as Record<(typeof LIMIT_NAMES)[number], fc.Arbitrary<number>>, {
  requiredKeys: [],
});

const listenText = fc.tuple(fc.oneof(ipv4Host, hostName, ipv6Host.map((host) => `[${host}]`)), fc.integer({ min: 0, max: 65535 })).map(([host, listenPort]) => `${host}:${listenPort}`);

/** A valid config file's object: every field optional, users with distinct names. */
const configObject = fc.record(
  {
    listen: listenText,
    edge: hostName.map((name) => `https://${name.toLowerCase()}.workers.dev`),
    tokenFile: fc.constantFrom("token", "secrets/edgesocks.token", "/etc/edgesocks/token"),
    users: fc.uniqueArray(
      fc.tuple(userName, fc.oneof(password.map((value) => ({ password: value })), fc.constant({ passwordEnv: "EDGESOCKS_PASSWORD_X" }), fc.constant({ passwordFile: "alice.password" }))).map(([name, source]) => ({ name, ...source })),
      { maxLength: 3, selector: (user) => user.name },
    ),
    rules: fc.array(rule, { maxLength: 3 }),
    bypass: fc.constantFrom(...BYPASS_MODES),
    limits,
    logLevel: fc.constantFrom(...LOG_LEVELS),
    zeroRtt: fc.boolean(),
    onCloudflare: fc.constantFrom(...ON_CLOUDFLARE_MODES),
  },
  { requiredKeys: [] },
);

/** A valid object with one field's value (at any depth) replaced by a JSON value of any type. */
const typeConfused = fc.tuple(configObject, fc.jsonValue({ maxDepth: 2 }), fc.nat(), fc.constantFrom(...[...Object.keys(LIMITS), "listen", "edge", "users", "rules", "name", "password", "route", "cidr", "port", "token", "__proto__", "constructor", "extra"])).map(
  ([object, value, seed, key]) => {
    const copy = JSON.parse(JSON.stringify(object)) as Record<string, unknown>;
    const containers: Record<string, unknown>[] = [copy];
    const walk = (node: unknown) => {
      if (node !== null && typeof node === "object") {
        if (!Array.isArray(node)) containers.push(node as Record<string, unknown>);
        for (const child of Object.values(node)) walk(child);
      }
    };
    for (const child of Object.values(copy)) walk(child);
    const target = containers[seed % containers.length] ?? copy;
    const keys = Object.keys(target);
    const chosen = seed % 2 === 0 && keys.length > 0 ? (keys[seed % keys.length] ?? key) : key;
    Object.defineProperty(target, chosen, { value, enumerable: true, configurable: true, writable: true });
    return copy;
  },
);

const configText = fc.oneof(
  configObject.map((object) => JSON.stringify(object, null, 2)),
  typeConfused.map((object) => JSON.stringify(object)),
  fc.constant(EXAMPLE),
  mutatedText(fc.constant(EXAMPLE)),
  fc.json({ maxDepth: 3 }),
  // Deep nesting: JSON.parse must not turn it into a stack overflow the parser does not type.
  fc.integer({ min: 1, max: 20_000 }).map((depth) => `${"[".repeat(depth)}${"]".repeat(depth)}`),
  fc.integer({ min: 1, max: 20_000 }).map((depth) => `{"rules":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`),
);

describe("the --config file (fuzz)", () => {
  fuzzIt("gives settings or ConfigError for random, mutated and type-confused files", hostileText(configText), (text) => {
    const parsed = outcomeOf(ConfigError, () => parseConfigFile(text, FILE));
    if (!parsed.ok) {
      expect(parsed.error.message.startsWith(`${FILE}: `)).toBe(true);
      expect(parsed.error.message).not.toContain("\n");
    }
  });

  it("keeps a message to one line when an unknown field's name holds a line break (found by fuzzing)", () => {
    const parsed = outcomeOf(ConfigError, () => parseConfigFile(JSON.stringify({ limits: { "p\ngIntervalMs": 15000 } }), FILE));
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.error.message).toBe(`${FILE}: limits.p\\u000agIntervalMs: unknown field (expected ${LIMIT_NAMES.join(", ")})`);
  });

  fuzzIt("parses every valid file to the settings it holds", configObject, (object) => {
    const settings = parseConfigFile(JSON.stringify(object), FILE);
    if (object.listen !== undefined) expect(settings.listen).toEqual(parseListen(object.listen));
    if (object.edge !== undefined) expect(settings.edges?.[0]?.tunnelUrl).toBe(`${object.edge.replace(/^https:/, "wss:")}/tunnel`);
    if (object.tokenFile !== undefined) expect(settings.tokenFile).toBe(resolve("/etc/edgesocks", object.tokenFile));
    expect(settings.users.map((user) => user.name)).toEqual((object.users ?? []).map((user) => user.name));
    (object.users ?? []).forEach((user, index) => {
      if ("password" in user) expect(settings.users[index]?.password).toEqual({ kind: "literal", password: user.password });
    });
    expect(settings.rules.map((parsed) => parsed.route)).toEqual((object.rules ?? []).map((given) => given.route));
    expect(settings.limits).toEqual(object.limits ?? {});
    expect(settings.bypass).toBe(object.bypass);
    expect(settings.logLevel).toBe(object.logLevel);
    expect(settings.zeroRtt).toBe(object.zeroRtt);
    expect(settings.onCloudflare).toBe(object.onCloudflare);
  });

  fuzzIt(
    "never quotes a password, whatever else in the file is wrong",
    fc.oneof(
      typeConfused.map((object) => JSON.stringify({ ...object, users: [{ name: "alice", password: SECRET }, ...(Array.isArray(object.users) ? object.users : [object.users])] })),
      // Syntax errors anywhere, the password's own string included.
      mutatedText(configObject.map((object) => JSON.stringify({ ...object, users: [{ name: "alice", password: SECRET }] }))).filter((text) => {
        try {
          JSON.parse(text);
          return false;
        } catch {
          return true;
        }
      }),
    ),
    (text) => {
      const parsed = outcomeOf(ConfigError, () => parseConfigFile(text, FILE));
      if (!parsed.ok) expect(parsed.error.message).not.toContain(SECRET.slice(0, 8));
    },
  );
});

describe("users: --user and --users-file (fuzz)", () => {
  /** Names a users file can hold: not blank, not read as a comment. */
  const fileUserName = userName.filter((name) => name.trim() !== "" && !name.trimStart().startsWith("#") && !/[\r\n]/.test(name));
  /** Passwords a users file can hold: one line, no trailing CR (a CRLF file's). */
  const filePassword = password.filter((value) => !/\n/.test(value) && !value.endsWith("\r"));
  const usersFile = fc.tuple(fc.uniqueArray(fc.tuple(fileUserName, filePassword), { maxLength: 4, selector: ([name]) => name }), fc.constantFrom("\n", "\r\n"), fc.boolean());

  fuzzIt("parses every users file to its users, with blank and comment lines around them", usersFile, ([users, newline, decorated]) => {
    const lines = users.map(([name, secret]) => `${name}:${secret}`);
    const text = (decorated ? ["# users", "", ...lines, "   ", "  # end"] : lines).join(newline);
    expect(parseUsersFile(text, "users.txt").map((user) => [user.name, user.password])).toEqual(users.map(([name, secret]) => [name, { kind: "literal", password: secret }]));
  });

  fuzzIt(
    "gives users or ConfigError for random and mutated users files, never quoting a password",
    hostileText(usersFile.map(([users, newline]) => [...users.map(([name, secret]) => `${name}:${secret}`), `bob:${SECRET}`].join(newline))),
    (text) => {
      const parsed = outcomeOf(ConfigError, () => parseUsersFile(text, "users.txt"));
      if (!parsed.ok) expect(parsed.error.message).not.toContain(SECRET.slice(0, 8));
    },
  );

  fuzzIt("parses --user NAME:PASS to the name and the password after the first ':'", fc.tuple(userName, password), ([name, secret]) => {
    expect(parseUserFlag(`${name}:${secret}`)).toMatchObject({ name, password: { kind: "literal", password: secret } });
  });

  fuzzIt("gives a user or ConfigError for random and mutated --user values", hostileText(fc.tuple(userName, password).map(([name, secret]) => `${name}:${secret}`)), (text) => {
    const parsed = outcomeOf(ConfigError, () => parseUserFlag(text));
    if (!parsed.ok) expect(parsed.error.message).not.toMatch(/[\r\n]/);
  });
});

describe("single values: --listen, --edge, limits (fuzz)", () => {
  fuzzIt("parses every HOST:PORT to its host and port", fc.tuple(fc.oneof(ipv4Host, hostName, ipv6Host.map((host) => `[${host}]`)), fc.integer({ min: 0, max: 65535 })), ([host, listenPort]) => {
    expect(parseListen(`${host}:${listenPort}`)).toEqual({ host: host.replace(/^\[(.*)\]$/, "$1"), port: listenPort });
  });

  fuzzIt("gives a listen address or ConfigError for random and mutated --listen values, and isLoopbackHost never throws", hostileText(listenText), (text) => {
    const parsed = outcomeOf(ConfigError, () => parseListen(text));
    if (parsed.ok) accepted(() => isLoopbackHost(parsed.value.host));
    accepted(() => isLoopbackHost(text));
  });

  const edgeUrl = fc.tuple(fc.constantFrom("https", "http", "wss", "ws", "HTTPS"), hostName.map((name) => name.toLowerCase()), fc.option(port), fc.constantFrom("", "/", "/base", "/base/", "/tunnel", "/a/tunnel/"));
  fuzzIt("turns every edge URL into its tunnel URL", edgeUrl, ([scheme, host, edgePort, path]) => {
    const wsScheme = { https: "wss", http: "ws", wss: "wss", ws: "ws", HTTPS: "wss" }[scheme];
    const parsed = parseEdgeUrl(`${scheme}://${host}${edgePort === null ? "" : `:${edgePort}`}${path}`);
    expect(parsed.tunnelUrl.startsWith(`${wsScheme}://`)).toBe(true);
    expect(parsed.tunnelUrl.endsWith("/tunnel")).toBe(true);
    expect(parsed.tunnelUrl).not.toContain("/tunnel/tunnel");
  });

  fuzzIt(
    "gives an edge or ConfigError for random and mutated --edge values",
    hostileText(edgeUrl.map(([scheme, host, edgePort, path]) => `${scheme}://${host}${edgePort === null ? "" : `:${edgePort}`}${path}`)),
    (text) => {
      const parsed = outcomeOf(ConfigError, () => parseEdgeUrl(text));
      if (parsed.ok) expect(parsed.value.tunnelUrl).toMatch(/^wss?:\/\/[^/]+\/(.*\/)?tunnel$/);
    },
  );

  const limitName = fc.constantFrom(...LIMIT_NAMES);
  fuzzIt("parses every in-range limit, as text or as a number, to its value", limitName.chain((name) => fc.tuple(fc.constant(name), fc.integer({ min: LIMITS[name].min, max: LIMITS[name].max }), fc.boolean())), ([name, value, asText]) => {
    expect(parseLimit(name, asText ? String(value) : value, name)).toBe(value);
  });

  fuzzIt(
    "gives a limit or ConfigError for random text and any number",
    fc.tuple(limitName, fc.oneof(hostileText(fc.integer({ min: 0, max: 1_000_000 }).map(String)), fc.double(), fc.integer())),
    ([name, value]) => {
      const parsed = outcomeOf(ConfigError, () => parseLimit(name, value, name));
      if (parsed.ok) expect(Number.isSafeInteger(parsed.value) && parsed.value >= LIMITS[name].min && parsed.value <= LIMITS[name].max).toBe(true);
    },
  );
});

describe("rule text (fuzz)", () => {
  const ruleText = rule.map(({ route, ...matchers }) => `${route}:${Object.entries(matchers).map(([kind, value]) => `${kind}=${value}`).join(",")}`);

  fuzzIt("parses every rule to its route and matchers", rule, ({ route, ...matchers }) => {
    const text = `${route}:${Object.entries(matchers).map(([kind, value]) => `${kind}=${value}`).join(",")}`;
    const parsed = parseRuleText(text);
    expect(parsed.route).toBe(route);
    expect(parsed.text).toBe(text);
    if (matchers.suffix !== undefined) expect(parsed.domainSuffix).toBe(matchers.suffix);
    if (matchers.host !== undefined) expect(parsed.host).toBe(matchers.host);
    if (matchers.cidr !== undefined) expect(parsed.cidr).toEqual(parseCidr(matchers.cidr));
    if (matchers.port !== undefined) {
      const [from, to = from] = String(matchers.port).split("-").map(Number);
      expect(parsed.port).toEqual({ from, to });
    }
  });

  fuzzIt("gives a rule or RuleError for random and mutated rule text", hostileText(ruleText), (text) => {
    outcomeOf(RuleError, () => parseRuleText(text));
  });
});
