// Sends each stream where the routing rules say: through the edge, directly, or nowhere.

import { AgentStream } from "./agent-stream.ts";
import { verdictsFor } from "./cloudflare-verdicts.ts";
import type { AgentConfig } from "../config/config.ts";
import { startDirectStream } from "./direct-stream.ts";
import { EdgeSet } from "./edge-set.ts";
import type { Logger } from "../log.ts";
import { Route, matchRule } from "../config/routing.ts";
import { meterConnection } from "../status/connection-meter.ts";
import type { StreamRequest } from "./stream-request.ts";
import { StreamStatus, encodeAddress, formatDestination, type Destination } from "../../worker/protocol/index.ts";

/**
 * The edges (each with its warm pool) of each running agent, found by its config: every front
 * door already carries the config to openStream, so they need no parameter of their own through
 * each of them.
 */
const edgeSets = new WeakMap<AgentConfig, EdgeSet>();

/** Starts the edges of the agent running with `config`: their pools fill, and its edge streams open on them. */
export function startEdgeSet(config: AgentConfig, log: Logger): EdgeSet {
  const edges = new EdgeSet(config, log);
  edgeSets.set(config, edges);
  edges.start();
  return edges;
}

/** The edges of the agent running with `config` (undefined before startEdgeSet): for DNS over the edge and the status page. */
export function edgeSetOf(config: AgentConfig): EdgeSet | undefined {
  return edgeSets.get(config);
}

/** Opens `request.destination` on the route its first matching rule names (edge when none does). */
export function openStream(request: StreamRequest, config: AgentConfig, log: Logger): void {
  // Checked before any route starts: the edge route would only find out inside a WebSocket
  // callback, where a throw would take the whole agent down with it.
  const unusable = whyUnusable(request.destination);
  if (unusable !== undefined) {
    refuse(request, StreamStatus.GeneralFailure, "refused", unusable, log);
    return;
  }
  const rule = matchRule(request.destination, config.rules);
  const route = rule?.route ?? Route.Edge;
  request = meterConnection(request, config, route);
  if (route === Route.Block) {
    refuse(request, StreamStatus.NotAllowed, "block", `blocked by rule ${rule?.text ?? ""}`, log);
    return;
  }
  if (route === Route.Direct) {
    startDirectStream(request, config, log);
    return;
  }
  // A destination the edge said is on Cloudflare's network goes straight to its fallback: no
  // Worker request for an open that would fail.
  if (config.onCloudflare === "direct" && verdictsFor(config).isOnCloudflare(request.destination.host)) {
    startDirectStream(request, config, log, { why: "on Cloudflare's network, remembered: --on-cloudflare direct", answered: false, clientEnded: false });
    return;
  }
  new AgentStream(request, config, log).start(edgeSets.get(config));
}

/** Answers the client with `status` in its protocol, closes it, and ends the stream. */
function refuse(request: StreamRequest, status: StreamStatus, outcome: string, reason: string, log: Logger): void {
  const reply = request.answer.failed(status, reason);
  if (reply) request.client.end(reply);
  else request.client.end();
  log.info(`${request.clientLabel} -> ${formatDestination(request.destination)} ${outcome}: ${reason}`);
  request.onClosed();
}

/** Why no route can take `destination` (a port or name the edge's OPEN frame cannot carry), or undefined. */
function whyUnusable(destination: Destination): string | undefined {
  try {
    encodeAddress(destination);
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}
