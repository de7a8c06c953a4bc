// The agent's window budget: one per running agent (its config), shared by every stream through
// the edge, for what auto-tuning grows windows by beyond the windows streams start with
// (worker/protocol/flow-control.ts). The edge keeps its own, per isolate.

import { WindowBudget } from "../../worker/protocol/flow-control.ts";
import type { AgentConfig } from "../config/config.ts";

const budgets = new WeakMap<AgentConfig, WindowBudget>();
/** The largest window any stream has grown to, for SIGUSR2's line and the link benchmark. */
let peakWindowBytes = 0;

export function agentBudget(config: AgentConfig): WindowBudget {
  let budget = budgets.get(config);
  if (!budget) {
    budget = new WindowBudget(config.windowBudgetBytes);
    budgets.set(config, budget);
  }
  return budget;
}

export function noteWindow(windowBytes: number): void {
  peakWindowBytes = Math.max(peakWindowBytes, windowBytes);
}

export function peakWindow(): number {
  return peakWindowBytes;
}
