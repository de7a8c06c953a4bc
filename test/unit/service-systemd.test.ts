// The systemd user unit (local-agent/service/systemd-unit.ts): the exact file, and ExecStart's
// quoting of paths systemd would otherwise split, expand or refuse. test/e2e/service.test.ts
// has systemd itself read these units (systemd-analyze verify, and a running user manager).

import { describe, expect, it } from "vitest";
import { ServiceError, type ServiceSpec } from "../../local-agent/service/service-spec.ts";
import { systemdArgument, systemdExecutable, systemdUnit } from "../../local-agent/service/systemd-unit.ts";

const SPEC: ServiceSpec = {
  nodePath: "/usr/local/bin/node",
  entryPath: "/usr/local/lib/node_modules/edgesocks/local-agent/cli/main.ts",
  configPath: "/home/ada/.config/edgesocks/config.json",
  stopTimeoutSec: 10,
};

describe("systemd user unit", () => {
  it("runs edgesocks run --config with absolute paths, restarts on failure but not on a bad config, and starts at login", () => {
    expect(systemdUnit(SPEC)).toBe(`# Written by \`edgesocks service install\`; \`edgesocks service uninstall\` removes it.
# The token comes from the config file's tokenFile: no secret belongs in this file.
[Unit]
Description=edgesocks proxy agent (SOCKS5, SOCKS4 and HTTP through the edge)
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=exec
ExecStart="/usr/local/bin/node" "/usr/local/lib/node_modules/edgesocks/local-agent/cli/main.ts" "run" "--config" "/home/ada/.config/edgesocks/config.json"
Restart=on-failure
RestartSec=5
# 2: the config is bad, and a restart would fail the same way.
RestartPreventExitStatus=2
# 3: stopped on request, with transfers still open at the drain timeout reset.
SuccessExitStatus=3
TimeoutStopSec=10

[Install]
WantedBy=default.target
`);
  });

  it("gives the manager the stop timeout it was handed", () => {
    expect(systemdUnit({ ...SPEC, stopTimeoutSec: 605 })).toMatch(/^TimeoutStopSec=605$/m);
  });

  it.each([
    ["/home/ada/My Files/config.json", `"/home/ada/My Files/config.json"`],
    // A specifier (%h is the home directory) and an environment variable, both kept literal.
    ["/home/ada/100%h/config.json", `"/home/ada/100%%h/config.json"`],
    ["/home/ada/$HOME/${USER}/c.json", '"/home/ada/$$HOME/$${USER}/c.json"'],
    [`/home/ada/"quoted"/c.json`, `"/home/ada/\\"quoted\\"/c.json"`],
    ["/home/ada/back\\slash/c.json", `"/home/ada/back\\\\slash/c.json"`],
    // Inside double quotes a single quote, a semicolon and a non-ASCII letter need nothing.
    ["/home/ada/it's; ünï/c.json", `"/home/ada/it's; ünï/c.json"`],
  ])("quotes the argument %j as %s", (path, quoted) => {
    expect(systemdArgument(path)).toBe(quoted);
    expect(systemdUnit({ ...SPEC, configPath: path })).toContain(`"run" "--config" ${quoted}\n`);
  });

  it("quotes the executable and doubles its %, but leaves its $ alone (systemd substitutes variables only in arguments)", () => {
    expect(systemdExecutable("/opt/node 22/100%/$v/bin/node")).toBe(`"/opt/node 22/100%%/$v/bin/node"`);
  });

  it.each([`/opt/"node"/bin/node`, "/opt/it's/bin/node", "/opt/back\\slash/node"])("refuses a Node binary at %j, a path systemd refuses as an executable", (nodePath) => {
    expect(() => systemdUnit({ ...SPEC, nodePath })).toThrow(ServiceError);
    expect(() => systemdUnit({ ...SPEC, nodePath })).toThrow(/which systemd does not accept in an executable's path/);
  });

  it.each([
    [{ configPath: "config.json" }, /^the config file's path must be an absolute path, not "config\.json"$/],
    [{ entryPath: "./main.ts" }, /^the edgesocks entry's path must be an absolute path/],
    [{ configPath: "/home/ada/new\nline/config.json" }, /^the config file's path "\/home\/ada\/new\\nline\/config\.json" holds a control character/],
  ])("refuses %j", (change, message) => {
    expect(() => systemdUnit({ ...SPEC, ...change })).toThrow(message);
  });
});
