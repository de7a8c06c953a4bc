// One stream through the edge, opened as the agent opens a cold one (stream-open.ts): a new
// tunnel from the agent's openEdgeSocket whose upgrade carries the OPEN (Edgesocks-Open), then
// the edge's OPENED, its first frame. Nothing is sent to the destination: the OPENED says
// whether the edge reached it. The tunnel is closed with 1000 right after, as the agent closes
// one after its last stream.

import type WebSocket from "ws";
import type { AgentConfig } from "../config/config.ts";
import { openEdgeSocket, whenRefused } from "../tunnel/edge-socket.ts";
import { tunnelVersion } from "../tunnel/tunnel-link.ts";
import { CloseCode, FrameType, OPEN_HEADER, decodeFrame, encodeHeaderOpen, encodeOpen, encodePong, type Destination, type ProtocolVersion, type StreamStatus } from "../../worker/protocol/index.ts";

/** How a test stream ended: the edge's OPENED, or why none came. */
export type StreamOutcome =
  | { kind: "opened"; status: StreamStatus; reason: string; version: ProtocolVersion; elapsedMs: number }
  /** The upgrade was answered with an HTTP status instead of 101 (a wrong token: 401). */
  | { kind: "refused"; httpStatus: number; explanation: string }
  /** The tunnel closed, or failed, before OPENED. */
  | { kind: "broken"; cause: string }
  | { kind: "timeout"; timeoutMs: number };

/** How long a closed tunnel's close handshake may take before the socket is dropped. */
const CLOSE_GRACE_MS = 1_000;

/**
 * Opens a stream to `destination` through the edge at `tunnelUrl` and resolves with the edge's
 * OPENED or why none came; never rejects, and leaves no socket behind (closed with 1000, or
 * terminated). The upgrade and the OPENED each have the agent's --open-timeout-ms.
 */
export function openTestStream(config: AgentConfig, tunnelUrl: string, destination: Destination): Promise<StreamOutcome> {
  const timeoutMs = config.openTimeoutMs;
  const openFrame = encodeOpen(destination, config.windowBytes);
  const startedMs = performance.now();
  return new Promise((resolve) => {
    let socket: WebSocket;
    let settled = false;
    const finish = (outcome: StreamOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
      if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) {
        if (socket.readyState === socket.OPEN) socket.close(CloseCode.Normal, "");
        else socket.terminate();
        setTimeout(() => socket.terminate(), CLOSE_GRACE_MS).unref();
      }
    };
    const timer = setTimeout(() => finish({ kind: "timeout", timeoutMs }), timeoutMs);
    try {
      socket = openEdgeSocket(config, { [OPEN_HEADER]: encodeHeaderOpen(openFrame) }, { tunnelUrl, handshakeTimeoutMs: timeoutMs });
    } catch (error) {
      clearTimeout(timer);
      resolve({ kind: "broken", cause: error instanceof Error ? error.message : String(error) });
      return;
    }
    whenRefused(socket, (httpStatus, explanation) => finish({ kind: "refused", httpStatus, explanation }));
    socket.on("message", (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return finish({ kind: "broken", cause: "the edge sent a text message" });
      let frame;
      try {
        frame = decodeFrame(data, tunnelVersion(socket));
      } catch (error) {
        return finish({ kind: "broken", cause: `the edge sent a frame that does not decode: ${error instanceof Error ? error.message : String(error)}` });
      }
      // A v4 edge PINGs a tunnel for its round trip; the agent answers, and so does this.
      if (frame.type === FrameType.Ping) return socket.send(encodePong(frame.id));
      if (frame.type !== FrameType.Opened) return finish({ kind: "broken", cause: `the edge's first frame is type ${frame.type}, not OPENED` });
      finish({ kind: "opened", status: frame.status, reason: frame.reason, version: tunnelVersion(socket), elapsedMs: Math.round(performance.now() - startedMs) });
    });
    socket.on("error", (error) => finish({ kind: "broken", cause: error.message }));
    socket.on("close", (code, reason) => finish({ kind: "broken", cause: `the tunnel closed (${code}${reason.byteLength > 0 ? ` ${reason.toString()}` : ""}) before OPENED` }));
  });
}
