// What a V8 CPU profile of the Worker says its JavaScript cost: pure, a profile in, times out.
//
// V8 samples the isolate's thread only while that thread holds the isolate's lock (workerd takes
// it per event, and V8 drops a sample that finds the lock free), so the gaps between samples are
// mostly not CPU at all, and the profile's timeDeltas cannot be summed as they are: in a run of
// short exchanges a tenth of them are over 2 ms, the waits for the next frame. Each sample
// stands for one sampling period instead, the period the sampler achieved: the median of the
// deltas that lie within 1.5 times the lower quartile (on Linux the sampler's sleeps overshoot by
// the timer slack, 50 µs, so 100 µs asked gives ~150 µs; a delta of twice that is a dropped
// sample). The samples fall in four kinds: JavaScript (any node with a script or a function
// name, the Workers APIs it calls included), "(garbage collector)", "(program)" (the lock held
// with no JavaScript on the stack: workerd's own C++ between callbacks) and "(idle)".

/** A profile as Profiler.stop returns it (Chrome DevTools Protocol, Profiler.Profile). */
export type CpuProfile = {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number }; children?: number[] }[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
};

export type ProfileSummary = {
  /** Samples in JavaScript, times the sampling period. */
  javascriptMs: number;
  garbageCollectorMs: number;
  /** The isolate's lock held, no JavaScript on the stack. */
  programMs: number;
  idleMs: number;
  sampleCount: number;
  /** The sampling period achieved (see the top of this file). */
  samplingPeriodUs: number;
  /** JavaScript functions by self time, most first: "name (file:line)", or a native one named with its caller, and milliseconds. */
  topFunctions: { name: string; selfMs: number }[];
};

const SPECIAL = { idle: "(idle)", program: "(program)", garbageCollector: "(garbage collector)", root: "(root)" } as const;

/** Times per kind of sample in `profile`, and the JavaScript functions that took the most. */
export function summarizeProfile(profile: CpuProfile, topCount = 8): ProfileSummary {
  const samples = profile.samples ?? [];
  const samplingPeriodUs = achievedPeriodUs(profile.timeDeltas ?? []);
  const nodeById = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentById = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentById.set(child, node.id);
  const countByKind = { javascript: 0, garbageCollector: 0, program: 0, idle: 0 };
  const countByFunction = new Map<string, number>();
  for (const id of samples) {
    const frame = nodeById.get(id)?.callFrame;
    const name = frame?.functionName ?? "";
    if (name === SPECIAL.idle) countByKind.idle++;
    else if (name === SPECIAL.program || name === SPECIAL.root || !frame) countByKind.program++;
    else if (name === SPECIAL.garbageCollector) countByKind.garbageCollector++;
    else {
      countByKind.javascript++;
      const label = functionLabel(id, nodeById, parentById);
      countByFunction.set(label, (countByFunction.get(label) ?? 0) + 1);
    }
  }
  const toMs = (count: number) => (count * samplingPeriodUs) / 1000;
  const topFunctions = [...countByFunction]
    .sort((a, b) => b[1] - a[1])
    .slice(0, topCount)
    .map(([name, count]) => ({ name, selfMs: toMs(count) }));
  return {
    javascriptMs: toMs(countByKind.javascript),
    garbageCollectorMs: toMs(countByKind.garbageCollector),
    programMs: toMs(countByKind.program),
    idleMs: toMs(countByKind.idle),
    sampleCount: samples.length,
    samplingPeriodUs,
    topFunctions,
  };
}

type ProfileNode = CpuProfile["nodes"][number];

/** "name (file:line)"; a native function (no script) is named with its caller, which says what it was: "(native) in logOutcome (index.js:4283)". */
function functionLabel(id: number, nodeById: Map<number, ProfileNode>, parentById: Map<number, number>): string {
  const frame = nodeById.get(id)?.callFrame;
  if (!frame) return "(unknown)";
  if (frame.url) return `${frame.functionName || "(anonymous)"} (${frame.url.split("/").pop() ?? ""}:${frame.lineNumber + 1})`;
  const parentId = parentById.get(id);
  const parent = parentId === undefined ? undefined : nodeById.get(parentId)?.callFrame;
  const caller = parent && parent.functionName !== SPECIAL.root && parentId !== undefined ? ` in ${functionLabel(parentId, nodeById, parentById)}` : "";
  return `${frame.functionName || "(native)"}${caller}`;
}

/** The sampling period the sampler achieved, from the gaps between samples (see the top of this file). */
export function achievedPeriodUs(timeDeltas: readonly number[]): number {
  // The first delta runs from Profiler.start, not from a sample.
  const deltas = timeDeltas.slice(1).filter((delta) => delta > 0);
  const lowerQuartile = quantile(deltas, 0.25);
  return quantile(
    deltas.filter((delta) => delta <= 1.5 * lowerQuartile),
    0.5,
  );
}

function quantile(list: number[], fraction: number): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(fraction * (sorted.length - 1))] ?? Number.NaN;
}
