// Users and the --config file with the real agent process, the real edge and curl: bad
// configurations exit 2 with one line; users from a config file let the right password through
// and refuse the wrong one; the token never reaches the agent's output.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { repoRoot, startAgent, type RunningAgent } from "./processes.ts";
import { runCurl, type CurlRun } from "./curl-run.ts";

/** curl's exit code for a failed proxy handshake (SOCKS5 authentication refused, among others). */
const CURL_PROXY_HANDSHAKE_FAILED = 97;
const ALICE_PASSWORD = "alice: correct horse";

const tempDir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-config-"));
let agent: RunningAgent;
let origin: HttpOrigin;

function writeConfig(name: string, value: unknown): string {
  const path = join(tempDir, name);
  writeFileSync(path, JSON.stringify(value, null, 2), { mode: 0o600 });
  return path;
}

/** Runs the agent CLI to completion (for arguments it must refuse). */
function runAgentCli(args: string[]) {
  const result = spawnSync(process.execPath, [join(repoRoot, "local-agent", "cli", "main.ts"), ...args], {
    env: { PATH: process.env.PATH ?? "", EDGESOCKS_TOKEN: "config-test-token-0123456789" },
    encoding: "utf8",
    timeout: 20_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** curl with a 60 s limit: these tests move several MiB. */
function curl(args: string[]): Promise<CurlRun> {
  return runCurl(args, 60);
}

beforeAll(async () => {
  origin = await startHttpOrigin();
  const token = inject("edgeToken");
  writeFileSync(join(tempDir, "edge.token"), `${token}\n`, { mode: 0o600 });
  writeFileSync(join(tempDir, "alice.password"), `${ALICE_PASSWORD}\n`, { mode: 0o600 });
  const config = writeConfig("edgesocks.json", {
    listen: "127.0.0.1:0",
    edge: inject("edgeUrl"),
    tokenFile: "edge.token",
    users: [
      { name: "alice", passwordFile: "alice.password" },
      { name: "bob", password: "bob's password" },
    ],
    limits: { maxConnections: 16 },
    logLevel: "debug",
  });
  // EDGESOCKS_TOKEN is wrong on purpose: the config file's tokenFile must win, or the edge refuses.
  agent = await startAgent(inject("edgeUrl"), "wrong-token-the-edge-refuses-0123456789", ["--config", config]);
});
afterAll(async () => {
  await agent?.stop();
  await origin?.close();
  rmSync(tempDir, { recursive: true, force: true });
});

describe("agent configuration through the real CLI", () => {
  it("exits 2 with one line for a non-loopback --listen without users", () => {
    const { status, stdout, stderr } = runAgentCli(["--edge", "http://127.0.0.1:8787", "--listen", "0.0.0.0:1080"]);
    expect(status).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toBe(
      'edgesocks: refusing to listen on 0.0.0.0: no users are configured, so anyone who can reach it could use the proxy; add users (--user NAME:PASS, --users-file PATH or "users" in --config) or serve loopback only (127.0.0.1, ::1, localhost)\n',
    );
  });

  it("exits 2 with one line naming the field of a broken config file", () => {
    const path = writeConfig("broken.json", { edge: "http://127.0.0.1:8787", rules: [{ route: "direct", suffix: "corp.example" }, { route: "direct", cidr: "10.0.0.0/33" }] });
    const { status, stdout, stderr } = runAgentCli(["--config", path]);
    expect(status).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toBe(`edgesocks: ${path}: rules[1].cidr: "10.0.0.0/33": prefix length must be 0..32\n`);
  });

  it("exits 2 for a token in the config file, without printing it", () => {
    const path = writeConfig("with-token.json", { edge: "http://127.0.0.1:8787", token: "the-secret-token-0123456789" });
    const { status, stderr } = runAgentCli(["--config", path]);
    expect(status).toBe(2);
    expect(stderr).toBe(`edgesocks: ${path}: token: a token in the config file is not supported; put it in a file named by tokenFile, or in EDGESOCKS_TOKEN\n`);
  });

  it("lets curl through with a configured user's password, across the edge", async () => {
    for (const [user, id] of [[`alice:${ALICE_PASSWORD}`, "alice"], ["bob:bob's password", "bob"]] as const) {
      const result = await curl(["--socks5-hostname", `127.0.0.1:${agent.port}`, "--proxy-user", user, `http://127.0.0.1:${origin.port}/blob?bytes=100000&id=config-${id}`]);
      expect(result.stderr).toBe("");
      expect(result.exitCode).toBe(0);
      expect(createHash("sha256").update(result.stdout).digest("hex")).toBe(origin.sentHashes.get(`config-${id}`));
      await agent.waitForLog(new RegExp(`\\(${id}\\) .*-> 127\\.0\\.0\\.1:${origin.port} via edge .* ok$`));
    }
  });

  it("refuses a wrong password (curl exit 97) and logs it", async () => {
    const result = await curl(["--socks5-hostname", `127.0.0.1:${agent.port}`, "--proxy-user", "alice:wrong password", `http://127.0.0.1:${origin.port}/`]);
    expect(result.exitCode).toBe(CURL_PROXY_HANDSHAKE_FAILED);
    expect(result.stdout.byteLength).toBe(0);
    await agent.waitForLog(/handshake refused: wrong user name or password for "alice"$/);
    expect(agent.log()).not.toContain("wrong password");
  });

  it("refuses a client that offers no credentials (curl exit 97)", async () => {
    const result = await curl(["--socks5-hostname", `127.0.0.1:${agent.port}`, `http://127.0.0.1:${origin.port}/`]);
    expect(result.exitCode).toBe(CURL_PROXY_HANDSHAKE_FAILED);
    await agent.waitForLog(/handshake refused: .*username\/password \(0x02\)/);
  });

  it("exits 1 with one line when the edge refuses the config file's tokenFile, without printing it", () => {
    const wrongToken = "config-file-wrong-token-0123456789";
    writeFileSync(join(tempDir, "wrong.token"), `${wrongToken}\n`, { mode: 0o600 });
    const path = writeConfig("wrong-token.json", { listen: "127.0.0.1:0", edge: inject("edgeUrl"), tokenFile: "wrong.token" });
    const { status, stdout, stderr } = runAgentCli(["--config", path]);
    expect(status).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe("edgesocks: the edge refused the token (401 wrong token): check EDGESOCKS_TOKEN / --token-file against the Worker's secret\n");
    expect(stderr).not.toContain(wrongToken);
  });

  it("warns once, naming the file and chmod 600, for a config file's tokenFile others can read", async () => {
    const tokenPath = join(tempDir, "open.token");
    writeFileSync(tokenPath, `${inject("edgeToken")}\n`);
    chmodSync(tokenPath, 0o640);
    const path = writeConfig("open-token.json", { listen: "127.0.0.1:0", edge: inject("edgeUrl"), tokenFile: "open.token" });
    const openAgent = await startAgent(inject("edgeUrl"), "wrong-token-the-edge-refuses-0123456789", ["--config", path]);
    try {
      const line = await openAgent.waitForLog(/ is open to other users /);
      expect(line.endsWith(` warn ${path}: tokenFile ${tokenPath} is open to other users (mode 0640): chmod 600 ${tokenPath}`)).toBe(true);
      expect(openAgent.log().split("\n").filter((candidate) => candidate.includes("open to other users"))).toHaveLength(1);
    } finally {
      await openAgent.stop();
    }
  });

  it("gives no permission warning for a tokenFile only its owner can read", () => {
    expect(agent.log()).not.toContain("open to other users");
  });

  it("never writes the token or a password to its output or log", async () => {
    const output = agent.output() + agent.log();
    expect(output).toMatch(/proxy on 127\.0\.0\.1:\d+ -> edge /);
    for (const secret of [inject("edgeToken"), ALICE_PASSWORD, "bob's password"]) expect(output).not.toContain(secret);
  });
});
