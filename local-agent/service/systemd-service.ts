// Install, uninstall and status of the systemd user unit, through `systemctl --user`. The unit
// goes where the user manager looks first: $XDG_CONFIG_HOME/systemd/user, else
// ~/.config/systemd/user (systemd.unit(5), "User Unit Search Path").

import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { defaultConfigDir } from "../config/default-path.ts";
import { reason, writeAtomically, type CommandResult, type ServiceHost } from "./service-host.ts";
import { ServiceError, type ServiceSpec } from "./service-spec.ts";
import { SYSTEMD_UNIT_NAME, systemdUnit } from "./systemd-unit.ts";

/** systemctl's status for a unit that is not running (LSB "program is not running"). */
const SYSTEMCTL_NOT_RUNNING = 3;

/** The unit file's path for the host's user. */
export function systemdUnitPath(host: ServiceHost): string {
  // defaultConfigDir is $XDG_CONFIG_HOME/edgesocks (or ~/.config/edgesocks): the same base.
  return join(dirname(defaultConfigDir(host.env, "linux")), "systemd", "user", SYSTEMD_UNIT_NAME);
}

/** Writes the unit and starts it now and at every login; a reinstall restarts it with the new unit. */
export function installSystemd(host: ServiceHost, spec: ServiceSpec): number {
  const unitPath = systemdUnitPath(host);
  const text = systemdUnit(spec);
  const reinstall = existsSync(unitPath);
  writeAtomically(unitPath, text);
  const step = (args: string[]) => {
    const result = systemctl(host, args);
    if (result.status !== 0) {
      throw new ServiceError(`wrote ${unitPath}, but systemctl --user ${args.join(" ")} failed: ${reason(result)}; once a user manager runs: systemctl --user enable --now ${SYSTEMD_UNIT_NAME}`);
    }
  };
  step(["daemon-reload"]);
  step(["enable", "--now", SYSTEMD_UNIT_NAME]);
  if (reinstall) {
    // A unit that hit its start limit (a refused token, say) refuses a restart for the rest of
    // the interval; clearing it can fail only when there is nothing to clear.
    systemctl(host, ["reset-failed", SYSTEMD_UNIT_NAME]);
    // enable --now leaves an instance that was already running on the old unit.
    step(["restart", SYSTEMD_UNIT_NAME]);
  }
  host.out(`edgesocks service: ${reinstall ? "reinstalled" : "installed"} ${unitPath}; the agent runs now and at every login (edgesocks service status; its log: journalctl --user -u edgesocks)\n`);
  return 0;
}

/** Stops and disables the unit and removes its file; not installed is not an error. */
export function uninstallSystemd(host: ServiceHost): number {
  const unitPath = systemdUnitPath(host);
  if (!existsSync(unitPath)) {
    host.out(`edgesocks service: not installed (no ${unitPath}); nothing to remove\n`);
    return 0;
  }
  const disabled = systemctl(host, ["disable", "--now", SYSTEMD_UNIT_NAME]);
  rmSync(unitPath, { force: true });
  if (disabled.status !== 0) throw new ServiceError(`removed ${unitPath}, but systemctl --user disable --now ${SYSTEMD_UNIT_NAME} failed: ${reason(disabled)}`);
  const reloaded = systemctl(host, ["daemon-reload"]);
  if (reloaded.status !== 0) throw new ServiceError(`stopped the agent and removed ${unitPath}, but systemctl --user daemon-reload failed: ${reason(reloaded)}`);
  host.out(`edgesocks service: stopped the agent and removed ${unitPath}\n`);
  return 0;
}

/** Prints systemctl's status of the unit; 0 when it runs, 1 when it is not installed or not running. */
export function systemdStatus(host: ServiceHost): number {
  const unitPath = systemdUnitPath(host);
  if (!existsSync(unitPath)) throw new ServiceError(`not installed (no ${unitPath}); edgesocks service install installs it`);
  const result = systemctl(host, ["status", "--no-pager", SYSTEMD_UNIT_NAME]);
  host.out(`edgesocks service: systemd user unit ${unitPath}\n${result.stdout}`);
  if (result.status === 0) return 0;
  if (result.status === SYSTEMCTL_NOT_RUNNING) throw new ServiceError(`installed but not running (its log: journalctl --user -u edgesocks)`);
  throw new ServiceError(`systemctl --user status ${SYSTEMD_UNIT_NAME} failed: ${reason(result)}`);
}

function systemctl(host: ServiceHost, args: string[]): CommandResult {
  return host.run("systemctl", ["--user", ...args]);
}
