// The launchd agent (local-agent/service/launchd-plist.ts): the exact plist and its XML escaping;
// and `edgesocks service` on a host that says it is macOS, with launchctl recorded (it cannot run
// here), writing into a temporary home. test/e2e/service.test.ts parses the plist with a strict
// property-list parser.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runService } from "../../local-agent/cli/service.ts";
import { launchdPlist, xmlText } from "../../local-agent/service/launchd-plist.ts";
import type { CommandResult, ServiceHost } from "../../local-agent/service/service-host.ts";
import type { ServiceSpec } from "../../local-agent/service/service-spec.ts";

const SPEC: ServiceSpec = {
  nodePath: "/opt/homebrew/bin/node",
  entryPath: "/opt/homebrew/lib/node_modules/edgesocks/local-agent/cli/main.ts",
  configPath: "/Users/ada/.config/edgesocks/config.json",
  stopTimeoutSec: 10,
};
const LOG = "/Users/ada/Library/Logs/edgesocks.log";

describe("launchd agent plist", () => {
  it("runs edgesocks run --config at load, restarts it after a failed exit, and logs to one file", () => {
    expect(launchdPlist(SPEC, LOG)).toBe(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by \`edgesocks service install\`; \`edgesocks service uninstall\` removes it. The token comes from the config file's tokenFile. -->
<plist version="1.0">
<dict>
\t<key>Label</key>
\t<string>dev.edgesocks.agent</string>
\t<key>ProgramArguments</key>
\t<array>
\t\t<string>/opt/homebrew/bin/node</string>
\t\t<string>/opt/homebrew/lib/node_modules/edgesocks/local-agent/cli/main.ts</string>
\t\t<string>run</string>
\t\t<string>--config</string>
\t\t<string>/Users/ada/.config/edgesocks/config.json</string>
\t</array>
\t<key>RunAtLoad</key>
\t<true/>
\t<key>KeepAlive</key>
\t<dict>
\t\t<key>SuccessfulExit</key>
\t\t<false/>
\t</dict>
\t<key>ThrottleInterval</key>
\t<integer>30</integer>
\t<key>ExitTimeOut</key>
\t<integer>10</integer>
\t<key>StandardOutPath</key>
\t<string>/Users/ada/Library/Logs/edgesocks.log</string>
\t<key>StandardErrorPath</key>
\t<string>/Users/ada/Library/Logs/edgesocks.log</string>
</dict>
</plist>
`);
  });

  it("escapes XML's five special characters in every path", () => {
    const odd = `/Users/a&b/<c>/"d"/'e'/config.json`;
    const escaped = "/Users/a&amp;b/&lt;c&gt;/&quot;d&quot;/&apos;e&apos;/config.json";
    expect(xmlText(odd)).toBe(escaped);
    const plist = launchdPlist({ nodePath: `/opt/a&b/node`, entryPath: `/opt/<x>/main.ts`, configPath: odd, stopTimeoutSec: 10 }, `/Users/a&b/log`);
    expect(plist).toContain(`<string>/opt/a&amp;b/node</string>`);
    expect(plist).toContain(`<string>/opt/&lt;x&gt;/main.ts</string>`);
    expect(plist).toContain(`<string>${escaped}</string>`);
    expect(plist).toContain(`<string>/Users/a&amp;b/log</string>`);
    // Nothing unescaped is left between the tags.
    for (const [, text] of plist.matchAll(/<string>([^<]*)<\/string>/g)) expect(text).not.toMatch(/&(?!amp;|lt;|gt;|quot;|apos;)|>/);
  });

  it("refuses a path with a control character, which XML 1.0 cannot hold", () => {
    expect(() => launchdPlist({ ...SPEC, configPath: "/Users/ada/\u0001/config.json" }, LOG)).toThrow(/holds a control character/);
  });
});

describe("edgesocks service on macOS (launchctl recorded)", () => {
  let dir: string;
  let home: string;
  let calls: string[];
  let output: { out: string; err: string };
  /** launchctl's answers: `print` succeeds when the job is loaded; anything named in `failing` fails. */
  let launchctl: { loaded: boolean; running: boolean; failing: string[] };

  const host = (platform: NodeJS.Platform = "darwin"): ServiceHost => ({
    platform,
    env: { HOME: home },
    cwd: dir,
    homeDir: home,
    uid: 501,
    nodePath: "/opt/homebrew/bin/node",
    entryPath: "/opt/homebrew/lib/node_modules/edgesocks/local-agent/cli/main.ts",
    run: (command, args): CommandResult => {
      calls.push([command, ...args].join(" "));
      const [verb] = args;
      if (verb !== undefined && launchctl.failing.includes(verb)) return { status: 5, stdout: "", stderr: "Bootstrap failed: 5: Input/output error\n" };
      if (verb === "print") {
        if (!launchctl.loaded) return { status: 113, stdout: "", stderr: `Could not find service "dev.edgesocks.agent" in domain for user gui: 501\n` };
        const state = launchctl.running ? "running" : "not running";
        return { status: 0, stdout: `gui/501/dev.edgesocks.agent = {\n\tactive count = 1\n\tstate = ${state}\n\n\tprogram = /opt/homebrew/bin/node\n\truns = 2\n\tpid = 4242\n\tlast exit code = 1\n}\n`, stderr: "" };
      }
      if (verb === "bootstrap") launchctl.loaded = true;
      if (verb === "bootout") launchctl.loaded = false;
      return { status: 0, stdout: "", stderr: "" };
    },
    out: (text) => (output.out += text),
    err: (text) => (output.err += text),
  });
  const plistPath = () => join(home, "Library", "LaunchAgents", "dev.edgesocks.agent.plist");

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "edgesocks-unit-launchd-"));
    home = join(dir, "home");
    mkdirSync(join(home, ".config", "edgesocks"), { recursive: true });
    writeFileSync(join(home, ".config", "edgesocks", "token"), "launchd-test-token-0123456789", { mode: 0o600 });
    writeFileSync(join(home, ".config", "edgesocks", "config.json"), JSON.stringify({ edge: "https://edgesocks.example.workers.dev", tokenFile: "token" }));
    calls = [];
    output = { out: "", err: "" };
    launchctl = { loaded: false, running: true, failing: [] };
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("install writes the plist for the default config and bootstraps it into the user's gui domain", () => {
    expect(runService(["install"], host())).toBe(0);
    const plist = readFileSync(plistPath(), "utf8");
    expect(plist).toContain(`<string>${join(home, ".config", "edgesocks", "config.json")}</string>`);
    expect(plist).toContain(`<string>${join(home, "Library", "Logs", "edgesocks.log")}</string>`);
    expect(plist).not.toContain("launchd-test-token");
    expect(existsSync(join(home, "Library", "Logs"))).toBe(true);
    expect(calls).toEqual(["launchctl print gui/501/dev.edgesocks.agent", "launchctl enable gui/501/dev.edgesocks.agent", `launchctl bootstrap gui/501 ${plistPath()}`]);
    expect(output.out).toBe(`edgesocks service: installed ${plistPath()}; the agent runs now and at every login (edgesocks service status; its log: ${join(home, "Library", "Logs", "edgesocks.log")})\n`);
    expect(output.err).toBe("");
  });

  it("a second install boots the loaded job out before loading the new plist", () => {
    runService(["install"], host());
    calls = [];
    expect(runService(["install"], host())).toBe(0);
    expect(calls).toEqual([
      "launchctl print gui/501/dev.edgesocks.agent",
      "launchctl bootout gui/501/dev.edgesocks.agent",
      "launchctl enable gui/501/dev.edgesocks.agent",
      `launchctl bootstrap gui/501 ${plistPath()}`,
    ]);
    expect(output.out).toContain("edgesocks service: reinstalled ");
  });

  it("a failing bootstrap is one line with launchctl's reason and exit 1", () => {
    launchctl.failing = ["bootstrap"];
    expect(runService(["install"], host())).toBe(1);
    expect(output.err).toBe(`edgesocks service: wrote ${plistPath()}, but launchctl bootstrap gui/501 ${plistPath()} failed: Bootstrap failed: 5: Input/output error\n`);
  });

  it("status shows launchctl's state, pid, runs and last exit code; 0 when running, 1 when not", () => {
    runService(["install"], host());
    output = { out: "", err: "" };
    expect(runService(["status"], host())).toBe(0);
    expect(output.out).toBe(
      `edgesocks service: launchd agent ${plistPath()} (all of it: launchctl print gui/501/dev.edgesocks.agent)\n  state = running\n  runs = 2\n  pid = 4242\n  last exit code = 1\n`,
    );
    launchctl.running = false;
    output = { out: "", err: "" };
    expect(runService(["status"], host())).toBe(1);
    expect(output.err).toBe("edgesocks service: installed but not running\n");
    launchctl.loaded = false;
    output = { out: "", err: "" };
    expect(runService(["status"], host())).toBe(1);
    expect(output.err).toBe(`edgesocks service: ${plistPath()} is installed but not loaded (launchctl bootstrap gui/501 ${plistPath()} loads it)\n`);
  });

  it("uninstall boots the job out and removes the plist; then status says not installed", () => {
    runService(["install"], host());
    calls = [];
    expect(runService(["uninstall"], host())).toBe(0);
    expect(calls).toEqual(["launchctl print gui/501/dev.edgesocks.agent", "launchctl bootout gui/501/dev.edgesocks.agent"]);
    expect(existsSync(plistPath())).toBe(false);
    expect(output.out).toContain(`edgesocks service: stopped the agent and removed ${plistPath()}\n`);
    output = { out: "", err: "" };
    expect(runService(["status"], host())).toBe(1);
    expect(output.err).toBe(`edgesocks service: not installed (no ${plistPath()}); edgesocks service install installs it\n`);
    expect(runService(["uninstall"], host())).toBe(0);
    expect(output.out).toBe(`edgesocks service: not installed (no ${plistPath()}); nothing to remove\n`);
  });

  it("says in one line that other platforms are not supported, after --help still works there", () => {
    expect(runService(["install", "--help"], host("win32"))).toBe(0);
    expect(output.out).toMatch(/^Usage: edgesocks service install \[--config PATH\]/);
    expect(runService(["install"], host("win32"))).toBe(1);
    expect(output.err).toBe("edgesocks service: not supported on win32 (a systemd user unit on Linux, a launchd agent on macOS)\n");
    expect(calls).toEqual([]);
  });
});
