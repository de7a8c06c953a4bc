// Users, the config file and their interplay with flags in parseAgentCommand (local-agent/config/config.ts,
// users-config.ts): where passwords come from, who may listen beyond loopback, which value wins,
// and the order rules are tried in.

import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, parseAgentCommand, type AgentConfig } from "../../local-agent/config/config.ts";
import { PRIVATE_RULES, routeFor } from "../../local-agent/config/routing.ts";
import { passwordEnvName } from "../../local-agent/config/users-config.ts";
import { AddressType } from "../../worker/protocol/index.ts";

const TOKEN = "agent-users-test-token-0123456789";
const ENV = { EDGESOCKS_TOKEN: TOKEN };
const EDGE = ["--edge", "https://edgesocks.example.workers.dev"];
const SECRET = "hunter2-do-not-print";

const tempDir = mkdtempSync(join(tmpdir(), "edgesocks-users-test-"));
afterAll(() => rmSync(tempDir, { recursive: true, force: true }));

let fileCount = 0;
/** Writes `contents` to a new file in the temporary directory and returns its path. */
function tempFile(contents: string, name = `file-${(fileCount += 1)}`): string {
  const path = join(tempDir, name);
  writeFileSync(path, contents, { mode: 0o600 });
  return path;
}
const configFile = (value: unknown) => tempFile(JSON.stringify(value), `config-${(fileCount += 1)}.json`);

function runConfig(argv: string[], env: Record<string, string | undefined> = ENV): AgentConfig {
  const command = parseAgentCommand(argv, env);
  if (command.kind !== "run") throw new Error(`expected a run command, got ${command.kind}`);
  return command.config;
}

/** The one-line ConfigError message for argv; never holds SECRET. */
function errorFor(argv: string[], env: Record<string, string | undefined> = ENV): string {
  try {
    parseAgentCommand(argv, env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    const { message } = error as ConfigError;
    expect(message).not.toContain("\n");
    expect(message).not.toContain(SECRET);
    return message;
  }
  throw new Error("expected a ConfigError");
}

const usersOf = (argv: string[], env: Record<string, string | undefined> = ENV) => Object.fromEntries(runConfig([...EDGE, ...argv], env).users);

describe("--user", () => {
  it("takes NAME:PASS, splitting at the first colon, and is repeatable", () => {
    expect(usersOf(["--user", "alice:pa:ss#word", "--user", "bob:x"])).toEqual({ alice: "pa:ss#word", bob: "x" });
  });

  it("reads the password of a bare NAME from EDGESOCKS_PASSWORD_<NAME>", () => {
    expect(passwordEnvName("first.last@corp-1")).toBe("EDGESOCKS_PASSWORD_FIRST_LAST_CORP_1");
    const env = { ...ENV, EDGESOCKS_PASSWORD_ALICE: "from env", EDGESOCKS_PASSWORD_FIRST_LAST_CORP_1: "other" };
    expect(usersOf(["--user", "alice", "--user", "first.last@corp-1"], env)).toEqual({ alice: "from env", "first.last@corp-1": "other" });
  });

  it.each([{}, { EDGESOCKS_PASSWORD_ALICE: "" }])("refuses a bare NAME whose variable is unset or empty: %j", (extra) => {
    expect(errorFor([...EDGE, "--user", "alice"], { ...ENV, ...extra })).toBe(
      "--user alice: the environment variable EDGESOCKS_PASSWORD_ALICE holding the password is not set",
    );
  });

  it.each([
    [":pw", "--user: a user name must be 1..255 bytes, not 0"],
    [`${"n".repeat(256)}:pw`, "--user: a user name must be 1..255 bytes, not 256"],
    ["alice:", "--user alice: a password must be 1..255 bytes (RFC 1929), not 0"],
    [`alice:${SECRET.repeat(13)}`, `--user alice: a password must be 1..255 bytes (RFC 1929), not ${SECRET.length * 13}`],
  ])("refuses %j", (text, message) => {
    expect(errorFor([...EDGE, "--user", text])).toBe(message);
  });

  it("refuses an environment password over 255 bytes without printing it", () => {
    expect(errorFor([...EDGE, "--user", "alice"], { ...ENV, EDGESOCKS_PASSWORD_ALICE: SECRET.repeat(13) })).toBe(
      `--user alice: EDGESOCKS_PASSWORD_ALICE: a password must be 1..255 bytes (RFC 1929), not ${SECRET.length * 13}`,
    );
  });

  it("refuses a password given as a separate argument without printing it", () => {
    expect(errorFor([...EDGE, "--user", "alice", SECRET], { ...ENV, EDGESOCKS_PASSWORD_ALICE: "x" })).toBe(
      "unexpected argument 5, not shown since it follows --user and may be a password; --user takes NAME:PASS as one argument",
    );
  });

  it("refuses the same user twice", () => {
    expect(errorFor([...EDGE, "--user", `alice:${SECRET}`, "--user", "alice:other"])).toBe('user "alice" is configured twice: --user alice and --user alice');
  });
});

describe("--users-file", () => {
  it("reads name:password lines, skipping comments and blank lines, taking CRLF endings off", () => {
    const path = tempFile("# team proxy users\n\nalice:pa:ss # not a comment\r\n   # indented comment\nbob:b\n\n");
    expect(usersOf(["--users-file", path])).toEqual({ alice: "pa:ss # not a comment", bob: "b" });
  });

  it("adds to --user, and a name in both is an error naming both places", () => {
    const path = tempFile("alice:a\n");
    expect(usersOf(["--user", "bob:b", "--users-file", path])).toEqual({ alice: "a", bob: "b" });
    expect(errorFor([...EDGE, "--user", "alice:b", "--users-file", path])).toBe(`user "alice" is configured twice: --user alice and --users-file ${path} line 1`);
  });

  it.each([
    ["alice:a\n# comment\n" + SECRET + "\n", "line 3: expected name:password"],
    ["alice:a\n:" + SECRET + "\n", "line 2: a user name must be 1..255 bytes, not 0"],
    ["alice:\n", "line 1: a password must be 1..255 bytes (RFC 1929), not 0"],
    [`alice:${SECRET.repeat(13)}\n`, `line 1: a password must be 1..255 bytes (RFC 1929), not ${SECRET.length * 13}`],
  ])("refuses %j naming the line, never the password", (contents, message) => {
    const path = tempFile(contents);
    expect(errorFor([...EDGE, "--users-file", path])).toBe(`--users-file ${path} ${message}`);
  });

  it("refuses a file it cannot read", () => {
    const path = join(tempDir, "no-such-users");
    expect(errorFor([...EDGE, "--users-file", path])).toBe(`--users-file ${path} cannot be read (ENOENT)`);
  });
});

describe("a non-loopback --listen", () => {
  it.each(["0.0.0.0:1080", "[::]:1080", "192.168.1.20:1080"])("%s is refused without users, with a line saying to add them", (listen) => {
    expect(errorFor([...EDGE, "--listen", listen])).toMatch(/^refusing to listen on .*: no users are configured, .* add users \(--user NAME:PASS, --users-file PATH or "users" in --config\)/);
  });

  it("is allowed with users from any source", () => {
    const usersFile = tempFile("alice:a\n");
    const config = configFile({ users: [{ name: "bob", password: "b" }] });
    expect(runConfig([...EDGE, "--listen", "0.0.0.0:1080", "--user", "alice:a"])).toMatchObject({ listenHost: "0.0.0.0", listenPort: 1080 });
    expect(runConfig([...EDGE, "--listen", "[::]:1080", "--users-file", usersFile])).toMatchObject({ listenHost: "::" });
    expect(runConfig([...EDGE, "--listen", "192.168.1.20:1080", "--config", config])).toMatchObject({ listenHost: "192.168.1.20" });
    expect(runConfig(["--config", configFile({ edge: "https://e.example", listen: "0.0.0.0:1080", users: [{ name: "a", password: "b" }] })])).toMatchObject({
      listenHost: "0.0.0.0",
    });
  });

  it("from the config file is refused without users too", () => {
    expect(errorFor([...EDGE, "--config", configFile({ listen: "0.0.0.0:1080" })])).toMatch(/^refusing to listen on 0\.0\.0\.0: no users are configured/);
  });
});

describe("--config", () => {
  it("sets every value, and each flag overrides its value", () => {
    const fileToken = tempFile("file-token-abcdefghijklmnop\n");
    const flagToken = tempFile("flag-token-abcdefghijklmnop\n");
    const path = configFile({
      listen: "127.0.0.2:1081",
      edge: "http://127.0.0.1:8787",
      tokenFile: fileToken,
      bypass: "none",
      logLevel: "debug",
      limits: { maxConnections: 7, windowBytes: 32_768, handshakeTimeoutMs: 1000, openTimeoutMs: 2000, pingIntervalMs: 3000 },
    });
    expect(runConfig(["--config", path])).toMatchObject({
      listenHost: "127.0.0.2",
      listenPort: 1081,
      tunnelUrl: "ws://127.0.0.1:8787/tunnel",
      token: "file-token-abcdefghijklmnop",
      bypass: "none",
      logLevel: "debug",
      maxConnections: 7,
      windowBytes: 32_768,
      handshakeTimeoutMs: 1000,
      openTimeoutMs: 2000,
      pingIntervalMs: 3000,
    } satisfies Partial<AgentConfig>);
    const flags = [
      ...["--edge", "wss://other.example", "--listen", "[::1]:9000", "--token-file", flagToken, "--bypass", "private", "--log-level", "warn"],
      ...["--max-connections", "70", "--window-bytes", "65536", "--handshake-timeout-ms", "1100", "--open-timeout-ms", "2200", "--ping-interval-ms", "3300"],
    ];
    expect(runConfig(["--config", path, ...flags])).toMatchObject({
      listenHost: "::1",
      listenPort: 9000,
      tunnelUrl: "wss://other.example/tunnel",
      token: "flag-token-abcdefghijklmnop",
      bypass: "private",
      logLevel: "warn",
      maxConnections: 70,
      windowBytes: 65_536,
      handshakeTimeoutMs: 1100,
      openTimeoutMs: 2200,
      pingIntervalMs: 3300,
    } satisfies Partial<AgentConfig>);
  });

  it("takes the token from its tokenFile before EDGESOCKS_TOKEN, resolving it against the file's directory", () => {
    tempFile("relative-token-abcdefghijklmnop\n", "relative.token");
    expect(runConfig([...EDGE, "--config", configFile({ tokenFile: "relative.token" })], ENV).token).toBe("relative-token-abcdefghijklmnop");
  });

  it("names the config file when its tokenFile cannot be read, and never prints a token", () => {
    const path = configFile({ tokenFile: "missing.token" });
    expect(errorFor([...EDGE, "--config", path])).toBe(`${path}: tokenFile ${join(tempDir, "missing.token")} cannot be read (ENOENT)`);
  });

  it("still requires an edge from somewhere", () => {
    expect(errorFor(["--config", configFile({})])).toMatch(/^--edge URL is required/);
  });

  it("refuses a file it cannot read, or one that does not check, naming it", () => {
    const missing = join(tempDir, "missing.json");
    expect(errorFor([...EDGE, "--config", missing])).toBe(`--config ${missing} cannot be read (ENOENT)`);
    const bad = configFile({ rules: [{ route: "direct", cidr: "10.0.0.0/40" }] });
    expect(errorFor([...EDGE, "--config", bad])).toBe(`${bad}: rules[0].cidr: "10.0.0.0/40": prefix length must be 0..32`);
  });

  it("reads passwords from passwordEnv and passwordFile, taking the file's final line break off", () => {
    tempFile("from file: with spaces \n", "carol.password");
    const path = configFile({
      users: [
        { name: "alice", password: "literal" },
        { name: "bob", passwordEnv: "BOB_PROXY_PASSWORD" },
        { name: "carol", passwordFile: "carol.password" },
      ],
    });
    expect(usersOf(["--config", path], { ...ENV, BOB_PROXY_PASSWORD: "from env" })).toEqual({ alice: "literal", bob: "from env", carol: "from file: with spaces " });
  });

  it.each([
    [{ name: "bob", passwordEnv: "BOB_PROXY_PASSWORD" }, "users[0].passwordEnv: the environment variable BOB_PROXY_PASSWORD holding the password is not set"],
    [{ name: "carol", passwordFile: "nobody.password" }, `users[0].passwordFile: ${join(tempDir, "nobody.password")} cannot be read (ENOENT)`],
    [{ name: "carol", passwordFile: "empty.password" }, `users[0].passwordFile: ${join(tempDir, "empty.password")} is empty`],
    [{ name: "carol", passwordFile: "long.password" }, `users[0].passwordFile: ${join(tempDir, "long.password")}: a password must be 1..255 bytes (RFC 1929), not ${SECRET.length * 13}`],
  ])("refuses the password source %j", (user, message) => {
    tempFile("\n", "empty.password");
    tempFile(SECRET.repeat(13), "long.password");
    const path = configFile({ users: [user] });
    expect(errorFor([...EDGE, "--config", path])).toBe(`${path}: ${message}`);
  });

  it("refuses a user given by a flag and in the file", () => {
    const path = configFile({ users: [{ name: "alice", password: SECRET }] });
    expect(errorFor([...EDGE, "--user", "alice:x", "--config", path])).toBe(`user "alice" is configured twice: --user alice and ${path} users[0]`);
  });

  it("runs the shipped example once its password and token files exist", () => {
    const example = join(tempDir, "edgesocks.example.json");
    copyFileSync(fileURLToPath(new URL("../../docs/edgesocks.example.json", import.meta.url)), example);
    tempFile("example-token-abcdefghijklmnop\n", "edgesocks.token");
    tempFile("alice's password\n", "alice.password");
    const config = runConfig(["--config", example], { EDGESOCKS_PASSWORD_BOB: "bob's password" });
    expect(config).toMatchObject({ listenHost: "0.0.0.0", listenPort: 1080, token: "example-token-abcdefghijklmnop", maxConnections: 256 });
    expect(Object.fromEntries(config.users)).toEqual({ alice: "alice's password", bob: "bob's password" });
  });
});

describe("rule order", () => {
  it("tries --rule flags, then the file's rules, then the --bypass rules", () => {
    const path = configFile({
      rules: [
        { route: "block", suffix: "example.com" },
        { route: "edge", cidr: "10.0.0.0/8" },
      ],
    });
    const { rules } = runConfig([...EDGE, "--rule", "direct:host=www.example.com", "--config", path]);
    expect(rules.map((rule) => rule.text)).toEqual(["direct:host=www.example.com", "block:suffix=example.com", "edge:cidr=10.0.0.0/8", ...PRIVATE_RULES.map((rule) => rule.text)]);
    expect(routeFor({ type: AddressType.Domain, host: "www.example.com", port: 443 }, rules)).toBe("direct");
    expect(routeFor({ type: AddressType.Domain, host: "api.example.com", port: 443 }, rules)).toBe("block");
    expect(routeFor({ type: AddressType.IPv4, host: "10.1.2.3", port: 22 }, rules)).toBe("edge");
    expect(routeFor({ type: AddressType.IPv4, host: "192.168.1.1", port: 22 }, rules)).toBe("direct");
  });

  it("takes --bypass from the file unless a flag sets it", () => {
    const path = configFile({ bypass: "none", rules: [{ route: "direct", port: 22 }] });
    expect(runConfig([...EDGE, "--config", path]).rules.map((rule) => rule.text)).toEqual(["direct:port=22"]);
    expect(runConfig([...EDGE, "--config", path, "--bypass", "private"]).rules).toHaveLength(1 + PRIVATE_RULES.length);
  });
});
