// Sends each stream where the routing rules say: through the edge, directly, or nowhere.

import { AgentStream } from "./agent-stream.ts";
import type { AgentConfig } from "./config.ts";
import { startDirectStream } from "./direct-stream.ts";
import type { Logger } from "./log.ts";
import { Route, matchRule } from "./routing.ts";
import type { StreamRequest } from "./stream-request.ts";
import { StreamStatus, formatDestination } from "../worker/protocol.ts";

/** Opens `request.destination` on the route its first matching rule names (edge when none does). */
export function openStream(request: StreamRequest, config: AgentConfig, log: Logger): void {
  const rule = matchRule(request.destination, config.rules);
  const route = rule?.route ?? Route.Edge;
  if (route === Route.Block) {
    const reason = `blocked by rule ${rule?.text ?? ""}`;
    const reply = request.answer.failed(StreamStatus.NotAllowed, reason);
    if (reply) request.client.end(reply);
    else request.client.end();
    log.info(`${request.clientLabel} -> ${formatDestination(request.destination)} block: ${reason}`);
    request.onClosed();
    return;
  }
  if (route === Route.Direct) {
    startDirectStream(request, config, log);
    return;
  }
  new AgentStream(request, config, log).start();
}
