// One tunnel WebSocket at the edge: runs the stream its upgrade named or waits for OPEN, and
// after the stream ends waits for the next OPEN on the same socket (protocol room for reuse; the
// v2 agent closes the socket after one stream).

import type { EdgeConfig } from "../config.ts";
import { EdgeStream, type StreamOutcome, type TunnelLink } from "./edge-stream.ts";
import { RoundTrip } from "../protocol/round-trip.ts";
import {
  CloseCode,
  FrameType,
  POOLED_OPEN_TIMEOUT_MS,
  ProtocolError,
  StreamStatus,
  closeReason,
  decodeFrame,
  encodePing,
  encodePong,
  speaksWindowGrowth,
  type Frame,
  type OpenFrame,
  type ProtocolVersion,
} from "../protocol/index.ts";

/** What the upgrade request said about the tunnel's first stream. */
export type TunnelStart =
  /** The upgrade carried the first OPEN: dial it at once. */
  | { kind: "open"; open: OpenFrame }
  /** A warm spare: its first OPEN may take up to POOLED_OPEN_TIMEOUT_MS instead of the open timeout. */
  | { kind: "pooled" }
  | { kind: "plain" };

/** Runs the tunnel protocol on an accepted server-side WebSocket. */
export class TunnelSession {
  readonly #socket: WebSocket;
  readonly #config: EdgeConfig;
  /** The version negotiated in the upgrade: what the agent can decode. */
  readonly #version: ProtocolVersion;
  readonly #waitUntil: (promise: Promise<unknown>) => void;
  #stream: EdgeStream | undefined;
  /**
   * After a stream ends, frames the agent sent before it learned so (a WINDOW crossing our END,
   * a RESET crossing our last frame) are still arriving: drop them until the next OPEN.
   */
  #discardingStaleFrames = false;
  #openTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** The tunnel's round trip, from our PINGs (v4): every stream it carries sizes its windows to it. */
  readonly #roundTrip = new RoundTrip();
  readonly #link: TunnelLink = {
    rttMs: () => this.#roundTrip.rttMs,
    pingIfDue: () => {
      const id = this.#roundTrip.pingDue(Date.now());
      if (id !== undefined) this.#sendFrame(encodePing(id));
    },
  };

  constructor(socket: WebSocket, config: EdgeConfig, version: ProtocolVersion, waitUntil: (promise: Promise<unknown>) => void) {
    this.#socket = socket;
    this.#config = config;
    this.#version = version;
    this.#waitUntil = waitUntil;
  }

  /** Starts listening, and dials the upgrade's OPEN if it carried one; the caller has already called accept(). */
  start(how: TunnelStart): void {
    this.#socket.addEventListener("message", (event) => this.#onMessage(event.data));
    this.#socket.addEventListener("close", (event) => this.#onSocketGone(`tunnel closed by agent (${event.code})`));
    this.#socket.addEventListener("error", () => this.#onSocketGone("tunnel WebSocket failed"));
    if (how.kind === "open") this.#dispatch(how.open);
    else this.#armOpenTimer(how.kind === "pooled" ? POOLED_OPEN_TIMEOUT_MS : this.#config.openTimeoutMs);
    // A warm spare waiting for its OPEN (v4) gets its round trip while nothing queues in front of the
    // PING: a sample taken under a stream's DATA is that much too long, and windows sized to it
    // would only fill the path's queue.
    if (how.kind === "pooled" && speaksWindowGrowth(this.#version)) this.#link.pingIfDue();
  }

  #onMessage(data: string | ArrayBuffer): void {
    if (this.#closed) return;
    let frame: Frame;
    try {
      if (typeof data === "string") throw new ProtocolError(CloseCode.MalformedFrame, "text messages are not part of the protocol");
      frame = decodeFrame(new Uint8Array(data), this.#version);
      this.#dispatch(frame);
    } catch (error) {
      if (error instanceof ProtocolError) this.#close(error.closeCode, error.message);
      else this.#close(CloseCode.InternalError, "internal error");
    }
  }

  #dispatch(frame: Frame): void {
    const stream = this.#stream;
    // Tunnel-wide (v4; decodeFrame refuses them on older tunnels): any time, with or without a stream.
    if (frame.type === FrameType.Ping) {
      this.#sendFrame(encodePong(frame.id));
      return;
    }
    if (frame.type === FrameType.Pong) {
      this.#roundTrip.pong(frame.id, Date.now());
      return;
    }
    if (frame.type === FrameType.Open) {
      // A stream whose both directions have ended is only flushing FIN to its destination; the
      // agent may already open the next one. It finishes on its own (kept alive by waitUntil).
      if (stream && !stream.makesRoomForNext) throw new ProtocolError(CloseCode.UnexpectedFrame, "OPEN while a stream is active");
      // Only the current stream speaks: a superseded draining stream whose final flush fails must
      // not send a RESET the agent would read as a reset of the new stream.
      const next: EdgeStream = new EdgeStream(
        frame,
        (bytes) => this.#stream === next && this.#sendFrame(bytes),
        this.#config,
        this.#version,
        speaksWindowGrowth(this.#version) ? this.#link : undefined,
      );
      this.#startStream(next);
      return;
    }
    if (!stream) {
      const isStale =
        frame.type === FrameType.Data ||
        frame.type === FrameType.Early ||
        frame.type === FrameType.Window ||
        frame.type === FrameType.Grow ||
        frame.type === FrameType.End ||
        frame.type === FrameType.Reset;
      if (this.#discardingStaleFrames && isStale) return;
      throw new ProtocolError(CloseCode.UnexpectedFrame, `frame type ${frame.type} before OPEN`);
    }
    switch (frame.type) {
      case FrameType.Data:
        stream.onData(frame.payload);
        return;
      case FrameType.Early:
        stream.onEarly(frame.payload);
        return;
      case FrameType.Window:
        stream.onWindow(frame.bytes);
        return;
      case FrameType.Grow:
        stream.onGrow(frame.windowBytes);
        return;
      case FrameType.End:
        stream.onEnd();
        return;
      case FrameType.Reset:
        stream.onReset(frame.status, frame.reason);
        return;
      case FrameType.Opened:
        throw new ProtocolError(CloseCode.UnexpectedFrame, "OPENED is sent by the edge, not to it");
    }
  }

  #startStream(stream: EdgeStream): void {
    if (this.#openTimer !== undefined) clearTimeout(this.#openTimer);
    this.#stream = stream;
    this.#discardingStaleFrames = false;
    const done = stream.finished.then((outcome) => this.#streamFinished(stream, outcome));
    this.#waitUntil(done);
    // A throw inside the dial would otherwise leave the agent waiting for an OPENED until its own
    // timeout: close with 4500 as for any other bug, which costs this tunnel only.
    stream.start().catch(() => this.#close(CloseCode.InternalError, "internal error"));
  }

  #streamFinished(stream: EdgeStream, outcome: StreamOutcome): void {
    logOutcome(outcome);
    if (this.#stream !== stream) return; // a drained stream finishing after the next one took over
    this.#stream = undefined;
    this.#discardingStaleFrames = true;
    if (!this.#closed) this.#armOpenTimer(this.#config.openTimeoutMs);
  }

  #armOpenTimer(timeoutMs: number): void {
    if (this.#openTimer !== undefined) clearTimeout(this.#openTimer);
    this.#openTimer = setTimeout(() => this.#close(CloseCode.Timeout, `no OPEN within ${timeoutMs} ms`), timeoutMs);
  }

  #sendFrame(frame: Uint8Array): void {
    if (this.#closed) return;
    try {
      this.#socket.send(frame);
    } catch {
      this.#onSocketGone("tunnel WebSocket refused a send");
    }
  }

  #close(code: CloseCode, reason: string): void {
    if (this.#closed) return;
    this.#stream?.abort(reason);
    this.#closed = true;
    if (this.#openTimer !== undefined) clearTimeout(this.#openTimer);
    try {
      this.#socket.close(code, closeReason(reason));
    } catch {
      // already closing: nothing left to tell the agent
    }
  }

  #onSocketGone(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#openTimer !== undefined) clearTimeout(this.#openTimer);
    this.#stream?.onTunnelClosed(reason);
    try {
      this.#socket.close(CloseCode.Normal, "");
    } catch {
      // the close handshake already ran
    }
  }
}

function logOutcome(outcome: StreamOutcome): void {
  const result = outcome.status === StreamStatus.Ok ? "ok" : `status=${outcome.status} ${outcome.reason}`;
  console.log(`stream ${outcome.destination} ${outcome.route} up=${outcome.uploadedBytes}B down=${outcome.downloadedBytes}B ${result}`);
}
