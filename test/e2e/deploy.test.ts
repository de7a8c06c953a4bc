// `edgesocks deploy` against a stand-in wrangler (stand-in/wrangler.ts, first on PATH), since
// Cloudflare cannot be reached here. The stand-in records what it was asked and answers as
// wrangler 4 does; every Worker it "deploys" is a real local edge (the Worker under wrangler dev)
// holding the secret the stand-in was given (stand-in/cloudflare-account.ts), so deploy's
// /healthz and token checks, and then `edgesocks` alone with the config it wrote, run for real.
// HOME is a temporary directory: nothing here touches the real ~/.config.

import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { accessSync, constants, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { runCurl } from "./curl-run.ts";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { repoRoot } from "./processes.ts";
import { STAND_IN_BIN, startStandInAccount, type StandInAccount } from "./stand-in/cloudflare-account.ts";

const mainCli = join(repoRoot, "local-agent", "cli", "main.ts");
/** What the test's environment has for EDGESOCKS_TOKEN: deploy must keep it from wrangler. */
const ENV_TOKEN = "token-in-the-environment-0123456789";
const TOKEN_LENGTH = 43;

type Run = { status: number | null; stdout: string; stderr: string };

/** Runs the edgesocks command (not blocking this event loop, which answers the stand-in) with exactly `env`. */
function runEdgesocks(args: string[], env: Record<string, string>, cli = mainCli): Promise<Run> {
  return new Promise((done) => {
    // cwd: a directory of its own, so deploy is seen to run wrangler in the package, not here.
    const child = spawn(process.execPath, [cli, ...args], { cwd: tmpdir(), env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 170_000);
    child.once("close", (status) => {
      clearTimeout(timer);
      done({ status, stdout, stderr });
    });
  });
}

/** `edgesocks` with no arguments at all, until its ready line; stop() ends it. */
async function startAgentAlone(env: Record<string, string>): Promise<{ port: number; readyLine: string; log(): string; stop(): Promise<void> }> {
  const child: ChildProcess = spawn(process.execPath, [mainCli], { cwd: tmpdir(), env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const kill = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(kill);
  };
  try {
    const readyLine = await new Promise<string>((resolve, reject) => {
      child.stdout?.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        const line = stdout.split("\n").find((candidate) => / proxy on /.test(candidate));
        if (line !== undefined) resolve(line);
      });
      child.once("exit", (code) => reject(new Error(`edgesocks exited ${code}: ${stderr}`)));
      setTimeout(() => reject(new Error(`no ready line within 30 s: ${stderr}`)), 30_000);
    });
    const port = Number(/proxy on 127\.0\.0\.1:(\d+) /.exec(readyLine)?.[1]);
    return { port, readyLine, log: () => stderr, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The stderr of a run as its one line; fails unless there is exactly one. */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  return lines[0] ?? "";
}

function modeOf(path: string): number {
  return statSync(path).mode & 0o777;
}

describe("edgesocks deploy", () => {
  let account: StandInAccount;
  let origin: HttpOrigin;
  let home: string;
  let configFile: string;
  let tokenFile: string;
  /** The environment of every command here: the stand-in first on PATH, HOME a temporary directory, XDG_CONFIG_HOME unset. */
  let env: Record<string, string>;

  beforeAll(async () => {
    accessSync(join(STAND_IN_BIN, "wrangler"), constants.X_OK);
    account = startStandInAccount();
    origin = await startHttpOrigin();
    home = mkdtempSync(join(tmpdir(), "edgesocks-e2e-deploy-home-"));
    configFile = join(home, ".config", "edgesocks", "config.json");
    tokenFile = join(home, ".config", "edgesocks", "token");
    env = { PATH: `${STAND_IN_BIN}${delimiter}${process.env.PATH ?? ""}`, HOME: home, ...account.env };
  });
  afterAll(async () => {
    await account?.stop();
    await origin?.close();
    rmSync(home, { recursive: true, force: true });
  });

  it("deploys with a new token that reaches wrangler on stdin only, and writes the token and config files mode 0600", async () => {
    const run = await runEdgesocks(["deploy"], { ...env, EDGESOCKS_TOKEN: ENV_TOKEN });
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    const token = readFileSync(tokenFile, "utf8").trim();
    expect(token).toMatch(new RegExp(`^[A-Za-z0-9_-]{${TOKEN_LENGTH}}$`));
    expect(modeOf(tokenFile)).toBe(0o600);
    expect(modeOf(configFile)).toBe(0o600);
    const url = account.workerUrl("edgesocks");
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(JSON.parse(readFileSync(configFile, "utf8"))).toEqual({ edge: url, tokenFile: "token" });

    const calls = account.calls();
    expect(calls.map((call) => call.argv)).toEqual([["whoami"], ["secret", "put", "EDGESOCKS_TOKEN", "--name", "edgesocks"], ["deploy", "--name", "edgesocks"]]);
    expect(calls.map((call) => call.stdinBytes)).toEqual([0, TOKEN_LENGTH, 0]);
    expect(account.secret("edgesocks")).toBe(token);
    for (const call of calls) {
      expect(resolve(call.cwd)).toBe(resolve(repoRoot));
      expect(call.stdinIsTty).toBe(false);
      expect(call.envNames).toContain("HOME");
      expect(call.envNames).not.toContain("EDGESOCKS_TOKEN");
      expect(call.envNamesHoldingASecret).toEqual([]);
    }
    // The token is nowhere but its file, wrangler's stdin and the Worker's secret.
    for (const text of [run.stdout, run.stderr, account.callLog(), readFileSync(configFile, "utf8")]) expect(text).not.toContain(token);
    expect(run.stdout).toContain(`deployed edgesocks: ${url}`);
    expect(run.stdout).toMatch(/ready: run `edgesocks` to start the proxy\n$/);
  });

  it("leaves `edgesocks` alone runnable: it reads the config deploy wrote and proxies curl through the deployed Worker", async () => {
    // The user's own settings: a free port, and loopback through the edge too.
    const written = JSON.parse(readFileSync(configFile, "utf8")) as Record<string, unknown>;
    writeFileSync(configFile, `${JSON.stringify({ ...written, listen: "127.0.0.1:0", bypass: "none" }, null, 2)}\n`);
    const agent = await startAgentAlone(env);
    try {
      expect(agent.readyLine).toBe(`edgesocks: SOCKS5, SOCKS4 and HTTP proxy on 127.0.0.1:${agent.port} -> edge ${account.workerUrl("edgesocks")}`);
      const curl = await runCurl(["--socks5-hostname", `127.0.0.1:${agent.port}`, `http://127.0.0.1:${origin.port}/blob?bytes=300000&id=alone`]);
      expect(curl.stderr).toBe("");
      expect(curl.stdout.byteLength).toBe(300_000);
      expect(createHash("sha256").update(curl.stdout).digest("hex")).toBe(origin.sentHashes.get("alone"));
      await expect.poll(() => agent.log()).toMatch(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} via edge`));
    } finally {
      await agent.stop();
    }
  });

  it("keeps the token on a second deploy, puts no secret, and leaves the config file as it was", async () => {
    const tokenBefore = readFileSync(tokenFile, "utf8");
    const configBefore = readFileSync(configFile, "utf8");
    const configMtime = statSync(configFile).mtimeMs;
    const callsBefore = account.calls().length;
    const edgesBefore = account.edgesStarted();
    const run = await runEdgesocks(["deploy"], env);
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(account.calls().slice(callsBefore).map((call) => call.argv)).toEqual([["whoami"], ["deploy", "--name", "edgesocks"]]);
    expect(readFileSync(tokenFile, "utf8")).toBe(tokenBefore);
    expect(account.secret("edgesocks")).toBe(tokenBefore.trim());
    expect(readFileSync(configFile, "utf8")).toBe(configBefore);
    expect(statSync(configFile).mtimeMs).toBe(configMtime);
    expect(account.edgesStarted()).toBe(edgesBefore);
    expect(run.stdout).toContain(`${configFile} already names ${account.workerUrl("edgesocks")}; left as it is`);
  });

  it("deploys a second Worker with --name: the same token, put once the new Worker refuses it, and a second edge in the config", async () => {
    const token = readFileSync(tokenFile, "utf8").trim();
    const callsBefore = account.calls().length;
    const run = await runEdgesocks(["deploy", "--name", "second"], env);
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    const calls = account.calls().slice(callsBefore);
    expect(calls.map((call) => call.argv)).toEqual([["whoami"], ["deploy", "--name", "second"], ["secret", "put", "EDGESOCKS_TOKEN", "--name", "second"]]);
    expect(calls[2]?.stdinBytes).toBe(TOKEN_LENGTH);
    expect(account.secret("second")).toBe(token);
    expect(run.stdout).toMatch(/refused the token \(HTTP 503 [^\n]*\); setting it as the Worker's secret/);
    expect(JSON.parse(readFileSync(configFile, "utf8"))).toEqual({
      edge: [account.workerUrl("edgesocks"), account.workerUrl("second")],
      tokenFile: "token",
      listen: "127.0.0.1:0",
      bypass: "none",
    });
    expect(modeOf(configFile)).toBe(0o600);
    for (const text of [run.stdout, account.callLog()]) expect(text).not.toContain(token);
    // Both edges are checked at start: a token either refused would exit 1 before the ready line.
    const agent = await startAgentAlone(env);
    try {
      const curl = await runCurl(["--socks5-hostname", `127.0.0.1:${agent.port}`, `http://127.0.0.1:${origin.port}/blob?bytes=1000&id=two`]);
      expect(curl.stdout.byteLength).toBe(1000);
      expect(agent.log()).not.toMatch(/ warn /);
    } finally {
      await agent.stop();
    }
  });
});

describe("edgesocks deploy when something is missing or wrong, and its command line", () => {
  let account: StandInAccount;
  let home: string;
  let env: Record<string, string>;
  const configFile = () => join(home, ".config", "edgesocks", "config.json");

  beforeAll(() => {
    account = startStandInAccount();
  });
  afterAll(async () => {
    await account?.stop();
  });
  beforeEach(() => {
    home = mkdtempSync(join(tmpdir(), "edgesocks-e2e-deploy-fail-"));
    env = { PATH: `${STAND_IN_BIN}${delimiter}${process.env.PATH ?? ""}`, HOME: home, ...account.env };
  });
  afterEach(() => rmSync(home, { recursive: true, force: true }));

  it("says to run wrangler login when wrangler is not logged in, and makes no token", async () => {
    account.mark("logged-out");
    try {
      const run = await runEdgesocks(["deploy"], env);
      expect(run.status).toBe(1);
      expect(oneLine(run.stderr)).toBe("edgesocks deploy: wrangler is not logged in to Cloudflare: run `wrangler login` (or set CLOUDFLARE_API_TOKEN), then edgesocks deploy again");
      expect(() => statSync(join(home, ".config", "edgesocks", "token"))).toThrow();
      expect(() => statSync(configFile())).toThrow();
    } finally {
      rmSync(join(account.stateDir, "logged-out"));
    }
  });

  it("gives wrangler's own error when the deploy fails, and keeps the token for the next try", async () => {
    account.mark("deploy-fails");
    try {
      const run = await runEdgesocks(["deploy"], env);
      expect(run.status).toBe(1);
      expect(oneLine(run.stderr)).toBe(
        "edgesocks deploy: wrangler deploy --name edgesocks failed: A request to the Cloudflare API (/accounts/0123456789abcdef/workers/scripts/edgesocks) failed: Authentication error [code: 10000] (exit status 1)",
      );
      const token = readFileSync(join(home, ".config", "edgesocks", "token"), "utf8").trim();
      expect(run.stdout + run.stderr).not.toContain(token);
      expect(() => statSync(configFile())).toThrow();
    } finally {
      rmSync(join(account.stateDir, "deploy-fails"));
    }
  });

  it("asks for --url when wrangler prints no workers.dev URL", async () => {
    account.mark("no-workers-dev");
    try {
      const run = await runEdgesocks(["deploy", "--name", "routed"], env);
      expect(run.status).toBe(1);
      expect(oneLine(run.stderr)).toBe(
        "edgesocks deploy: deployed routed, but wrangler printed no workers.dev URL (is it served on a custom domain or route only?); give its URL: edgesocks deploy --name routed --url https://...",
      );
      expect(() => statSync(configFile())).toThrow();
    } finally {
      rmSync(join(account.stateDir, "no-workers-dev"));
    }
  });

  it("says to install wrangler when neither PATH nor the package has it (an install without dev dependencies)", async () => {
    // The package as `npm install --omit=dev` leaves it: its files, and its one runtime dependency the agent loads.
    const installed = mkdtempSync(join(tmpdir(), "edgesocks-e2e-installed-"));
    try {
      for (const entry of ["local-agent", "worker", "wrangler.toml", "package.json"]) cpSync(join(repoRoot, entry), join(installed, entry), { recursive: true });
      mkdirSync(join(installed, "node_modules"));
      symlinkSync(join(repoRoot, "node_modules", "ws"), join(installed, "node_modules", "ws"));
      const bare = "/usr/bin:/bin";
      for (const dir of bare.split(delimiter)) expect(() => accessSync(join(dir, "wrangler"))).toThrow();
      const run = await runEdgesocks(["deploy"], { PATH: bare, HOME: home }, join(installed, "local-agent", "cli", "main.ts"));
      expect(run.status).toBe(1);
      expect(oneLine(run.stderr)).toBe(
        "edgesocks deploy: wrangler is not installed (not on PATH, nor in this package's node_modules): install it with `npm install -g wrangler`, run `wrangler login`, then edgesocks deploy again",
      );
      // The same package with wrangler on PATH gets past this step (and stops at the login).
      account.mark("logged-out");
      const withWrangler = await runEdgesocks(["deploy"], { ...env, PATH: `${STAND_IN_BIN}${delimiter}${bare}` }, join(installed, "local-agent", "cli", "main.ts"));
      expect(oneLine(withWrangler.stderr)).toMatch(/^edgesocks deploy: wrangler is not logged in/);
      expect(account.calls().at(-1)?.cwd).toBe(resolve(installed));
    } finally {
      rmSync(join(account.stateDir, "logged-out"), { force: true });
      rmSync(installed, { recursive: true, force: true });
    }
  });

  it.each([
    [["--name", "Not_A_Name"], /^edgesocks deploy: --name "Not_A_Name" is not a Worker name: lower-case letters, digits and dashes/],
    [["--url", "ftp://example.test"], /^edgesocks deploy: --url must be an http, https, ws or wss URL/],
    [["--nme", "x"], /^edgesocks deploy: unknown option --nme \(did you mean --name\?\); see edgesocks deploy --help$/],
    [["extra"], /^edgesocks deploy: unexpected argument "extra"; this command takes only options \(see edgesocks deploy --help\)$/],
  ])("exits 2 with one line for %j, running no wrangler", async (args, message) => {
    const before = account.calls().length;
    const run = await runEdgesocks(["deploy", ...args], env);
    expect(run.status).toBe(2);
    expect(oneLine(run.stderr)).toMatch(message);
    expect(account.calls()).toHaveLength(before);
  });

  it("documents its flags in edgesocks deploy --help", async () => {
    const run = await runEdgesocks(["deploy", "--help"], env);
    expect(run.status).toBe(0);
    for (const flag of ["--name NAME", "--config PATH", "--url URL", "--dry-run", "--help"]) expect(run.stdout).toContain(flag);
  });

  it("says what it would do with --dry-run, and runs and writes nothing", async () => {
    const before = account.calls().length;
    const run = await runEdgesocks(["deploy", "--dry-run"], env);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/would run .*wrangler in .*: whoami; secret put EDGESOCKS_TOKEN --name edgesocks .*; deploy --name edgesocks/);
    expect(account.calls()).toHaveLength(before);
    expect(() => statSync(join(home, ".config"))).toThrow();
  });

  it("tells `edgesocks` with nothing configured about edgesocks deploy and the config file it reads", async () => {
    const xdg = join(home, "xdg");
    const run = await runEdgesocks([], { PATH: env.PATH ?? "", HOME: home, XDG_CONFIG_HOME: xdg });
    expect(run.status).toBe(2);
    expect(oneLine(run.stderr)).toBe(
      `edgesocks: --edge URL is required, or run \`edgesocks deploy\`, which deploys the Worker and writes ${join(xdg, "edgesocks", "config.json")} (for a local edge: --edge http://127.0.0.1:8787)`,
    );
  });
});
