// The launchd agent that runs the agent at login (~/Library/LaunchAgents/dev.edgesocks.agent.plist).
// Pure: a ServiceSpec in, the property list's XML out. Keys as launchd.plist(5) defines them.
//
// launchd has no RestartPreventExitStatus: KeepAlive { SuccessfulExit: false } restarts every
// non-zero exit, a bad config's 2 too. `edgesocks service install` refuses a config the agent
// would not start with, and ThrottleInterval spaces out what a config broken later costs.

import { agentCommandLine, checkServicePath, type ServiceSpec } from "./service-spec.ts";

/** The job's label, which names it to launchctl (gui/UID/LABEL) and names its plist file. */
export const LAUNCHD_LABEL = "dev.edgesocks.agent";
/** The least seconds between two starts: a run that lived longer restarts at once, a start-up failure every 30 s. */
export const LAUNCHD_THROTTLE_SEC = 30;

/** The plist's text for `spec`, its agent's stdout and stderr appended to `logPath`. */
export function launchdPlist(spec: ServiceSpec, logPath: string): string {
  checkServicePath(spec.nodePath, "the Node binary's path");
  checkServicePath(spec.entryPath, "the edgesocks entry's path");
  checkServicePath(spec.configPath, "the config file's path");
  checkServicePath(logPath, "the log file's path");
  const args = agentCommandLine(spec).map((arg) => `\t\t<string>${xmlText(arg)}</string>\n`).join("");
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by \`edgesocks service install\`; \`edgesocks service uninstall\` removes it. The token comes from the config file's tokenFile. -->
<plist version="1.0">
<dict>
\t<key>Label</key>
\t<string>${LAUNCHD_LABEL}</string>
\t<key>ProgramArguments</key>
\t<array>
${args}\t</array>
\t<key>RunAtLoad</key>
\t<true/>
\t<key>KeepAlive</key>
\t<dict>
\t\t<key>SuccessfulExit</key>
\t\t<false/>
\t</dict>
\t<key>ThrottleInterval</key>
\t<integer>${LAUNCHD_THROTTLE_SEC}</integer>
\t<key>ExitTimeOut</key>
\t<integer>${spec.stopTimeoutSec}</integer>
\t<key>StandardOutPath</key>
\t<string>${xmlText(logPath)}</string>
\t<key>StandardErrorPath</key>
\t<string>${xmlText(logPath)}</string>
</dict>
</plist>
`;
}

/** Text safe inside an XML element: &, < and > escaped (quotes too, harmless there and safe in attributes). */
export function xmlText(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[char] ?? char);
}
