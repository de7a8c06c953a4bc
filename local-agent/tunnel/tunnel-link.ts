// What the agent knows of each tunnel beyond its WebSocket: the protocol version the edge chose,
// and the tunnel's round trip (protocol v4's PING and PONG), which every stream it carries sizes
// its windows to. Kept beside the socket, not in a stream, because a tunnel outlives its streams.

import WebSocket from "ws";
import { RoundTrip } from "../../worker/protocol/round-trip.ts";
import { encodePing, speaksWindowGrowth, versionOfSubprotocol, type ProtocolVersion } from "../../worker/protocol/index.ts";

const roundTrips = new WeakMap<WebSocket, RoundTrip>();

/** The version the edge chose in its 101 (the oldest we speak until then: no frame of a newer one is sent early). */
export function tunnelVersion(edge: WebSocket): ProtocolVersion {
  return versionOfSubprotocol(edge.protocol) ?? 2;
}

export function roundTripOf(edge: WebSocket): RoundTrip {
  let roundTrip = roundTrips.get(edge);
  if (!roundTrip) {
    roundTrip = new RoundTrip();
    roundTrips.set(edge, roundTrip);
  }
  return roundTrip;
}

/** Sends a PING on a v4 tunnel when the last one is old enough. */
export function pingIfDue(edge: WebSocket): void {
  if (edge.readyState !== WebSocket.OPEN || !speaksWindowGrowth(tunnelVersion(edge))) return;
  const id = roundTripOf(edge).pingDue(performance.now());
  if (id !== undefined) edge.send(encodePing(id));
}
