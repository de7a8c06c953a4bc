// The isolate's window budget: module state, so one budget covers every tunnel this isolate
// serves (an isolate's 128 MB is shared by all its requests). Upload windows and download bytes
// in flight claim from it; a stream returns its claims when it ends (flow-control.ts).

import { WindowBudget } from "../protocol/flow-control.ts";

let budget: WindowBudget | undefined;
/** The largest window any stream of this isolate has grown to: the link benchmark's peak window. */
let peakWindowBytes = 0;

/** The isolate's budget, of `totalBytes` (EDGESOCKS_WINDOW_BUDGET_BYTES); a changed var starts a new one, and streams release into the one they claimed from. */
export function isolateBudget(totalBytes: number): WindowBudget {
  if (budget?.totalBytes !== totalBytes) budget = new WindowBudget(totalBytes);
  return budget;
}

export function noteWindow(windowBytes: number): void {
  peakWindowBytes = Math.max(peakWindowBytes, windowBytes);
}

/** Starts the peaks over (GET /dev/counters?reset=peaks), so a benchmark reads each run's own. */
export function resetPeaks(): void {
  peakWindowBytes = 0;
  budget?.resetPeak();
}

/** The budget's figures for GET /dev/counters. */
export function budgetCounters(): { budgetBytes: number; budgetInUseBytes: number; peakBudgetInUseBytes: number; peakWindowBytes: number } {
  return {
    budgetBytes: budget?.totalBytes ?? 0,
    budgetInUseBytes: budget?.inUseBytes ?? 0,
    peakBudgetInUseBytes: budget?.peakInUseBytes ?? 0,
    peakWindowBytes,
  };
}
