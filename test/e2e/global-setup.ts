// One real edge (wrangler dev running the Worker in workerd) for every end-to-end test file.

import type { TestProject } from "vitest/node";
import { startEdge } from "./processes.ts";

declare module "vitest" {
  export interface ProvidedContext {
    edgeUrl: string;
    edgeToken: string;
    edgeWranglerPid: number;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // Dev counters on: the memory tests read the isolate's held bytes (worker/dev-counters.ts).
  const edge = await startEdge({ EDGESOCKS_DEV_COUNTERS: "1" });
  project.provide("edgeUrl", edge.url);
  project.provide("edgeToken", edge.token);
  project.provide("edgeWranglerPid", edge.wranglerPid);
  return () => edge.stop();
}
