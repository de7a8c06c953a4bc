// CPU time and memory of processes, read from /proc: the cost side of the benchmark.

import { readFileSync, readdirSync } from "node:fs";

/** Kernel clock ticks per second for /proc/PID/stat times (USER_HZ is 100 on Linux). */
const TICKS_PER_SECOND = 100;

/** One entry of the process table: its id, its parent's, and its command line (NULs as spaces). */
export type ProcEntry = { pid: number; parentPid: number; command: string };

/** Every process now visible in /proc. */
export function listProcesses(): ProcEntry[] {
  const entries: ProcEntry[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const parentPid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const command = readFileSync(`/proc/${name}/cmdline`, "utf8").replaceAll("\0", " ").trim();
      entries.push({ pid: Number(name), parentPid, command });
    } catch {
      // the process ended while we looked
    }
  }
  return entries;
}

/** `pid` and every process below it. Dante forks workers; microsocks and the agent use threads. */
export function processTree(pid: number, processes: readonly ProcEntry[] = listProcesses()): number[] {
  const children = new Map<number, number[]>();
  for (const { pid: child, parentPid } of processes) children.set(parentPid, [...(children.get(parentPid) ?? []), child]);
  const tree: number[] = [];
  const pending = [pid];
  for (let current = pending.pop(); current !== undefined; current = pending.pop()) {
    tree.push(current);
    pending.push(...(children.get(current) ?? []));
  }
  return tree;
}

/** User plus system CPU seconds used so far by `pids` (those that still exist). */
export function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8");
      const after = fields.slice(fields.lastIndexOf(")") + 2).split(" ");
      // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command name.
      ticks += Number(after[11]) + Number(after[12]);
    } catch {
      // ended: its time is gone with it
    }
  }
  return ticks / TICKS_PER_SECOND;
}

/** Resident memory of `pids` together, in bytes. */
export function totalRssBytes(pids: number[]): number {
  let bytes = 0;
  for (const pid of pids) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      bytes += Number(match?.[1] ?? 0) * 1024;
    } catch {
      // ended
    }
  }
  return bytes;
}
