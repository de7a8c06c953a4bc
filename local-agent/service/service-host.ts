// What `edgesocks service` needs of the machine, behind one object: the platform, the
// environment, the running Node and entry, the service managers' commands and the output. The
// command builds it from the process; tests hand in another, to run the launchd installer on
// Linux with launchctl recorded.

import { spawnSync } from "node:child_process";
import { mkdirSync, realpathSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname } from "node:path";

/** How a manager command ended: its status (null if it could not run or timed out) and output. */
export type CommandResult = { status: number | null; stdout: string; stderr: string; error?: string };

export type ServiceHost = {
  platform: NodeJS.Platform;
  env: Readonly<Record<string, string | undefined>>;
  /** The working directory a relative --config is resolved against. */
  cwd: string;
  homeDir: string;
  uid: number;
  /** The Node binary that runs `edgesocks` now. */
  nodePath: string;
  /** The file `edgesocks` resolved to: what the service runs. */
  entryPath: string;
  /** Runs a service manager's command (systemctl, launchctl) to its end. */
  run(command: string, args: readonly string[]): CommandResult;
  out(text: string): void;
  err(text: string): void;
};

/** A manager command that hangs (a user manager that does not answer) is given up after this. */
const MANAGER_COMMAND_TIMEOUT_MS = 60_000;

/** The host this process runs on. */
export function processHost(): ServiceHost {
  return {
    platform: process.platform,
    env: process.env,
    cwd: process.cwd(),
    homeDir: process.env.HOME || homedir(),
    uid: process.getuid?.() ?? 0,
    nodePath: process.execPath,
    entryPath: runningEntry(),
    run: (command, args) => {
      const result = spawnSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: MANAGER_COMMAND_TIMEOUT_MS });
      const error = result.error === undefined ? undefined : ((result.error as NodeJS.ErrnoException).code ?? result.error.message);
      return { status: result.status, stdout: result.stdout ?? "", stderr: result.stderr ?? "", ...(error === undefined ? {} : { error }) };
    },
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
  };
}

/**
 * The file Node started as its main module, with symlinks resolved: what `edgesocks` resolved to
 * however it was reached (npm's bin symlink, `npm link`, a global install, `node main.ts`). Node
 * itself loads the main module from this real path, so it is the file that is running, source or
 * compiled, and it stays right when the symlink's directory is not on the manager's PATH.
 */
function runningEntry(): string {
  const main = process.argv[1];
  if (main === undefined) throw new Error("no main module: edgesocks service must run as the edgesocks command");
  return realpathSync(main);
}

/** Why a manager command failed, in one line: it could not run, or its first line of error. */
export function reason(result: CommandResult): string {
  if (result.error === "ENOENT") return "the command was not found";
  if (result.error !== undefined) return result.error;
  const line = result.stderr.split("\n").find((candidate) => candidate.trim() !== "");
  return line?.trim() ?? `exit status ${result.status}`;
}

/** Writes `text` to `path` through a temporary file beside it, so a manager never reads half a file. */
export function writeAtomically(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode: 0o644 });
  renameSync(temporary, path);
}
