// How a stream gets its tunnel and sends its OPEN (docs/protocol.md §4, "At the agent"): as the
// first frame of a warm tunnel from the edge's pool, or in the Edgesocks-Open upgrade header of a
// new one, each with as many of the pending upload's bytes as it can carry. One call is one
// attempt; which edge it goes to, and whether a failed one is tried again, is open-attempts.ts's.

import type WebSocket from "ws";
import type { AgentConfig } from "../config/config.ts";
import { openEdgeSocket, whenRefused } from "./edge-socket.ts";
import type { TunnelPool } from "./tunnel-pool.ts";
import type { UploadSender } from "./upload-sender.ts";
import { MAX_EARLY_DATA_BYTES, MAX_HEADER_OPEN_BYTES, OPEN_HEADER, encodeHeaderOpen, encodeOpen, type Destination } from "../../worker/protocol/index.ts";

/**
 * Longest a zero-RTT cold open waits for the client's first bytes. A client that speaks first
 * sends them within a millisecond of its answer on the same machine; one that waits for the
 * server pays this once, where the wait would save an edge round trip for the others.
 */
const ZERO_RTT_COLD_WAIT_MS = 10;

/** Where one attempt goes. */
export type OpenRoute = {
  tunnelUrl: string;
  /** Where a warm tunnel comes from; undefined opens a new one (no pool, or this edge's warm tunnel already failed the stream). */
  pool: TunnelPool | undefined;
  /** How long a new tunnel's upgrade may take. */
  handshakeTimeoutMs: number;
  /** With --zero-rtt and nothing pending, a new tunnel may wait for the client's first bytes (the first attempt only). */
  mayWaitForFirstBytes: boolean;
};

export type StreamOpen = {
  config: AgentConfig;
  destination: Destination;
  /** The stream's upload: the OPEN's early data comes from it, and it sends on the tunnel after. */
  upload: UploadSender;
  /** Makes `edge` the stream's tunnel (`warm`: from the pool, its OPEN about to leave; else a new one, upgrading). */
  onTunnel: (edge: WebSocket, warm: boolean) => void;
  /** The edge answered a new tunnel's upgrade with an HTTP status instead of 101. */
  onRefused: (status: number, explanation: string) => void;
};

/**
 * Sends the OPEN on a warm tunnel from the route's pool, or on a new one whose upgrade carries it
 * (with --zero-rtt and nothing pending, once the client's first bytes are in or the wait is over).
 */
export function sendOpen(route: OpenRoute, open: StreamOpen): void {
  const { config, destination, upload } = open;
  const warm = route.pool?.take();
  if (warm) {
    open.onTunnel(warm, true);
    // The warm tunnel's OPEN leaves now, with every early byte it can carry.
    const earlyData = upload.takeOpenData(MAX_EARLY_DATA_BYTES);
    warm.send(encodeOpen(destination, config.windowBytes, earlyData));
  } else if (config.zeroRtt && upload.pendingBytes === 0 && route.mayWaitForFirstBytes) {
    // The client was answered a moment ago and its first bytes are on their way: waiting for
    // them lets the upgrade carry them, a round trip sooner than EARLY after the 101. A client
    // that waits for the server to speak first costs the wait. A stream that ends first ends
    // the wait with it (UploadSender.close), so no tunnel opens for it.
    upload.waitForFirstBytes(ZERO_RTT_COLD_WAIT_MS, () => openCold(route, open));
  } else {
    openCold(route, open);
  }
}

/** Opens a new tunnel whose upgrade request carries the OPEN: the edge dials before it answers 101. */
function openCold(route: OpenRoute, { config, destination, upload, onTunnel, onRefused }: StreamOpen): void {
  const roomBytes = MAX_HEADER_OPEN_BYTES - encodeOpen(destination, config.windowBytes).byteLength;
  const earlyData = upload.takeOpenData(roomBytes);
  const openFrame = encodeOpen(destination, config.windowBytes, earlyData);
  const edge = openEdgeSocket(config, { [OPEN_HEADER]: encodeHeaderOpen(openFrame) }, { tunnelUrl: route.tunnelUrl, handshakeTimeoutMs: route.handshakeTimeoutMs });
  onTunnel(edge, false);
  edge.on("open", () => upload.flush());
  whenRefused(edge, onRefused);
}
