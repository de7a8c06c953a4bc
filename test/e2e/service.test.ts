// `edgesocks service` on Linux, three ways. With a stand-in systemctl on PATH that records its
// calls (test/e2e/stand-in/systemctl): the unit written, its contents, the calls, the refusals.
// With systemd's own parser: `systemd-analyze verify --user` on the units it writes, and Python's
// plistlib on the launchd plist (plutil where there is one). And for real: a systemd user
// manager started for the test in a private mount namespace runs the unit, which starts the
// agent against the local edge, restarts it when killed, not when its config is bad, and starts
// it again at the next "login" (a new manager).

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import type { Server, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { processTree } from "../bench/proc-stats.ts";
import { echo, startTcpOrigin, type Listening } from "./origins.ts";
import { freePort, repoRoot } from "./processes.ts";
import { socksConnect } from "./socks-client.ts";
import { launchdPlist } from "../../local-agent/service/launchd-plist.ts";
import { systemdUnit } from "../../local-agent/service/systemd-unit.ts";

const cli = join(repoRoot, "local-agent", "cli", "main.ts");
const standIn = join(repoRoot, "test", "e2e", "stand-in");
/** What the unit runs: the Node running the CLI (this one, spawned below) and the CLI's real path. */
const NODE = process.execPath;
const ENTRY = realpathSync(cli);
const TOKEN = "service-test-token-0123456789abcdef";

type Run = { status: number | null; stdout: string; stderr: string };

function runService(args: string[], env: Record<string, string>): Run {
  const result = spawnSync(NODE, [cli, "service", ...args], { env, encoding: "utf8", timeout: 60_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function run(command: string, args: string[], env: Record<string, string>): Run {
  const result = spawnSync(command, args, { env, encoding: "utf8", timeout: 30_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function onPath(command: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" }).status === 0;
}

/** A temporary home with a config file (its token in a file beside it), and the environment naming it. */
function makeHome(dir: string, config: Record<string, unknown>, configDir = join(dir, "xdg", "edgesocks")) {
  const home = join(dir, "home");
  mkdirSync(home, { recursive: true });
  mkdirSync(configDir, { recursive: true });
  writeFileSync(join(configDir, "token"), `${TOKEN}\n`, { mode: 0o600 });
  const configPath = join(configDir, "config.json");
  writeFileSync(configPath, JSON.stringify({ tokenFile: "token", ...config }));
  const runtimeDir = join(dir, "runtime");
  mkdirSync(runtimeDir, { recursive: true, mode: 0o700 });
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, XDG_CONFIG_HOME: join(dir, "xdg"), XDG_RUNTIME_DIR: runtimeDir };
  return { home, configPath, env, unitPath: join(dir, "xdg", "systemd", "user", "edgesocks.service") };
}

/** The ExecStart line `edgesocks service install` must write for `configPath`, quoted as systemd reads it. */
function execStartFor(configPath: string): string {
  const quote = (text: string) => `"${text.replace(/[\\"%$]/g, (char) => ({ "\\": "\\\\", '"': '\\"', "%": "%%", $: "$$" })[char] ?? char)}"`;
  return `ExecStart="${NODE.replaceAll("%", "%%")}" ${[ENTRY, "run", "--config", configPath].map(quote).join(" ")}`;
}

describe("edgesocks service with a stand-in systemctl", () => {
  let dir: string;
  let callsFile: string;
  const calls = () => (existsSync(callsFile) ? readFileSync(callsFile, "utf8").trimEnd().split("\n") : []);
  /** The environment of a run: the stand-in first on PATH, its call log, and `extra`. */
  const withStandIn = (env: Record<string, string>, extra: Record<string, string> = {}) => ({ ...env, PATH: `${standIn}:${env.PATH}`, EDGESOCKS_STANDIN_SYSTEMCTL_LOG: callsFile, ...extra });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-service-"));
    callsFile = join(dir, "systemctl-calls");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("install writes the unit for this Node, this edgesocks and the default config, then reloads systemd and enables it now", () => {
    const { configPath, env, unitPath } = makeHome(dir, { edge: "http://127.0.0.1:8787" });
    const { status, stdout, stderr } = runService(["install"], withStandIn(env, { EDGESOCKS_TOKEN: TOKEN }));
    expect(stderr).toBe("");
    expect(status).toBe(0);
    expect(stdout).toBe(`edgesocks service: installed ${unitPath}; the agent runs now and at every login (edgesocks service status; its log: journalctl --user -u edgesocks)\n`);
    const unit = readFileSync(unitPath, "utf8");
    expect(unit.split("\n")).toContain(execStartFor(configPath));
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^RestartPreventExitStatus=2$/m);
    expect(unit).toMatch(/^WantedBy=default\.target$/m);
    // The default drain (5 s) and the margin.
    expect(unit).toMatch(/^TimeoutStopSec=10$/m);
    // No secret, and no environment: the token comes from the config's tokenFile.
    expect(unit).not.toContain(TOKEN);
    expect(unit).not.toMatch(/^Environment/m);
    expect(calls()).toEqual(["--user daemon-reload", "--user enable --now edgesocks.service"]);
  });

  it("without XDG_CONFIG_HOME, reads ~/.config/edgesocks/config.json and writes ~/.config/systemd/user/edgesocks.service", () => {
    const home = join(dir, "home");
    const { configPath, env } = makeHome(dir, { edge: "http://127.0.0.1:8787" }, join(home, ".config", "edgesocks"));
    const { XDG_CONFIG_HOME: _, ...withoutXdg } = env;
    const { status, stderr } = runService(["install"], withStandIn(withoutXdg));
    expect(stderr).toBe("");
    expect(status).toBe(0);
    expect(readFileSync(join(home, ".config", "systemd", "user", "edgesocks.service"), "utf8").split("\n")).toContain(execStartFor(configPath));
  });

  it("run through a symlink as npm's bin directory holds it, the unit runs the file the symlink resolves to", () => {
    const { configPath, env, unitPath } = makeHome(dir, { edge: "http://127.0.0.1:8787" });
    const launcher = realpathSync(join(repoRoot, "bin", "edgesocks.js"));
    mkdirSync(join(dir, "npm-bin"));
    symlinkSync(launcher, join(dir, "npm-bin", "edgesocks"));
    const result = spawnSync(NODE, [join(dir, "npm-bin", "edgesocks"), "service", "install"], { env: withStandIn(env), encoding: "utf8" });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const quote = (text: string) => `"${text}"`;
    expect(readFileSync(unitPath, "utf8").split("\n")).toContain(`ExecStart=${[NODE, launcher, "run", "--config", configPath].map(quote).join(" ")}`);
  });

  it("--config names another file, made absolute against the working directory, with its drain timeout in the stop timeout", () => {
    const { env, unitPath } = makeHome(dir, {});
    const otherDir = join(dir, "other place");
    mkdirSync(otherDir);
    writeFileSync(join(otherDir, "token"), TOKEN, { mode: 0o600 });
    writeFileSync(join(otherDir, "edge.json"), JSON.stringify({ edge: "http://127.0.0.1:8787", tokenFile: "token", limits: { drainTimeoutMs: 60_500 } }));
    const result = spawnSync(NODE, [cli, "service", "install", "--config", "edge.json"], { cwd: otherDir, env: withStandIn(env), encoding: "utf8" });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const unit = readFileSync(unitPath, "utf8");
    expect(unit.split("\n")).toContain(execStartFor(join(otherDir, "edge.json")));
    expect(unit).toMatch(/^TimeoutStopSec=66$/m);
  });

  it("a second install rewrites the unit and restarts the agent on it", () => {
    const { env } = makeHome(dir, { edge: "http://127.0.0.1:8787" });
    expect(runService(["install"], withStandIn(env)).status).toBe(0);
    const again = runService(["install"], withStandIn(env));
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(/^edgesocks service: reinstalled /);
    expect(calls()).toEqual(["--user daemon-reload", "--user enable --now edgesocks.service", "--user daemon-reload", "--user enable --now edgesocks.service", "--user reset-failed edgesocks.service", "--user restart edgesocks.service"]);
  });

  it("status prints systemctl's status and exits 0 when the agent runs, 1 with one line when it does not", () => {
    const { env, unitPath } = makeHome(dir, { edge: "http://127.0.0.1:8787" });
    runService(["install"], withStandIn(env));
    const running = runService(["status"], withStandIn(env));
    expect(running).toEqual({ status: 0, stdout: `edgesocks service: systemd user unit ${unitPath}\n● edgesocks.service - stand-in\n     Active: active (running)\n`, stderr: "" });
    const stopped = runService(["status"], withStandIn(env, { EDGESOCKS_STANDIN_SYSTEMCTL_STATUS: "3" }));
    expect(stopped.status).toBe(1);
    expect(stopped.stdout).toContain("Active: inactive (dead)");
    expect(stopped.stderr).toBe("edgesocks service: installed but not running (its log: journalctl --user -u edgesocks)\n");
    expect(calls().slice(-2)).toEqual(["--user status --no-pager edgesocks.service", "--user status --no-pager edgesocks.service"]);
  });

  it("uninstall disables and stops the agent and removes the unit; after it, status says not installed and uninstall has nothing to do", () => {
    const { env, unitPath } = makeHome(dir, { edge: "http://127.0.0.1:8787" });
    runService(["install"], withStandIn(env));
    const removed = runService(["uninstall"], withStandIn(env));
    expect(removed).toEqual({ status: 0, stdout: `edgesocks service: stopped the agent and removed ${unitPath}\n`, stderr: "" });
    expect(existsSync(unitPath)).toBe(false);
    expect(calls().slice(2)).toEqual(["--user disable --now edgesocks.service", "--user daemon-reload"]);
    expect(runService(["status"], withStandIn(env))).toEqual({ status: 1, stdout: "", stderr: `edgesocks service: not installed (no ${unitPath}); edgesocks service install installs it\n` });
    expect(runService(["uninstall"], withStandIn(env))).toEqual({ status: 0, stdout: `edgesocks service: not installed (no ${unitPath}); nothing to remove\n`, stderr: "" });
    expect(calls()).toHaveLength(4);
  });

  it("a systemctl that fails (no user manager) is one line with its reason and exit 1, the unit written", () => {
    const { env, unitPath } = makeHome(dir, { edge: "http://127.0.0.1:8787" });
    const { status, stdout, stderr } = runService(["install"], withStandIn(env, { EDGESOCKS_STANDIN_SYSTEMCTL_FAIL: "daemon-reload" }));
    expect(status).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe(
      `edgesocks service: wrote ${unitPath}, but systemctl --user daemon-reload failed: Failed to connect to bus: No medium found; once a user manager runs: systemctl --user enable --now edgesocks.service\n`,
    );
  });

  describe("refuses a config the agent would not start with: one line, exit 2, no unit, no systemctl", () => {
    it.each<[string, (configPath: string) => void, Record<string, string>, RegExp]>([
      ["no config file", (path) => rmSync(path), {}, /^edgesocks service: no config file at \S+\/xdg\/edgesocks\/config\.json: `edgesocks deploy` writes it, or name yours with --config PATH$/],
      ["a file that is not JSON", (path) => writeFileSync(path, '{"edge": '), {}, /^edgesocks service: \S+config\.json: is not valid JSON: unexpected end of input$/],
      ["an unknown field", (path) => writeFileSync(path, JSON.stringify({ edge: "http://127.0.0.1:8787", tokenFile: "token", pool: 3 })), {}, /^edgesocks service: \S+config\.json: pool: unknown field/],
      ["no edge", (path) => writeFileSync(path, JSON.stringify({ tokenFile: "token" })), {}, /^edgesocks service: --edge URL is required/],
      // EDGESOCKS_TOKEN in this shell does not reach the service; the token is never printed.
      ["no tokenFile", (path) => writeFileSync(path, JSON.stringify({ edge: "http://127.0.0.1:8787" })), { EDGESOCKS_TOKEN: TOKEN }, /^edgesocks service: \S+config\.json: names no tokenFile; the service reads its token from the file tokenFile names \(EDGESOCKS_TOKEN does not reach it\)$/],
      ["an empty token file", (path) => writeFileSync(join(path, "..", "token"), ""), {}, /^edgesocks service: \S+config\.json: tokenFile \S+token is empty$/],
      [
        "a password from this shell's environment",
        (path) => writeFileSync(path, JSON.stringify({ edge: "http://127.0.0.1:8787", tokenFile: "token", users: [{ name: "ada", passwordEnv: "ADA_PASSWORD" }] })),
        { ADA_PASSWORD: "a-password-only-this-shell-has" },
        /^edgesocks service: \S+: users\[0\]\.passwordEnv: the environment variable ADA_PASSWORD holding the password is not set \(the service does not get this shell's environment: put passwords in passwordFile\)$/,
      ],
    ])("%s", (_, spoil, extraEnv, message) => {
      const { configPath, env, unitPath } = makeHome(dir, { edge: "http://127.0.0.1:8787" });
      spoil(configPath);
      const { status, stdout, stderr } = runService(["install"], withStandIn(env, extraEnv));
      expect(stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(stderr.trimEnd()).toMatch(message);
      expect(stderr).not.toContain(TOKEN);
      expect(stderr).not.toContain("a-password-only-this-shell-has");
      expect(stdout).toBe("");
      expect(status).toBe(2);
      expect(existsSync(unitPath)).toBe(false);
      expect(calls()).toEqual([]);
    });

    it("a --config that does not exist, without the default's hint", () => {
      const { env } = makeHome(dir, { edge: "http://127.0.0.1:8787" });
      expect(runService(["install", "--config", "/nonexistent/edgesocks.json"], withStandIn(env))).toEqual({ status: 2, stdout: "", stderr: "edgesocks service: no config file at /nonexistent/edgesocks.json\n" });
    });
  });

  it("documents each action in --help and exits 0", () => {
    const { env } = makeHome(dir, {});
    const top = runService(["--help"], withStandIn(env));
    expect(top.status).toBe(0);
    for (const action of ["install", "uninstall", "status"]) expect(top.stdout).toMatch(new RegExp(`^  ${action} `, "m"));
    expect(top.stdout).toContain("~/.config/systemd/user/edgesocks.service");
    expect(top.stdout).toContain("~/Library/LaunchAgents/dev.edgesocks.agent.plist");
    for (const action of ["install", "uninstall", "status"]) {
      const help = runService([action, "--help"], withStandIn(env));
      expect(help.status).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: edgesocks service ${action}\\b`));
      expect(help.stdout).toMatch(/^  -h, --help /m);
    }
    expect(runService(["install", "-h"], withStandIn(env)).stdout).toMatch(/^  --config PATH /m);
    expect(calls()).toEqual([]);
  });

  it.each([
    [[], /^edgesocks service: needs an action: install, uninstall or status \(see edgesocks service --help\)$/],
    [["instal"], /^edgesocks service: unknown action "instal"; actions: install, uninstall, status/],
    [["--config", "x.json", "install"], /^edgesocks service: the action comes first: edgesocks service install\|uninstall\|status \[options\]/],
    [["install", "--conf", "x.json"], /^edgesocks service: unknown option --conf \(did you mean --config\?\); see edgesocks service install --help$/],
    [["install", "--config"], /^edgesocks service: --config needs a value: --config PATH; see edgesocks service install --help$/],
    [["uninstall", "--config", "x.json"], /^edgesocks service: unknown option --config; see edgesocks service uninstall --help$/],
    [["status", "now"], /^edgesocks service: unexpected argument "now"; this command takes only options \(see edgesocks service status --help\)$/],
  ])("exits 2 with one line for %j", (args, message) => {
    const { env } = makeHome(dir, {});
    const { status, stdout, stderr } = runService(args, withStandIn(env));
    expect(stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(stderr.trimEnd()).toMatch(message);
    expect(stdout).toBe("");
    expect(status).toBe(2);
    expect(calls()).toEqual([]);
  });
});

describe("the generated files, read by systemd itself and by a strict property-list parser", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-service-parse-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** `systemd-analyze verify --user` on the unit at `unitPath`; it also checks that the executable exists. */
  function verify(unitPath: string): Run {
    expect(onPath("systemd-analyze"), "systemd-analyze is not installed (Debian: apt-get install systemd)").toBe(true);
    const runtimeDir = join(dir, "runtime");
    mkdirSync(runtimeDir, { recursive: true, mode: 0o700 });
    return run("systemd-analyze", ["verify", "--user", unitPath], { PATH: process.env.PATH ?? "", HOME: join(dir, "home"), XDG_CONFIG_HOME: join(dir, "xdg"), XDG_RUNTIME_DIR: runtimeDir });
  }

  it("systemd-analyze verify accepts the unit `edgesocks service install` writes", () => {
    const { env, unitPath } = makeHome(join(dir, "installed"), { edge: "http://127.0.0.1:8787" });
    const installed = runService(["install"], { ...env, PATH: `${standIn}:${env.PATH}`, EDGESOCKS_STANDIN_SYSTEMCTL_LOG: join(dir, "calls") });
    expect(installed.status).toBe(0);
    expect(verify(unitPath)).toEqual({ status: 0, stdout: "", stderr: "" });
  });

  it("systemd-analyze verify accepts a unit whose paths hold spaces, %, $, quotes and backslashes", () => {
    // The Node binary through a symlink in an odd directory (systemd refuses quotes and backslashes there).
    const nodeDir = join(dir, "node 22 %h $HOME ünï");
    mkdirSync(nodeDir, { recursive: true });
    symlinkSync(NODE, join(nodeDir, "node"));
    const unitPath = join(dir, "odd", "edgesocks.service");
    mkdirSync(join(dir, "odd"));
    writeFileSync(unitPath, systemdUnit({ nodePath: join(nodeDir, "node"), entryPath: `${dir}/it's "a" \\path %n/main.ts`, configPath: `${dir}/my $USER ${"${HOME}"} 100%/config.json`, stopTimeoutSec: 10 }));
    expect(verify(unitPath)).toEqual({ status: 0, stdout: "", stderr: "" });
  });

  it("systemd-analyze verify refuses a unit whose executable is missing (the check can fail)", () => {
    const unitPath = join(dir, "missing", "edgesocks.service");
    mkdirSync(join(dir, "missing"));
    writeFileSync(unitPath, systemdUnit({ nodePath: join(dir, "no such node"), entryPath: ENTRY, configPath: "/c.json", stopTimeoutSec: 10 }));
    const result = verify(unitPath);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("no such node");
  });

  it("the launchd plist is a valid property list whose values read back exactly, odd characters included", () => {
    const spec = { nodePath: "/opt/a&b/<node>/bin/node", entryPath: `/Users/it's "me"/main.ts`, configPath: "/Users/me/Ünï & co/config.json", stopTimeoutSec: 10 };
    const plistPath = join(dir, "dev.edgesocks.agent.plist");
    writeFileSync(plistPath, launchdPlist(spec, "/Users/me/Library/Logs/edgesocks.log"));
    if (onPath("plutil")) expect(run("plutil", ["-lint", plistPath], { PATH: process.env.PATH ?? "" }).status).toBe(0);
    // plistlib reads XML property lists strictly (expat), with launchd's types.
    const read = run("python3", ["-c", "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))", plistPath], { PATH: process.env.PATH ?? "" });
    expect(read.stderr).toBe("");
    expect(JSON.parse(read.stdout)).toEqual({
      Label: "dev.edgesocks.agent",
      ProgramArguments: [spec.nodePath, spec.entryPath, "run", "--config", spec.configPath],
      RunAtLoad: true,
      KeepAlive: { SuccessfulExit: false },
      ThrottleInterval: 30,
      ExitTimeOut: 10,
      StandardOutPath: "/Users/me/Library/Logs/edgesocks.log",
      StandardErrorPath: "/Users/me/Library/Logs/edgesocks.log",
    });
  });
});

/** A systemd user manager of the test's own, for `home`'s user unit directory. */
type UserManager = { pid: number; stop(): Promise<void> };

const SYSTEMD_BINARIES = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd"];

/**
 * Starts `systemd --user` in a private mount namespace with a tmpfs on /run/systemd holding the
 * `system` directory it checks for ("booted with systemd"), so that this machine's /run is
 * untouched. Resolves with the manager once `systemctl --user` reaches it, or with why it cannot
 * run here (no systemd, no unshare, no permission to mount): containers often forbid it.
 */
async function startUserManager(env: Record<string, string>): Promise<UserManager | string> {
  const binary = SYSTEMD_BINARIES.find((path) => existsSync(path));
  if (binary === undefined) return "no systemd binary";
  if (!onPath("unshare")) return "no unshare (util-linux)";
  const script = 'set -e; if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; else mount -t tmpfs tmpfs /run; fi; mkdir -p /run/systemd/system; exec "$0" --user';
  const child: ChildProcess = spawn("unshare", ["--mount", "--propagation", "private", "sh", "-c", script, binary], { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const stop = async () => {
    // Services run in sessions of their own: what is below the manager is killed by pid.
    const below = child.pid === undefined ? [] : processTree(child.pid).filter((pid) => pid !== child.pid);
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    for (const pid of below) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // stopped with the manager, as it should
      }
    }
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) return `systemd --user did not start: ${output.trim().split("\n")[0] ?? `exit ${child.exitCode}`}`;
    // Not is-system-running: outside the namespace it sees no /run/systemd/system and says "offline".
    const state = spawnSync("systemctl", ["--user", "show", "-p", "SystemState", "--value"], { env, encoding: "utf8", timeout: 5_000 }).stdout?.trim();
    if (state === "running" || state === "degraded") return { pid: child.pid ?? 0, stop };
    if (Date.now() > deadline) {
      await stop();
      return `systemd --user did not come up within 15 s (state: ${state || "unreachable"})`;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("the unit under a real systemd user manager", () => {
  let dir: string;
  let home: ReturnType<typeof makeHome>;
  let origin: Listening<Server>;
  let manager: UserManager | undefined;
  let unavailable = "";
  let agentPort: number;
  let goodConfig: string;
  const agentLog = () => (existsSync(join(dir, "agent.log")) ? readFileSync(join(dir, "agent.log"), "utf8") : "(no agent log)");
  const systemctl = (...args: string[]) => run("systemctl", ["--user", ...args], home.env);
  const show = (property: string) => systemctl("show", "-p", property, "--value", "edgesocks.service").stdout.trim();
  /** The agent's pid; never 0, which process.kill would take for this whole process group. */
  const mainPid = () => {
    const pid = Number(show("MainPID"));
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`the agent is not running (MainPID ${pid}); agent log:\n${agentLog()}`);
    return pid;
  };

  /** Resolves once an echo through the agent, over the edge, comes back; fails with the agent's log after `timeoutMs`. */
  async function proxyWorks(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline) {
      let socket: Socket | undefined;
      try {
        socket = await socksConnect(agentPort, "127.0.0.1", origin.port, 5_000);
        const echoed = new Promise<string>((resolve, reject) => {
          socket?.once("data", (chunk: Buffer) => resolve(chunk.toString()));
          socket?.once("error", reject);
        });
        socket.write("ping");
        expect(await echoed).toBe("ping");
        return;
      } catch (error) {
        lastError = error;
        await new Promise((resolve) => setTimeout(resolve, 250));
      } finally {
        socket?.destroy();
      }
    }
    throw new Error(`no echo through the agent within ${timeoutMs} ms (${String(lastError)}); agent log:\n${agentLog()}`);
  }

  async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`not ${what} within ${timeoutMs} ms; systemctl: ${systemctl("status", "--no-pager", "edgesocks.service").stdout}; agent log:\n${agentLog()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-service-real-"));
    origin = await startTcpOrigin(echo);
    agentPort = await freePort();
    // The config in a directory whose name ExecStart must quote: spaces, a specifier, variables
    // (systemd substitutes ${HOME} inside a word), quotes, a backslash.
    const configDir = join(dir, `config dir %h ${"${HOME}"} $HOME 'q' "d" \\b`);
    goodConfig = JSON.stringify({
      edge: inject("edgeUrl"),
      tokenFile: "token",
      listen: `127.0.0.1:${agentPort}`,
      // Loopback destinations cross the edge; a short drain, to see a stop that resets transfers.
      bypass: "none",
      limits: { poolSize: 1, drainTimeoutMs: 300 },
    });
    home = makeHome(dir, {}, configDir);
    writeFileSync(home.configPath, goodConfig);
    writeFileSync(join(configDir, "token"), inject("edgeToken"), { mode: 0o600 });
    // The manager's environment: no EDGESOCKS_TOKEN, nothing of this shell's.
    const started = await startUserManager(home.env);
    if (typeof started === "string") unavailable = started;
    else manager = started;
    // A drop-in of the test's own: the agent's output to a file, since this manager has no journal.
    const dropIn = join(dir, "xdg", "systemd", "user", "edgesocks.service.d");
    mkdirSync(dropIn, { recursive: true });
    writeFileSync(join(dropIn, "test-log.conf"), `[Service]\nStandardOutput=append:${dir}/agent.log\nStandardError=append:${dir}/agent.log\n`);
  });
  afterAll(async () => {
    try {
      await manager?.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await origin?.close();
    }
  });
  beforeEach((context) => {
    if (manager === undefined) context.skip(`no systemd user manager can run here: ${unavailable}`);
  });

  it("install starts the agent from the unit, with the token from the config's tokenFile, and enables it for the next login", async () => {
    const installed = runService(["install", "--config", home.configPath], home.env);
    expect(installed.stderr).toBe("");
    expect(installed.status).toBe(0);
    await proxyWorks();
    expect(systemctl("is-enabled", "edgesocks.service").stdout.trim()).toBe("enabled");
    const wants = join(dir, "xdg", "systemd", "user", "default.target.wants", "edgesocks.service");
    expect(lstatSync(wants).isSymbolicLink()).toBe(true);
    expect(readlinkSync(wants)).toBe(home.unitPath);
    // The agent got the odd config path as one argument, unchanged, from systemd's unquoting.
    const argv = readFileSync(`/proc/${mainPid()}/cmdline`, "utf8").split("\0").slice(0, -1);
    expect(argv).toEqual([NODE, ENTRY, "run", "--config", home.configPath]);
    const status = runService(["status"], home.env);
    expect(status.stdout).toMatch(/Active: active \(running\)/);
    expect(status.status).toBe(0);
  });

  it("restarts the agent when it dies of a failure (SIGKILL)", async () => {
    const first = mainPid();
    process.kill(first, "SIGKILL");
    await until("restarted", () => {
      const pid = Number(show("MainPID"));
      return pid !== 0 && pid !== first;
    });
    expect(show("NRestarts")).toBe("1");
    await proxyWorks();
  });

  it("a stop that resets an open transfer (exit 3) leaves the unit inactive, not failed", async () => {
    const held = await socksConnect(agentPort, "127.0.0.1", origin.port);
    held.on("error", () => {});
    try {
      expect(systemctl("stop", "edgesocks.service").status).toBe(0);
    } finally {
      held.destroy();
    }
    // The agent reset the transfer, so it exited 3 (systemd keeps no exit status once a unit is inactive).
    expect(agentLog()).toMatch(/closed: 0 connections finished, 1 reset before they finished\n/);
    expect(show("ActiveState"), agentLog()).toBe("inactive");
    expect(show("Result")).toBe("success");
  });

  it("starts the agent at the next login: a new user manager runs the enabled unit by itself", async () => {
    await manager?.stop();
    manager = undefined;
    const started = await startUserManager(home.env);
    if (typeof started === "string") throw new Error(`the second user manager did not start: ${started}`);
    manager = started;
    await proxyWorks();
  });

  it("does not restart the agent when it exits 2 for a config broken since the install", async () => {
    writeFileSync(home.configPath, '{"edge": ');
    const restarts = Number(show("NRestarts"));
    process.kill(mainPid(), "SIGKILL");
    // One restart (the kill), which exits 2: then no more, and not for the start limit.
    await until("failed", () => show("ActiveState") === "failed");
    expect(show("ExecMainStatus")).toBe("2");
    expect(show("Result")).toBe("exit-code");
    expect(show("NRestarts")).toBe(String(restarts + 1));
    await new Promise((resolve) => setTimeout(resolve, 7_000));
    expect(show("ActiveState")).toBe("failed");
    expect(show("NRestarts")).toBe(String(restarts + 1));
    expect(agentLog()).toMatch(/edgesocks: .*config\.json: is not valid JSON: unexpected end of input/);
  });

  it("a reinstall with the config fixed starts the agent again", async () => {
    writeFileSync(home.configPath, goodConfig);
    const installed = runService(["install", "--config", home.configPath], home.env);
    expect(installed.stderr).toBe("");
    expect(installed.stdout).toMatch(/^edgesocks service: reinstalled /);
    await proxyWorks();
  });

  it("uninstall stops the agent and removes the unit", async () => {
    const pid = mainPid();
    const removed = runService(["uninstall"], home.env);
    expect(removed.stderr).toBe("");
    expect(removed.status).toBe(0);
    expect(existsSync(home.unitPath)).toBe(false);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(show("LoadState")).toBe("not-found");
    await expect(socksConnect(agentPort, "127.0.0.1", origin.port, 2_000)).rejects.toThrow();
  });
});
