// GET /dev/counters, for the local edge's tests and benchmarks only (EDGESOCKS_DEV_COUNTERS=1):
// what the isolate holds for its streams by flow control's count (held-bytes.ts), so a memory
// test can check the one-window bound itself rather than only the process's RSS. Off, the path
// is not found, as on any deployed Worker; on, it still needs the token.

import type { EdgeEnv } from "./config.ts";
import { isolateHold } from "./tunnel/held-bytes.ts";
import { configOrRefusal, tokenRefusal } from "./refusal.ts";
import { budgetCounters, resetPeaks } from "./tunnel/window-budget.ts";

export const DEV_COUNTERS_PATH = "/dev/counters";

export async function handleDevCounters(request: Request, env: EdgeEnv): Promise<Response | undefined> {
  if (env.EDGESOCKS_DEV_COUNTERS !== "1") return undefined;
  const config = configOrRefusal(env, "answers");
  if (config instanceof Response) return config;
  const unauthorized = await tokenRefusal(request, config);
  if (unauthorized) return unauthorized;
  const counters = { ...isolateHold(), ...budgetCounters() };
  // After the read: the answer still carries the peaks that are being started over.
  if (new URL(request.url).searchParams.get("reset") === "peaks") resetPeaks();
  return Response.json(counters, { headers: { "Cache-Control": "no-store" } });
}
