// The cost benchmark's report (stream-cost.ts): medians per workload as a markdown table, a
// tunnel's own cost, and what the free plan's 10 ms of CPU per invocation holds at those costs.

import type { ProfileSummary } from "./v8-profile.ts";

/** Cloudflare Workers free plan: CPU per invocation (developers.cloudflare.com/workers/platform/limits). */
export const FREE_PLAN_CPU_MS = 10;

/** What a workload is measured per: a stream, or a MB (10^6 bytes) relayed. */
export type Workload = { name: string; key: "own" | "shared" | "download" | "upload"; unit: string; units: number; run(): Promise<void> };

/** One pass of a workload: the workerd process's CPU per unit, and (profiled passes) the profile's split per unit. */
export type Pass = { processMsPerUnit: number; profile: ProfileSummary | undefined; wallSeconds: number };

function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1 ? (sorted[middle] ?? Number.NaN) : ((sorted[middle - 1] ?? Number.NaN) + (sorted[middle] ?? Number.NaN)) / 2;
}
const spread = (list: number[], digits: number) =>
  list.length > 1 ? `${median(list).toFixed(digits)} (${Math.min(...list).toFixed(digits)}–${Math.max(...list).toFixed(digits)})` : median(list).toFixed(digits);

export type Results = Map<Workload["key"], { workload: Workload; plain: Pass[]; profiled: Pass[] }>;

/** Medians of one workload: (a) the process, (b) JavaScript and GC, and the profiled pass's process CPU. */
function figures(results: Results, key: Workload["key"]) {
  const entry = results.get(key);
  const profiles = (entry?.profiled ?? []).flatMap((pass) => (pass.profile ? [pass.profile] : []));
  return {
    processMs: median((entry?.plain ?? []).map((pass) => pass.processMsPerUnit)),
    javascriptMs: median(profiles.map((profile) => profile.javascriptMs)),
    garbageCollectorMs: median(profiles.map((profile) => profile.garbageCollectorMs)),
    programMs: median(profiles.map((profile) => profile.programMs)),
    profiledProcessMs: median((entry?.profiled ?? []).map((pass) => pass.processMsPerUnit)),
  };
}

/** The markdown table, the budget sentences and the profile's top JavaScript functions. */
export function report(results: Results, streamsPerTunnel: number, failedUpgrades: ReadonlyMap<string, number>, context: string[]): string {
  const lines = [
    ...context,
    "",
    "| workload | per | (a) workerd process CPU, ms | (b) JavaScript, ms | (b) GC, ms | (b) (program), the lock held without JS, ms | workerd CPU while profiled, ms |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const { workload, plain, profiled } of results.values()) {
    const digits = 3;
    const profiles = profiled.flatMap((pass) => (pass.profile ? [pass.profile] : []));
    lines.push(
      `| ${workload.name} | ${workload.unit} | ${spread(
        plain.map((pass) => pass.processMsPerUnit),
        digits,
      )} | ${spread(
        profiles.map((profile) => profile.javascriptMs),
        digits,
      )} | ${spread(
        profiles.map((profile) => profile.garbageCollectorMs),
        digits,
      )} | ${spread(
        profiles.map((profile) => profile.programMs),
        digits,
      )} | ${spread(
        profiled.map((pass) => pass.processMsPerUnit),
        digits,
      )} |`,
    );
  }
  const own = figures(results, "own");
  const shared = figures(results, "shared");
  const download = figures(results, "download");
  const upload = figures(results, "upload");
  const tunnelProcess = Math.max(0, own.processMs - shared.processMs);
  const tunnelScript = Math.max(0, own.javascriptMs + own.garbageCollectorMs - shared.javascriptMs - shared.garbageCollectorMs);
  lines.push(
    "",
    `A tunnel's own cost (upgrade, token check, close), the difference of the two open rows: ${tunnelProcess.toFixed(3)} ms of workerd process CPU, ${tunnelScript.toFixed(3)} ms of JavaScript and GC.`,
    "",
    budgetSentence("By the whole workerd process (a)", tunnelProcess, shared.processMs, download.processMs, upload.processMs, streamsPerTunnel),
    budgetSentence(
      "By its JavaScript and GC alone (b)",
      tunnelScript,
      shared.javascriptMs + shared.garbageCollectorMs,
      download.javascriptMs + download.garbageCollectorMs,
      upload.javascriptMs + upload.garbageCollectorMs,
      streamsPerTunnel,
    ),
  );
  const retried = [...failedUpgrades].map(([message, count]) => `${count} × ${message}`);
  lines.push("", `Upgrades that failed before their 101 and were tried again: ${retried.length > 0 ? retried.join("; ") : "none"}.`);
  for (const { workload, profiled } of results.values()) {
    const top = profiled.at(-1)?.profile?.topFunctions ?? [];
    if (top.length === 0) continue;
    lines.push("", `Top JavaScript self time, ${workload.name} (last round, ms per ${workload.unit}): ${top.map((entry) => `${entry.name} ${entry.selfMs.toFixed(4)}`).join("; ")}`);
  }
  return lines.join("\n");
}

/** "a free-plan invocation (10 ms CPU) carries about X opens, or Y MB, and with N streams of Z KB each ...", from one set of costs. */
function budgetSentence(by: string, tunnelMs: number, streamMs: number, downloadMsPerMb: number, uploadMsPerMb: number, streams: number): string {
  const afterTunnel = FREE_PLAN_CPU_MS - tunnelMs;
  const opens = Math.max(0, Math.floor(afterTunnel / streamMs));
  const downloadMb = Math.max(0, (afterTunnel - streamMs) / downloadMsPerMb);
  const uploadMb = Math.max(0, (afterTunnel - streamMs) / uploadMsPerMb);
  const leftForBytes = afterTunnel - streams * streamMs;
  const perStream =
    leftForBytes > 0
      ? `and with ${streams} streams (--streams-per-tunnel) each may carry about ${((leftForBytes / streams / downloadMsPerMb) * 1000).toFixed(0)} KB of download (or ${((leftForBytes / streams / uploadMsPerMb) * 1000).toFixed(0)} KB of upload) before the ${streams} use up the rest`
      : `and ${streams} streams alone already need ${(tunnelMs + streams * streamMs).toFixed(1)} ms`;
  return `${by}: a free-plan invocation (${FREE_PLAN_CPU_MS} ms CPU) carries about ${opens} opens, or ${downloadMb.toFixed(0)} MB of download (${uploadMb.toFixed(0)} MB of upload) on one stream, ${perStream}.`;
}
