// Install, uninstall and status of the launchd agent, through launchctl's domain commands
// (bootstrap, bootout, enable, print in the user's gui/UID domain; launchctl(1), macOS 10.11+).

import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { reason, writeAtomically, type CommandResult, type ServiceHost } from "./service-host.ts";
import { ServiceError, type ServiceSpec } from "./service-spec.ts";
import { LAUNCHD_LABEL, launchdPlist } from "./launchd-plist.ts";

/** The lines of `launchctl print` that `edgesocks service status` shows. */
const PRINT_FIELDS = /^\s*(state|pid|runs|last exit code) = /;

/** Where the plist and the agent's log go, and how launchctl names the job. */
export function launchdPaths(host: ServiceHost): { plistPath: string; logPath: string; domain: string; target: string } {
  const domain = `gui/${host.uid}`;
  return {
    plistPath: join(host.homeDir, "Library", "LaunchAgents", `${LAUNCHD_LABEL}.plist`),
    logPath: join(host.homeDir, "Library", "Logs", "edgesocks.log"),
    domain,
    target: `${domain}/${LAUNCHD_LABEL}`,
  };
}

/** Writes the plist and loads it, which starts the agent now (RunAtLoad) and at every login. */
export function installLaunchd(host: ServiceHost, spec: ServiceSpec): number {
  const { plistPath, logPath, domain, target } = launchdPaths(host);
  const text = launchdPlist(spec, logPath);
  const reinstall = existsSync(plistPath);
  // A loaded job keeps its old definition until it is booted out.
  if (launchctl(host, ["print", target]).status === 0) step(host, ["bootout", target], "");
  mkdirSync(join(host.homeDir, "Library", "Logs"), { recursive: true });
  writeAtomically(plistPath, text);
  // A job once disabled (launchctl disable) would refuse to bootstrap.
  step(host, ["enable", target], `wrote ${plistPath}, but`);
  step(host, ["bootstrap", domain, plistPath], `wrote ${plistPath}, but`);
  host.out(`edgesocks service: ${reinstall ? "reinstalled" : "installed"} ${plistPath}; the agent runs now and at every login (edgesocks service status; its log: ${logPath})\n`);
  return 0;
}

/** Stops the job and removes its plist; not installed is not an error. */
export function uninstallLaunchd(host: ServiceHost): number {
  const { plistPath, target } = launchdPaths(host);
  if (!existsSync(plistPath)) {
    host.out(`edgesocks service: not installed (no ${plistPath}); nothing to remove\n`);
    return 0;
  }
  const loaded = launchctl(host, ["print", target]).status === 0;
  if (loaded) step(host, ["bootout", target], "");
  rmSync(plistPath, { force: true });
  host.out(`edgesocks service: ${loaded ? "stopped the agent and " : ""}removed ${plistPath}\n`);
  return 0;
}

/** Prints the job's state from `launchctl print`; 0 when it runs, 1 when it is not installed, loaded or running. */
export function launchdStatus(host: ServiceHost): number {
  const { plistPath, domain, target } = launchdPaths(host);
  if (!existsSync(plistPath)) throw new ServiceError(`not installed (no ${plistPath}); edgesocks service install installs it`);
  const printed = launchctl(host, ["print", target]);
  if (printed.status !== 0) throw new ServiceError(`${plistPath} is installed but not loaded (launchctl bootstrap ${domain} ${plistPath} loads it)`);
  const fields = printed.stdout.split("\n").filter((line) => PRINT_FIELDS.test(line)).map((line) => `  ${line.trim()}\n`);
  host.out(`edgesocks service: launchd agent ${plistPath} (all of it: launchctl print ${target})\n${fields.join("")}`);
  if (/^\s*state = running$/m.test(printed.stdout)) return 0;
  throw new ServiceError("installed but not running");
}

function launchctl(host: ServiceHost, args: string[]): CommandResult {
  return host.run("launchctl", args);
}

/** Runs launchctl `args`; a failure throws, its message starting with `context`. */
function step(host: ServiceHost, args: string[], context: string): void {
  const result = launchctl(host, args);
  if (result.status !== 0) throw new ServiceError(`${context ? `${context} ` : ""}launchctl ${args.join(" ")} failed: ${reason(result)}`);
}
