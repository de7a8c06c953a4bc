// What the login service runs, shared by the systemd unit and the launchd agent: the Node binary,
// the `edgesocks` entry and the config file, all absolute, and how long a stop may take.

/** A service command that cannot go ahead: the CLI prints the message as one line and exits with `exitStatus`. */
export class ServiceError extends Error {
  override readonly name = "ServiceError";
  readonly exitStatus: 1 | 2;
  constructor(message: string, exitStatus: 1 | 2 = 1) {
    super(message);
    this.exitStatus = exitStatus;
  }
}

/** What a generated service file starts, and the stop timeout its manager gets. */
export type ServiceSpec = {
  /** The Node binary that runs the agent (the one running `edgesocks service install`). */
  nodePath: string;
  /** The file `edgesocks` resolved to at install time (the package's CLI entry). */
  entryPath: string;
  /** The config file the agent runs with; it names the token file, so no secret is in the service file. */
  configPath: string;
  /** Seconds the manager waits after SIGTERM before SIGKILL: the agent's drain timeout and a margin. */
  stopTimeoutSec: number;
};

/** Seconds beyond the agent's drain timeout that a stop may take (the drain's log lines, the tunnels' close frames). */
export const STOP_MARGIN_SEC = 5;

/** The agent's exit statuses (local-agent/cli/run.ts) that the managers treat specially. */
export const AGENT_EXIT = {
  /** A bad config: restarting cannot help. */
  usage: 2,
  /** A stop that reset transfers still open at the drain timeout: a requested stop, not a failure. */
  drainCut: 3,
} as const;

/** The command line the service runs, executable first. */
export function agentCommandLine(spec: ServiceSpec): string[] {
  return [spec.nodePath, spec.entryPath, "run", "--config", spec.configPath];
}

/**
 * Refuses a path no service file can carry: relative (a manager has no useful working directory),
 * or holding a control character (a line break would end a unit's line; XML 1.0 cannot hold most).
 */
export function checkServicePath(path: string, what: string): void {
  if (!path.startsWith("/")) throw new ServiceError(`${what} must be an absolute path, not ${JSON.stringify(path)}`);
  if (/[\x00-\x1f\x7f]/.test(path)) throw new ServiceError(`${what} ${JSON.stringify(path)} holds a control character, which a service file cannot carry`);
}
