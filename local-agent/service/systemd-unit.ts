// The systemd user unit that runs the agent at login (~/.config/systemd/user/edgesocks.service).
// Pure: a ServiceSpec in, the unit's text out.
//
// Quoting follows systemd.service(5) "Command lines" and systemd.unit(5) "Specifiers", checked
// against systemd 252 with `systemd-analyze verify` and a running user manager
// (test/e2e/service.test.ts): specifiers (%) are expanded on the whole line first, then words are
// split with C-style unquoting, then $VAR is substituted in the arguments but not in the
// executable's path, which systemd also refuses outright if it holds ", ' or \.

import { AGENT_EXIT, ServiceError, agentCommandLine, checkServicePath, type ServiceSpec } from "./service-spec.ts";

/** The unit's name, as `systemctl --user` knows it. */
export const SYSTEMD_UNIT_NAME = "edgesocks.service";
/** Seconds between a failure and the restart. */
export const SYSTEMD_RESTART_SEC = 5;
/**
 * Starts allowed per interval before systemd gives up: a token the edge refuses exits 1, which
 * is also a crash's status, so it is retried, but five times in five minutes, not forever (each
 * start costs a Worker request).
 */
export const SYSTEMD_START_LIMIT = { burst: 5, intervalSec: 300 } as const;

/** The unit file's text for `spec`; throws ServiceError for a path systemd cannot run. */
export function systemdUnit(spec: ServiceSpec): string {
  const [executable = "", ...args] = agentCommandLine(spec);
  checkServicePath(spec.nodePath, "the Node binary's path");
  checkServicePath(spec.entryPath, "the edgesocks entry's path");
  checkServicePath(spec.configPath, "the config file's path");
  const execStart = [systemdExecutable(executable), ...args.map(systemdArgument)].join(" ");
  return `# Written by \`edgesocks service install\`; \`edgesocks service uninstall\` removes it.
# The token comes from the config file's tokenFile: no secret belongs in this file.
[Unit]
Description=edgesocks proxy agent (SOCKS5, SOCKS4 and HTTP through the edge)
StartLimitIntervalSec=${SYSTEMD_START_LIMIT.intervalSec}
StartLimitBurst=${SYSTEMD_START_LIMIT.burst}

[Service]
Type=exec
ExecStart=${execStart}
Restart=on-failure
RestartSec=${SYSTEMD_RESTART_SEC}
# ${AGENT_EXIT.usage}: the config is bad, and a restart would fail the same way.
RestartPreventExitStatus=${AGENT_EXIT.usage}
# ${AGENT_EXIT.drainCut}: stopped on request, with transfers still open at the drain timeout reset.
SuccessExitStatus=${AGENT_EXIT.drainCut}
TimeoutStopSec=${spec.stopTimeoutSec}

[Install]
WantedBy=default.target
`;
}

/** The executable as ExecStart's first word: quoted, % doubled; systemd refuses ", ' and \ in it. */
export function systemdExecutable(path: string): string {
  const refused = /["'\\]/.exec(path);
  if (refused) throw new ServiceError(`the Node binary's path ${JSON.stringify(path)} holds ${refused[0]}, which systemd does not accept in an executable's path; run edgesocks with a Node installed elsewhere`);
  return `"${path.replaceAll("%", "%%")}"`;
}

/** One ExecStart argument, quoted so that systemd hands it to the process unchanged. */
export function systemdArgument(arg: string): string {
  const escaped = arg.replace(/[\\"%$]/g, (char) => ({ "\\": "\\\\", '"': '\\"', "%": "%%", $: "$$" })[char] ?? char);
  return `"${escaped}"`;
}
