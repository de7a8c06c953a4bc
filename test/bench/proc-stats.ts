// CPU time and memory of processes, read from /proc: the cost side of the benchmark.

import { readFileSync, readdirSync } from "node:fs";

/** Kernel clock ticks per second for /proc/PID/stat times (USER_HZ is 100 on Linux). */
const TICKS_PER_SECOND = 100;

/** `pid` and every process below it. Dante forks workers; microsocks and the agent use threads. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
    } catch {
      // the process ended while we looked
    }
  }
  const tree: number[] = [];
  const visit = (current: number) => {
    tree.push(current);
    for (const child of children.get(current) ?? []) visit(child);
  };
  visit(pid);
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
