// The agent's command line: every bad input exits 2 with one clear line; good input runs. The
// start proves the token before the ready line (a refused one exits 1); `edgesocks --help`
// lists the commands; `npm start` explains the flags npm took for itself.

import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { processTree } from "../bench/proc-stats.ts";
import { freePort, repoRoot, startAgent } from "./processes.ts";
import { startOlderEdgeRelay } from "./older-edge-relay.ts";
import { socksConnect } from "./socks-client.ts";
import { AGENT_OPTIONS } from "../../local-agent/config/config.ts";

function runAgent(args: string[], env: Record<string, string> = { EDGESOCKS_TOKEN: "cli-test-token-0123456789" }) {
  const result = spawnSync(process.execPath, [join(repoRoot, "local-agent", "cli", "main.ts"), ...args], {
    env: { PATH: process.env.PATH ?? "", ...env },
    encoding: "utf8",
    timeout: 20_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const EDGE = ["--edge", "http://127.0.0.1:8787"];
const tempDir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-cli-"));
afterAll(() => rmSync(tempDir, { recursive: true, force: true }));

/** The stderr of a run as lines, without the final newline; fails unless there is exactly one. */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  return lines[0] ?? "";
}

describe("edgesocks command line", () => {
  it("documents every flag in --help and exits 0", () => {
    const { status, stdout } = runAgent(["--help"]);
    expect(status).toBe(0);
    // Every option the parser takes, read from the parser itself: a new flag cannot go undocumented.
    const flags = Object.keys(AGENT_OPTIONS).map((name) => `--${name}`);
    expect(flags).toEqual(expect.arrayContaining(["--pool-size", "--zero-rtt", "--drain-timeout-ms", "--on-cloudflare"]));
    for (const flag of flags) expect(stdout).toMatch(new RegExp(`^\\s+(-\\w, )?${flag}\\b`, "m"));
    expect(stdout).toContain("EDGESOCKS_TOKEN");
    expect(stdout).toContain("EDGESOCKS_PASSWORD_NAME");
    expect(stdout).toMatch(/first match wins: --rule flags, then the config\s+file's rules, then those --bypass adds/);
  });

  it.each([
    [["--bogus", ...EDGE], /^edgesocks: unknown option --bogus; see edgesocks --help$/],
    [[...EDGE, "--zero-rt"], /^edgesocks: unknown option --zero-rt \(did you mean --zero-rtt\?\); see edgesocks --help$/],
    [[...EDGE, "--token", "x"], /^edgesocks: unknown option --token \(did you mean --token-file\?\); see edgesocks --help$/],
    [[...EDGE, "-x"], /^edgesocks: unknown option -x; see edgesocks --help$/],
    [["--edge"], /^edgesocks: --edge needs a value: --edge URL; see edgesocks --help$/],
    [[...EDGE, "--pool-size"], /^edgesocks: --pool-size needs a value: --pool-size N; see edgesocks --help$/],
    [["--edge", "--listen", "127.0.0.1:1080"], /^edgesocks: --edge needs a value: --edge URL, not the option --listen; a value that starts with "-" goes as --edge=VALUE$/],
    [[...EDGE, "--zero-rtt=yes"], /^edgesocks: --zero-rtt takes no value; see edgesocks --help$/],
    [[...EDGE, "foo"], /^edgesocks: unexpected argument "foo"; this command takes only options \(see edgesocks --help\)$/],
    [["run", ...EDGE, "foo"], /^edgesocks: unexpected argument "foo"; this command takes only options/],
    [["--listen", "127.0.0.1:0", "http://127.0.0.1:8787"], /^edgesocks: unexpected argument 3, which looks like a URL: the edge goes in --edge URL$/],
    [["foo"], /^edgesocks: unknown command "foo"; commands: run, deploy, doctor, service \(see edgesocks --help\)$/],
    [[], /^edgesocks: --edge URL is required/],
    [["--edge", "ftp://example.test"], /^edgesocks: --edge must be an http, https, ws or wss URL/],
    [[...EDGE, "--listen", "0.0.0.0:1080"], /^edgesocks: refusing to listen on 0\.0\.0\.0: no users are configured, .*add users/],
    [[...EDGE, "--listen", "1080"], /^edgesocks: --listen "1080" is not HOST:PORT/],
    [[...EDGE, "--window-bytes", "12"], /^edgesocks: --window-bytes must be an integer from 16384 to/],
    [[...EDGE, "--log-level", "loud"], /^edgesocks: --log-level must be one of error, warn, info, debug/],
    [[...EDGE, "--token-file", "/nonexistent/token"], /^edgesocks: --token-file \/nonexistent\/token cannot be read \(ENOENT\)/],
  ])("exits 2 with one line for %j", (args, message) => {
    const { status, stderr, stdout } = runAgent(args);
    expect(status).toBe(2);
    expect(stdout).toBe("");
    expect(stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(stderr.trimEnd()).toMatch(message);
  });

  it("never quotes a stray argument after --user, which may be its password", () => {
    const { status, stdout, stderr } = runAgent([...EDGE, "--user", "alice", "hunter2"]);
    expect(status).toBe(2);
    expect(stdout).toBe("");
    expect(oneLine(stderr)).toBe("edgesocks: unexpected argument 5, not shown since it follows --user and may be a password; --user takes NAME:PASS as one argument");
    expect(stderr).not.toContain("hunter2");
  });

  it("never quotes a stray argument as long as a token, nor a first word that may be one", () => {
    const secret = "looks-like-a-token-0123456789";
    const stray = runAgent([...EDGE, secret]);
    expect(stray.status).toBe(2);
    expect(oneLine(stray.stderr)).toMatch(/^edgesocks: unexpected argument 3, not shown since it may be the token \(the token comes from EDGESOCKS_TOKEN or --token-file\); /);
    const first = runAgent([secret, ...EDGE]);
    expect(first.status).toBe(2);
    expect(oneLine(first.stderr)).toBe("edgesocks: argument 1 is not a command (not shown, since it may be a secret); commands: run, deploy, doctor, service (see edgesocks --help)");
    expect(stray.stderr + first.stderr).not.toContain(secret);
  });

  it("never quotes the value of an unknown option", () => {
    const { status, stderr } = runAgent([...EDGE, "--password=hunter2-hunter2"]);
    expect(status).toBe(2);
    expect(oneLine(stderr)).toBe("edgesocks: unknown option --password; see edgesocks --help");
  });

  it("lists the commands and the run flags in edgesocks --help", () => {
    for (const args of [["--help"], ["-h"], ["help"]]) {
      const { status, stdout, stderr } = runAgent(args);
      expect(status).toBe(0);
      expect(stderr).toBe("");
      for (const command of ["run", "deploy", "doctor", "service"]) expect(stdout).toMatch(new RegExp(`^  ${command} +\\S`, "m"));
      for (const flag of Object.keys(AGENT_OPTIONS)) expect(stdout).toMatch(new RegExp(`^\\s+(-\\w, )?--${flag}\\b`, "m"));
    }
  });

  it("shows the agent's flags, not the commands, in edgesocks run --help", () => {
    const { status, stdout } = runAgent(["run", "--help"]);
    expect(status).toBe(0);
    expect(stdout).toMatch(/^Usage: edgesocks --edge URL \[options\]/);
    expect(stdout).not.toMatch(/^Commands:/m);
    for (const flag of Object.keys(AGENT_OPTIONS)) expect(stdout).toMatch(new RegExp(`^\\s+(-\\w, )?--${flag}\\b`, "m"));
  });

  it("exits 2 when no token is given, and never prints a token", () => {
    const { status, stderr } = runAgent(EDGE, {});
    expect(status).toBe(2);
    expect(stderr).toBe("edgesocks: no token: set EDGESOCKS_TOKEN in the environment or pass --token-file PATH\n");
  });

  it("exits 1 with one line when the listen address is taken", async () => {
    const { createServer } = await import("node:net");
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      const { status, stderr } = runAgent([...EDGE, "--listen", `127.0.0.1:${port}`]);
      expect(status).toBe(1);
      expect(stderr).toBe(`edgesocks: cannot listen on 127.0.0.1:${port}: the address is in use\n`);
    } finally {
      server.close();
    }
  });
});

describe("the start-up check of the edge and the token", () => {
  it("exits 1 with one line, before any ready line, when the edge refuses the token", () => {
    const wrongToken = "not-the-edge-token-cli-0123456789";
    const startedAt = Date.now();
    const { status, stdout, stderr } = runAgent(["--edge", inject("edgeUrl"), "--listen", "127.0.0.1:0"], { EDGESOCKS_TOKEN: wrongToken });
    expect(status).toBe(1);
    expect(stdout).toBe("");
    expect(oneLine(stderr)).toBe("edgesocks: the edge refused the token (401 wrong token): check EDGESOCKS_TOKEN / --token-file against the Worker's secret");
    expect(stderr).not.toContain(wrongToken);
    expect(Date.now() - startedAt).toBeLessThan(10_000);
  });

  it("checks the token from --token-file, as the tunnels will use it", () => {
    const path = join(tempDir, "wrong.token");
    writeFileSync(path, "not-the-edge-token-file-0123456789\n", { mode: 0o600 });
    const { status, stdout, stderr } = runAgent(["--edge", inject("edgeUrl"), "--listen", "127.0.0.1:0", "--token-file", path], { EDGESOCKS_TOKEN: inject("edgeToken") });
    expect(status).toBe(1);
    expect(stdout).toBe("");
    expect(oneLine(stderr)).toMatch(/^edgesocks: the edge refused the token \(401 wrong token\)/);
  });

  it("warns and starts when the edge is older than /check, and connections still cross it", async () => {
    const relay = await startOlderEdgeRelay(inject("edgeUrl"));
    const agent = await startAgent(relay.url, inject("edgeToken"), ["--pool-size", "0"]);
    try {
      const line = await agent.waitForLog(/ warn the edge has no \/check/);
      expect(line).toMatch(/ warn the edge has no \/check \(a release older than this agent\), so the token was not checked; redeploy the Worker \(npm run deploy\)$/);
      expect(relay.checkRequests()).toBe(1);
      const { createServer } = await import("node:net");
      const origin = createServer((socket) => socket.end("hello through an older edge"));
      await new Promise<void>((resolve) => origin.listen(0, "127.0.0.1", resolve));
      try {
        const socket = await socksConnect(agent.port, "127.0.0.1", (origin.address() as { port: number }).port);
        const answer = await new Promise<string>((resolve) => {
          let text = "";
          socket.on("data", (chunk: Buffer) => (text += chunk.toString()));
          socket.once("end", () => resolve(text));
        });
        socket.destroy();
        expect(answer).toBe("hello through an older edge");
      } finally {
        origin.close();
      }
    } finally {
      await agent.stop();
      await relay.close();
    }
  });

  it("warns and starts when the edge does not answer, and says so once", async () => {
    const port = await freePort();
    const agent = await startAgent(`http://127.0.0.1:${port}`, "cli-test-token-0123456789", ["--pool-size", "0"]);
    try {
      await agent.waitForLog(/ warn the edge is not answering http:\/\/127\.0\.0\.1:\d+\/healthz \(/);
      expect(agent.output()).toMatch(/proxy on 127\.0\.0\.1:\d+ -> edge /);
      expect(agent.log()).not.toMatch(/\/check/);
    } finally {
      await agent.stop();
    }
  });

  it("warns with one line naming the file and chmod 600 for a token file others can read, and starts", async () => {
    const path = join(tempDir, "open.token");
    writeFileSync(path, `${inject("edgeToken")}\n`);
    chmodSync(path, 0o644);
    const agent = await startAgent(inject("edgeUrl"), "ignored-because-of-the-file-0123456789", ["--token-file", path]);
    try {
      await agent.waitForLog(/ is open to other users /);
      const lines = agent.log().split("\n").filter((line) => line.includes(path));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(` warn --token-file ${path.replaceAll(".", "\\.")} is open to other users \\(mode 0644\\): chmod 600 ${path.replaceAll(".", "\\.")}$`));
      expect(agent.output() + agent.log()).not.toContain(inject("edgeToken"));
    } finally {
      await agent.stop();
    }
  });
});

describe("npm start", () => {
  /** Long enough for npm and Node to start on a busy machine; far short of booting wrangler dev and answering. */
  const NPM_START_LIMIT_MS = 15_000;

  /**
   * Runs the pinned npm (npm 11 on PATH) in the checkout, with no npm_config_* of the test run's
   * own. Past the limit the whole tree is killed (npm, the runner, and the wrangler and agent a
   * broken runner may have started), and the status is the signal.
   */
  async function npmStart(args: string[]) {
    const startedAt = Date.now();
    const child = spawn("npm", ["start", ...args], { cwd: repoRoot, env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? tempDir }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      for (const pid of processTree(child.pid ?? 0)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    }, NPM_START_LIMIT_MS);
    const status = await new Promise<number | NodeJS.Signals | null>((resolve) => child.once("close", (code, signal) => resolve(code ?? signal)));
    clearTimeout(timer);
    return { status, stdout, stderr, elapsedMs: Date.now() - startedAt };
  }
  /** Our runner's lines on stderr (npm adds its own warnings around them). */
  const devLines = (stderr: string) => stderr.split("\n").filter((line) => line.startsWith("edgesocks dev:"));

  it.each([
    [["--zero-rtt"], "edgesocks dev: npm took --zero-rtt for itself; pass agent flags after --: npm start -- --zero-rtt"],
    [["--pool-size", "0", "--edge-port=9999"], "edgesocks dev: npm took --pool-size and --edge-port for itself; pass agent flags after --: npm start -- --pool-size N --edge-port N"],
    // npm 11 expands --bypass, an abbreviation of its own --bypass-2fa.
    [["--bypass", "none"], "edgesocks dev: npm took --bypass for itself; pass agent flags after --: npm start -- --bypass MODE"],
    [["--user", "alice:npm-swallowed-password"], "edgesocks dev: npm took --user for itself; pass agent flags after --: npm start -- --user NAME:PASS"],
  ])("explains npm start %j without booting the edge", async (args, message) => {
    const { status, stdout, stderr, elapsedMs } = await npmStart(args);
    expect(status).toBe(2);
    expect(devLines(stderr)).toEqual([message]);
    expect(stdout + stderr).not.toContain("[edge]");
    expect(stdout + stderr).not.toContain("local edge ready");
    expect(elapsedMs).toBeLessThan(NPM_START_LIMIT_MS);
  });

  it("lists --edge-port and the agent's flags for npm start -- --help, without booting the edge", async () => {
    const { status, stdout, stderr, elapsedMs } = await npmStart(["--", "--help"]);
    expect(status).toBe(0);
    expect(stdout).toMatch(/^ {2}--edge-port N\b/m);
    for (const flag of Object.keys(AGENT_OPTIONS).filter((name) => !["edge", "help", "version"].includes(name))) {
      expect(stdout).toMatch(new RegExp(`^\\s+(-\\w, )?--${flag}\\b`, "m"));
    }
    expect(stdout).not.toMatch(/^ {2}--edge URL/m);
    expect(stdout + stderr).not.toContain("[edge]");
    expect(elapsedMs).toBeLessThan(NPM_START_LIMIT_MS);
  });

  it("refuses a bad agent flag after -- before booting the edge", async () => {
    const { status, stdout, stderr, elapsedMs } = await npmStart(["--", "--bogus"]);
    expect(status).toBe(2);
    expect(devLines(stderr)).toEqual(["edgesocks dev: unknown option --bogus; see npm start -- --help"]);
    expect(stdout + stderr).not.toContain("[edge]");
    expect(elapsedMs).toBeLessThan(NPM_START_LIMIT_MS);
  });
});
