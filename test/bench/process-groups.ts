// Child processes a long benchmark owns, each in a process group of its own. wrangler dev runs
// wrangler's node, esbuild and two workerd processes: ending only its leader can leave workerd
// behind, so every stop, and the last-resort sweep at exit, signals the whole group. A group of
// its own also keeps a terminal's Ctrl-C (a SIGINT to the foreground group) from reaching the
// children before the benchmark has decided how to end them.

import { spawn, type SpawnOptions } from "node:child_process";

/** Time a group gets to end on SIGTERM before it is SIGKILLed (the agent drains on SIGTERM; with no client left it exits at once). */
const STOP_GRACE_MS = 5_000;
/** Output kept per process, for the error message of one that failed: its last bytes only. */
const OUTPUT_KEEP_CHARS = 64 * 1024;

export type OwnedProcess = {
  name: string;
  /** The group leader's pid, which is also the group id. */
  pid: number;
  /** The last OUTPUT_KEEP_CHARS characters it wrote to stdout and stderr, interleaved. */
  output(): string;
  /** Whether the leader has exited. */
  hasExited(): boolean;
  /** Resolves once the leader has exited. */
  exited: Promise<void>;
  /** Ends the whole group: SIGTERM, then SIGKILL after STOP_GRACE_MS or once the leader is gone. Idempotent. */
  stop(): Promise<void>;
};

const live = new Set<OwnedProcess>();

/** Spawns `command` as the leader of a new process group that this module ends on stop(), on exit and by stopAllGroups(). */
export function spawnGroup(name: string, command: string, args: string[], options: Omit<SpawnOptions, "detached" | "stdio">): OwnedProcess {
  const child = spawn(command, args, { ...options, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${name}: spawn ${command} failed`);
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-OUTPUT_KEEP_CHARS);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  let leaderExited = false;
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      leaderExited = true;
      resolve();
    }),
  );
  let stopping: Promise<void> | undefined;
  const owned: OwnedProcess = {
    name,
    pid,
    output: () => output,
    hasExited: () => leaderExited,
    exited,
    stop: () => {
      stopping ??= (async () => {
        signalGroup(pid, "SIGTERM");
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_GRACE_MS)))]);
        clearTimeout(timer);
        // The leader may go first and leave members behind (wrangler's workerd): they go with it.
        signalGroup(pid, "SIGKILL");
        await exited;
        live.delete(owned);
      })();
      return stopping;
    },
  };
  live.add(owned);
  return owned;
}

/** Stops every group still owned, all at once. */
export async function stopAllGroups(): Promise<void> {
  await Promise.all([...live].map((owned) => owned.stop()));
}

/** SIGKILLs every group still owned, synchronously: for an 'exit' handler, where nothing async runs. */
export function killAllGroupsNow(): void {
  for (const owned of live) signalGroup(owned.pid, "SIGKILL");
  live.clear();
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group has no member left
  }
}

/**
 * Ends every owned group when this process ends: on SIGINT and SIGTERM, `onSignal` runs (to stop
 * the work and clean up), then the groups are stopped and the process exits 128 + the signal's
 * number; on any other exit, an uncaught error included, they are SIGKILLed.
 */
export function endGroupsOnExit(onSignal: (signal: NodeJS.Signals) => Promise<void>): void {
  process.once("exit", killAllGroupsNow);
  const EXIT_STATUS: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };
  let ending = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      // A second Ctrl-C while the first is being handled: no more waiting.
      if (ending) process.exit(EXIT_STATUS[signal]);
      ending = true;
      void onSignal(signal)
        .catch(() => {})
        .then(stopAllGroups)
        .finally(() => process.exit(EXIT_STATUS[signal]));
    });
  }
}
