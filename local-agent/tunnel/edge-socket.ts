// Opens a WebSocket to the edge's tunnel endpoint and keeps it honest with pings.

import WebSocket from "ws";
import type { AgentConfig } from "../config/config.ts";
import { MAX_FRAME_BYTES, SUBPROTOCOLS } from "../../worker/protocol/index.ts";
import { maskGeneratorFor } from "./frame-mask.ts";
import { countWorkerRequest } from "../status/worker-requests.ts";

/** Which edge a tunnel goes to, and how long its upgrade may take: the first edge and --open-timeout-ms unless given. */
export type EdgeSocketTarget = { tunnelUrl?: string; handshakeTimeoutMs?: number };

/**
 * A WebSocket to the edge's tunnel endpoint, authenticated with the bearer token, offering every
 * version this build speaks (SUBPROTOCOLS: an edge of the previous version picks its own), with per-message deflate off (the bytes are mostly TLS: incompressible, and
 * deflate would cost CPU on both sides) and frames larger than the protocol allows refused.
 *
 * Upload frames to a wss:// or loopback edge carry an all-zero masking key, which both ends skip
 * (frame-mask.ts); to a plain ws:// edge elsewhere a random key (RFC 6455 section 5.3). `ws` masks with the optional
 * dependency `bufferutil` when it loads (its prebuilt binary needs no install script); its
 * JavaScript fallback, a byte-at-a-time loop, was ~40% of the agent's upload CPU (measured).
 */
export function openEdgeSocket(config: AgentConfig, upgradeHeaders: Record<string, string> = {}, target: EdgeSocketTarget = {}): WebSocket {
  const tunnelUrl = target.tunnelUrl ?? config.tunnelUrl;
  const socket = new WebSocket(tunnelUrl, [...SUBPROTOCOLS], {
    headers: { ...upgradeHeaders, Authorization: `Bearer ${config.token}` },
    perMessageDeflate: false,
    maxPayload: MAX_FRAME_BYTES,
    handshakeTimeout: target.handshakeTimeoutMs ?? config.openTimeoutMs,
    followRedirects: false,
    generateMask: maskGeneratorFor(tunnelUrl),
  });
  socket.binaryType = "nodebuffer";
  socket.once("upgrade", () => countWorkerRequest(tunnelUrl));
  keepAlive(socket, config.pingIntervalMs);
  return socket;
}

/** Longest HTTP error body from the edge kept for a log line. */
const MAX_REFUSAL_BODY_BYTES = 300;

/**
 * Calls `onRefused` once if the edge answers the upgrade with an HTTP status instead of 101,
 * with the status and the first line of its explanation; the socket then closes.
 */
export function whenRefused(socket: WebSocket, onRefused: (status: number, explanation: string) => void): void {
  socket.on("unexpected-response", (request, response) => {
    countWorkerRequest(socket.url);
    const status = response.statusCode ?? 0;
    const chunks: Buffer[] = [];
    let keptBytes = 0;
    response.on("data", (chunk: Buffer) => {
      if (keptBytes < MAX_REFUSAL_BODY_BYTES) chunks.push(chunk);
      keptBytes += chunk.byteLength;
    });
    response.on("end", () => {
      const body = Buffer.concat(chunks).subarray(0, MAX_REFUSAL_BODY_BYTES).toString("utf8").trim().split("\n")[0] ?? "";
      onRefused(status, body);
      request.destroy();
    });
    response.on("error", () => request.destroy());
  });
}

/**
 * Pings every interval; a tunnel that has not answered the previous ping by the next one is
 * terminated, which its owner sees as a close and turns into a client reset. A dead edge is
 * noticed within two intervals rather than at the next TCP timeout, minutes later.
 */
function keepAlive(socket: WebSocket, intervalMs: number): void {
  let answered = true;
  socket.on("pong", () => {
    answered = true;
  });
  const timer = setInterval(() => {
    if (socket.readyState !== WebSocket.OPEN) return;
    if (!answered) {
      silentEdges.add(socket);
      socket.terminate();
      return;
    }
    answered = false;
    socket.ping();
  }, intervalMs);
  timer.unref();
  socket.on("close", () => clearInterval(timer));
}

const silentEdges = new WeakSet<WebSocket>();

/** True when the socket was terminated because the edge stopped answering pings. */
export function missedPong(socket: WebSocket): boolean {
  return silentEdges.has(socket);
}
