// Resident memory of a process over a long run, and its trend: a least-squares line through the
// samples of the run's second half. The first half is left out as warm-up: V8's and workerd's
// heaps, the agent's warm pool and the kernel's socket buffers grow to their working size there,
// and a line through that climb would report it as a leak.

import { totalRssBytes } from "./proc-stats.ts";

const MIB = 1024 * 1024;
const SECONDS_PER_HOUR = 3600;
/** Fewer points than this make no line worth quoting. */
const MIN_FIT_SAMPLES = 3;

export type RssSample = { seconds: number; bytes: number };

/** The samples of one process, taken by `sample(seconds)`. */
export class RssSeries {
  readonly samples: RssSample[] = [];
  readonly name: string;
  readonly pid: number;
  constructor(name: string, pid: number) {
    this.name = name;
    this.pid = pid;
  }
  /** Records the process's RSS now, at `seconds` into the run. */
  sample(seconds: number): void {
    this.samples.push({ seconds, bytes: totalRssBytes([this.pid]) });
  }
}

export type RssSummary = {
  name: string;
  pid: number;
  startMiB: number;
  peakMiB: number;
  endMiB: number;
  /** Slope of the fit, MiB per hour; undefined with fewer than MIN_FIT_SAMPLES samples in the second half. */
  growthMiBPerHour: number | undefined;
  /** Samples the fit used, and the run time from which they were taken. */
  fitSamples: number;
  fitFromSeconds: number;
};

/** Start (the first sample), peak, end (the last) and the second half's growth per hour. */
export function summarizeRss(series: RssSeries, runSeconds: number): RssSummary {
  const { samples } = series;
  const fitFromSeconds = runSeconds / 2;
  const fitted = samples.filter((sample) => sample.seconds >= fitFromSeconds);
  const slope = fitted.length >= MIN_FIT_SAMPLES ? leastSquaresSlope(fitted.map((sample) => [sample.seconds, sample.bytes])) : undefined;
  return {
    name: series.name,
    pid: series.pid,
    startMiB: (samples[0]?.bytes ?? Number.NaN) / MIB,
    peakMiB: Math.max(...samples.map((sample) => sample.bytes)) / MIB,
    endMiB: (samples[samples.length - 1]?.bytes ?? Number.NaN) / MIB,
    growthMiBPerHour: slope === undefined ? undefined : (slope * SECONDS_PER_HOUR) / MIB,
    fitSamples: fitted.length,
    fitFromSeconds,
  };
}

/** The slope of the least-squares line through `points` ([x, y] pairs); undefined if every x is the same. */
export function leastSquaresSlope(points: ReadonlyArray<readonly [number, number]>): number | undefined {
  const count = points.length;
  if (count < 2) return undefined;
  const meanX = points.reduce((sum, [x]) => sum + x, 0) / count;
  const meanY = points.reduce((sum, [, y]) => sum + y, 0) / count;
  let covariance = 0;
  let varianceX = 0;
  for (const [x, y] of points) {
    covariance += (x - meanX) * (y - meanY);
    varianceX += (x - meanX) ** 2;
  }
  return varianceX === 0 ? undefined : covariance / varianceX;
}
