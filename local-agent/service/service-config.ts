// The config file a service is installed with, checked by the agent's own parser as the service
// will start it: `edgesocks run --config FILE` in an environment that is not this shell's. A
// unit is never written that would exit 2 at its first start.

import { existsSync } from "node:fs";
import { ConfigError, parseAgentCommand } from "../config/config.ts";
import { parseConfigFile } from "../config/config-file.ts";
import { readText } from "../config/config-values.ts";
import { AGENT_EXIT, STOP_MARGIN_SEC, ServiceError } from "./service-spec.ts";

/** What install takes from a config the agent accepts. */
export type CheckedConfig = { stopTimeoutSec: number; warnings: string[] };

/**
 * Parses `configPath` (absolute) as the service's agent will: with no environment, since a login
 * manager does not pass this shell's, so the token must come from the file's tokenFile and
 * passwords from files or the file itself. `named`: the user gave the path (--config), so no hint
 * of the default. Throws ServiceError (status 2) saying what to fix.
 */
export function checkServiceConfig(configPath: string, shellEnv: Readonly<Record<string, string | undefined>>, named: boolean): CheckedConfig {
  if (!existsSync(configPath)) {
    const hint = named ? "" : ": `edgesocks deploy` writes it, or name yours with --config PATH";
    throw new ServiceError(`no config file at ${configPath}${hint}`, AGENT_EXIT.usage);
  }
  try {
    const file = parseConfigFile(readText(configPath, configPath), configPath);
    if (file.tokenFile === undefined) {
      throw new ServiceError(`${configPath}: names no tokenFile; the service reads its token from the file tokenFile names (EDGESOCKS_TOKEN does not reach it)`, AGENT_EXIT.usage);
    }
    const command = parseAgentCommand(["--config", configPath], {});
    if (command.kind !== "run") throw new Error(`unexpected ${command.kind}`);
    return { stopTimeoutSec: Math.ceil(command.config.drainTimeoutMs / 1000) + STOP_MARGIN_SEC, warnings: command.warnings };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw new ServiceError(`${error.message}${startsWithShellEnv(configPath, shellEnv) ? " (the service does not get this shell's environment: put passwords in passwordFile)" : ""}`, AGENT_EXIT.usage);
  }
}

/** Whether the config parses with this shell's environment: then what it lacks under the service is a variable. */
function startsWithShellEnv(configPath: string, shellEnv: Readonly<Record<string, string | undefined>>): boolean {
  try {
    parseAgentCommand(["--config", configPath], shellEnv);
    return true;
  } catch {
    return false;
  }
}
