// `edgesocks service install|uninstall|status`: the agent as a login service, a systemd user
// unit on Linux and a launchd agent on macOS (local-agent/service/), started with the config file.

import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { argvProblem, type OptionSpecs } from "../config/argv-errors.ts";
import { defaultConfigPath } from "../config/default-path.ts";
import { checkServiceConfig } from "../service/service-config.ts";
import { processHost, type ServiceHost } from "../service/service-host.ts";
import { ServiceError, type ServiceSpec } from "../service/service-spec.ts";
import { installLaunchd, launchdStatus, uninstallLaunchd } from "../service/launchd-service.ts";
import { installSystemd, systemdStatus, uninstallSystemd } from "../service/systemd-service.ts";

const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

export const SERVICE_USAGE = `Usage: edgesocks service install [--config PATH]
       edgesocks service uninstall
       edgesocks service status

Runs the agent as a service of your login: started now and at every login, restarted when it
fails (not when its config is bad), with the config file that \`edgesocks deploy\` writes.

Actions:
  install     write the service file and start the agent with it
  uninstall   stop the agent and remove the service file
  status      say whether the service is installed and running (exit 0 when it runs)

Linux: a systemd user unit, ~/.config/systemd/user/edgesocks.service (systemctl --user).
macOS: a launchd agent, ~/Library/LaunchAgents/dev.edgesocks.agent.plist (launchctl), its log
in ~/Library/Logs/edgesocks.log.

\`edgesocks service ACTION --help\` shows an action's options.
`;

const ACTION_USAGE = {
  install: `Usage: edgesocks service install [--config PATH]

Writes the service file and starts the agent with it, now and at every login: the Node binary
and the edgesocks entry running this command, absolute, with \`run --config PATH\`. Run it
again after moving either, or after changing the config's drainTimeoutMs (the service's stop
timeout follows it). The config must start the agent on its own: the service does not get this
shell's environment, so the token comes from the file its tokenFile names. A config the agent
would refuse is refused here, and nothing is written.

Options:
  --config PATH   the config file the agent runs with (default: $XDG_CONFIG_HOME/edgesocks/config.json,
                  else ~/.config/edgesocks/config.json)
  -h, --help      show this help
`,
  uninstall: `Usage: edgesocks service uninstall

Stops the agent and removes the service file; the config file stays.

Options:
  -h, --help      show this help
`,
  status: `Usage: edgesocks service status

Shows whether the service is installed and running, and what the service manager says of it.
Exits 0 when it runs, 1 when it is not installed or not running.

Options:
  -h, --help      show this help
`,
} as const;
type Action = keyof typeof ACTION_USAGE;

const HELP = { help: { type: "boolean", short: "h" } } as const;
const ACTION_OPTIONS = {
  install: { config: { type: "string" }, ...HELP },
  uninstall: HELP,
  status: HELP,
} as const satisfies Record<Action, OptionSpecs>;

/** What each service manager does for the three actions. */
type Manager = { install(host: ServiceHost, spec: ServiceSpec): number; uninstall(host: ServiceHost): number; status(host: ServiceHost): number };
const MANAGERS: Partial<Record<NodeJS.Platform, Manager>> = {
  linux: { install: installSystemd, uninstall: uninstallSystemd, status: systemdStatus },
  darwin: { install: installLaunchd, uninstall: uninstallLaunchd, status: launchdStatus },
};

/** Runs `edgesocks service` with the arguments after the subcommand; resolves to the exit status. */
export async function serviceCommand(argv: string[]): Promise<number> {
  return runService(argv, processHost());
}

/** `edgesocks service` on `host`: the platform, environment, commands and output it is given. */
export function runService(argv: readonly string[], host: ServiceHost): number {
  const fail = (message: string, status: number) => {
    host.err(`edgesocks service: ${message}\n`);
    return status;
  };
  const [first, ...rest] = argv;
  if (first === undefined) return fail("needs an action: install, uninstall or status (see edgesocks service --help)", EXIT_USAGE);
  if (first === "--help" || first === "-h" || first === "help") {
    host.out(SERVICE_USAGE);
    return 0;
  }
  if (!Object.hasOwn(ACTION_USAGE, first)) return fail(unknownAction(first), EXIT_USAGE);
  const action = first as Action;
  const options = ACTION_OPTIONS[action];
  const problem = argvProblem(rest, { options, usage: ACTION_USAGE[action], helpCommand: `edgesocks service ${action} --help`, secretFollowers: [] });
  if (problem !== undefined) return fail(problem, EXIT_USAGE);
  const { values } = parseArgs({ args: [...rest], options, strict: true, allowPositionals: false });
  if (values.help) {
    host.out(ACTION_USAGE[action]);
    return 0;
  }
  const manager = MANAGERS[host.platform];
  if (manager === undefined) return fail(`not supported on ${host.platform} (a systemd user unit on Linux, a launchd agent on macOS)`, EXIT_FAILURE);
  try {
    if (action === "uninstall") return manager.uninstall(host);
    if (action === "status") return manager.status(host);
    // Only install takes --config; parseArgs' type is the union over the three actions' options.
    const given = (values as { config?: string }).config;
    const configPath = given === undefined ? defaultConfigPath(host.env, host.platform) : resolve(host.cwd, given);
    const checked = checkServiceConfig(configPath, host.env, given !== undefined);
    for (const warning of checked.warnings) host.err(`edgesocks service: warning: ${warning}\n`);
    return manager.install(host, { nodePath: host.nodePath, entryPath: host.entryPath, configPath, stopTimeoutSec: checked.stopTimeoutSec });
  } catch (error) {
    if (!(error instanceof ServiceError)) throw error;
    return fail(error.message, error.exitStatus);
  }
}

/** The message for a first argument that names no action, quoted only when it is a short word (it may be a secret). */
function unknownAction(word: string): string {
  const actions = "actions: install, uninstall, status (see edgesocks service --help)";
  if (word.startsWith("-")) return `the action comes first: edgesocks service install|uninstall|status [options]; ${actions}`;
  if (/^[a-z][a-z0-9-]{0,14}$/i.test(word)) return `unknown action ${JSON.stringify(word)}; ${actions}`;
  return `argument 1 is not an action (not shown, since it may be a secret); ${actions}`;
}
