// One proxied connection in the agent, from the SOCKS request on: opens the stream on a warm or
// a new tunnel, answers the client, relays both directions under credit-based flow control, and
// ends exactly once.

import WebSocket from "ws";
import type { AgentConfig } from "./config.ts";
import { missedPong, openEdgeSocket, whenRefused } from "./edge-socket.ts";
import { formatBytes, type Logger } from "./log.ts";
import { STATUS_NAMES, type ClientConnection, type OpenAnswer, type StreamRequest } from "./stream-request.ts";
import type { TunnelPool } from "./tunnel-pool.ts";
import { ReceiveWindow, SendCredit } from "../worker/flow-control.ts";
import {
  CloseCode,
  FrameType,
  MAX_DATA_BYTES,
  MAX_EARLY_DATA_BYTES,
  MAX_HEADER_OPEN_BYTES,
  OPEN_HEADER,
  ProtocolError,
  StreamStatus,
  closeReason,
  decodeFrame,
  encodeData,
  encodeEarly,
  encodeEnd,
  encodeHeaderOpen,
  encodeOpen,
  encodeReset,
  encodeWindow,
  formatDestination,
  type Destination,
  type Frame,
} from "../worker/protocol.ts";

type Phase = "opening" | "relaying" | "closed";

export class AgentStream {
  readonly #client: ClientConnection;
  readonly #destination: Destination;
  readonly #answer: OpenAnswer;
  readonly #config: AgentConfig;
  readonly #log: Logger;
  readonly #onClosed: () => void;
  readonly #label: string;
  readonly #startedAtMs = Date.now();
  readonly #receive: ReceiveWindow;
  #phase: Phase = "opening";
  #edge: WebSocket | undefined;
  #credit: SendCredit | undefined;
  #openTimer: ReturnType<typeof setTimeout> | undefined;
  /** Client bytes waiting for credit; never more than one socket read beyond the window. */
  #pendingUpload: Buffer[] = [];
  #clientEnded = false;
  #sentEnd = false;
  #receivedEnd = false;
  #clientWritesFinished = false;
  #uploadedBytes = 0;
  #downloadedBytes = 0;
  /** Why the edge WebSocket failed, kept for the close that follows. */
  #edgeError: string | undefined;
  /** The client has its success answer: at OPENED, or at once with zeroRtt. */
  #answered = false;
  /** OPEN has left (in the upgrade or as the tunnel's first frame): early DATA may follow it. */
  #isOpenSent = false;
  /** What the edge still takes before OPENED: MAX_EARLY_DATA_BYTES, less what went already. */
  #earlyBudgetBytes = MAX_EARLY_DATA_BYTES;

  constructor(request: StreamRequest, config: AgentConfig, log: Logger) {
    this.#client = request.client;
    this.#destination = request.destination;
    this.#answer = request.answer;
    this.#config = config;
    this.#log = log;
    this.#onClosed = request.onClosed;
    this.#receive = new ReceiveWindow(config.windowBytes);
    this.#label = `${request.clientLabel} -> ${formatDestination(request.destination)} via edge`;
    if (request.earlyBytes.byteLength > 0) this.#pendingUpload.push(request.earlyBytes);
  }

  /**
   * Sends OPEN on a warm tunnel from `pool`, or on a new one whose upgrade carries it; everything
   * after is driven by events. With zeroRtt the client is answered first, before the edge dials.
   */
  start(pool?: TunnelPool): void {
    const client = this.#client;
    client.pause(); // no upload until the edge grants a window (or, with zeroRtt, an early budget)
    client.on("data", (chunk: Buffer) => {
      this.#pendingUpload.push(chunk);
      this.#flushUpload();
    });
    client.on("end", () => {
      this.#clientEnded = true;
      this.#flushUpload();
    });
    client.on("finish", () => {
      this.#clientWritesFinished = true;
      this.#finishIfDone();
    });
    client.on("error", (error: NodeJS.ErrnoException) => this.#log.debug(`${this.#label} client socket: ${error.code ?? error.message}`));
    client.on("close", () => this.#onClientClosed());
    if (this.#config.zeroRtt) this.#answerSuccess();

    const warm = pool?.take();
    const edge = warm ?? this.#openColdTunnel();
    this.#edge = edge;
    edge.on("message", (data: Buffer, isBinary: boolean) => this.#onEdgeMessage(data, isBinary));
    edge.on("error", (error) => {
      this.#edgeError = error.message;
    });
    edge.on("close", (code, reason) => this.#onEdgeClosed(code, reason.toString("utf8")));
    if (warm) {
      // The warm tunnel's OPEN leaves now, with every early byte it can carry.
      const earlyData = this.#takePending(MAX_EARLY_DATA_BYTES);
      edge.send(encodeOpen(this.#destination, this.#config.windowBytes, earlyData));
      this.#openSent(earlyData.byteLength);
    } else {
      edge.on("open", () => this.#flushUpload());
      whenRefused(edge, (status, explanation) => this.#failOpen(StreamStatus.GeneralFailure, `edge refused the tunnel: HTTP ${status} ${explanation}`, "warn"));
    }
    this.#openTimer = setTimeout(
      () => this.#failOpen(StreamStatus.Timeout, `edge did not answer the open within ${this.#config.openTimeoutMs} ms`, "info"),
      this.#config.openTimeoutMs,
    );
    this.#flushUpload();
  }

  /** A new tunnel whose upgrade request carries the OPEN: the edge dials before it answers 101. */
  #openColdTunnel(): WebSocket {
    const roomBytes = MAX_HEADER_OPEN_BYTES - encodeOpen(this.#destination, this.#config.windowBytes).byteLength;
    const earlyData = this.#takePending(roomBytes);
    const openFrame = encodeOpen(this.#destination, this.#config.windowBytes, earlyData);
    this.#openSent(earlyData.byteLength);
    return openEdgeSocket(this.#config, { [OPEN_HEADER]: encodeHeaderOpen(openFrame) });
  }

  #openSent(earlyBytes: number): void {
    this.#isOpenSent = true;
    this.#earlyBudgetBytes -= earlyBytes;
    this.#uploadedBytes += earlyBytes;
  }

  /** Up to maxBytes from the front of the pending upload, as one buffer. */
  #takePending(maxBytes: number): Buffer {
    const pieces: Buffer[] = [];
    let takenBytes = 0;
    while (this.#pendingUpload.length > 0 && takenBytes < maxBytes) {
      const chunk = this.#pendingUpload[0] as Buffer;
      const pieceBytes = Math.min(chunk.byteLength, maxBytes - takenBytes);
      pieces.push(chunk.subarray(0, pieceBytes));
      takenBytes += pieceBytes;
      if (pieceBytes === chunk.byteLength) this.#pendingUpload.shift();
      else this.#pendingUpload[0] = chunk.subarray(pieceBytes);
    }
    return pieces.length === 1 ? (pieces[0] as Buffer) : Buffer.concat(pieces);
  }

  /** The client's success answer, once: at OPENED, or at start with zeroRtt. */
  #answerSuccess(): void {
    if (this.#answered) return;
    this.#answered = true;
    const reply = this.#answer.succeeded();
    if (reply) this.#client.write(reply);
  }

  #onEdgeMessage(data: Buffer, isBinary: boolean): void {
    if (this.#phase === "closed") return;
    try {
      if (!isBinary) throw new ProtocolError(CloseCode.MalformedFrame, "text messages are not part of the protocol");
      this.#dispatch(decodeFrame(data));
    } catch (error) {
      // A bug must cost this one stream, never the agent and every other connection with it.
      const failure =
        error instanceof ProtocolError
          ? error
          : new ProtocolError(CloseCode.InternalError, `internal error: ${error instanceof Error ? error.message : String(error)}`);
      this.#protocolFailure(failure);
    }
  }

  #dispatch(frame: Frame): void {
    switch (frame.type) {
      case FrameType.Opened:
        if (this.#phase !== "opening") throw new ProtocolError(CloseCode.UnexpectedFrame, "second OPENED");
        if (frame.status !== StreamStatus.Ok) {
          this.#failOpen(frame.status, frame.reason, "info");
          return;
        }
        this.#opened(frame.windowBytes);
        return;
      case FrameType.Data: {
        if (this.#phase !== "relaying") throw new ProtocolError(CloseCode.UnexpectedFrame, "DATA before OPENED");
        if (this.#receivedEnd) throw new ProtocolError(CloseCode.UnexpectedFrame, "DATA after END");
        const byteLength = frame.payload.byteLength;
        this.#receive.received(byteLength);
        this.#downloadedBytes += byteLength;
        // The write callback fires once the kernel has taken the bytes: only then return credit.
        this.#client.write(frame.payload, (error) => {
          if (error || this.#phase !== "relaying") return;
          const grant = this.#receive.delivered(byteLength);
          if (grant > 0 && !this.#receivedEnd) this.#edge?.send(encodeWindow(grant));
        });
        return;
      }
      case FrameType.Window:
        if (!this.#credit) throw new ProtocolError(CloseCode.UnexpectedFrame, "WINDOW before OPENED");
        this.#credit.grant(frame.bytes);
        this.#flushUpload();
        return;
      case FrameType.End:
        if (this.#phase !== "relaying") throw new ProtocolError(CloseCode.UnexpectedFrame, "END before OPENED");
        if (this.#receivedEnd) throw new ProtocolError(CloseCode.UnexpectedFrame, "second END");
        this.#receivedEnd = true;
        this.#client.end(); // FIN to the client once every queued byte is written
        return;
      case FrameType.Reset:
        if (this.#phase === "opening") {
          this.#failOpen(frame.status, `edge reset the stream: ${frame.reason}`, "info");
          return;
        }
        this.#resetClient(`edge reset the stream: ${frame.reason || `status ${frame.status}`}`);
        return;
      case FrameType.Open:
      case FrameType.Early:
        throw new ProtocolError(CloseCode.UnexpectedFrame, `frame type ${frame.type} is sent by the agent, not to it`);
    }
  }

  #opened(edgeWindowBytes: number): void {
    clearTimeout(this.#openTimer);
    this.#phase = "relaying";
    this.#credit = new SendCredit(edgeWindowBytes, edgeWindowBytes);
    this.#answerSuccess();
    this.#flushUpload();
  }

  /**
   * Sends what credit allows of the pending upload; pauses the client while bytes wait. Before
   * OPENED, only what is left of the early budget goes, and only from a client already answered.
   */
  #flushUpload(): void {
    const credit = this.#credit;
    const edge = this.#edge;
    if (this.#phase === "opening") {
      if (edge?.readyState === WebSocket.OPEN && this.#isOpenSent) this.#sendEarly(edge);
      if (this.#answered && this.#earlyBudgetBytes > 0 && this.#pendingUpload.length === 0) this.#client.resume();
      else this.#client.pause();
      return;
    }
    if (this.#phase !== "relaying" || !credit || !edge) return;
    while (this.#pendingUpload.length > 0 && credit.availableBytes > 0) {
      const chunk = this.#pendingUpload[0] as Buffer;
      const pieceBytes = Math.min(chunk.byteLength, credit.availableBytes, MAX_DATA_BYTES);
      edge.send(encodeData(chunk.subarray(0, pieceBytes)));
      credit.consume(pieceBytes);
      this.#uploadedBytes += pieceBytes;
      if (pieceBytes === chunk.byteLength) this.#pendingUpload.shift();
      else this.#pendingUpload[0] = chunk.subarray(pieceBytes);
    }
    if (this.#pendingUpload.length > 0) {
      this.#client.pause();
      return;
    }
    if (this.#clientEnded) {
      if (!this.#sentEnd) {
        this.#sentEnd = true;
        edge.send(encodeEnd());
        this.#finishIfDone();
      }
      return;
    }
    this.#client.resume();
  }

  /** EARLY frames: client bytes sent before OPENED, outside any window, up to the early budget. */
  #sendEarly(edge: WebSocket): void {
    while (this.#pendingUpload.length > 0 && this.#earlyBudgetBytes > 0) {
      const piece = this.#takePending(Math.min(this.#earlyBudgetBytes, MAX_DATA_BYTES));
      edge.send(encodeEarly(piece));
      this.#earlyBudgetBytes -= piece.byteLength;
      this.#uploadedBytes += piece.byteLength;
    }
  }

  #finishIfDone(): void {
    if (this.#phase !== "relaying" || !this.#sentEnd || !this.#receivedEnd || !this.#clientWritesFinished) return;
    this.#closeEdge(CloseCode.Normal, "stream finished");
    this.#client.destroy();
    this.#finish("ok", "info");
  }

  #onClientClosed(): void {
    if (this.#phase === "closed") return;
    if (this.#phase === "relaying" && this.#sentEnd && this.#receivedEnd) {
      this.#closeEdge(CloseCode.Normal, "stream finished");
      this.#finish("ok", "info");
      return;
    }
    // The client vanished: abort the edge side too (while opening, closing the tunnel is enough).
    if (this.#phase === "relaying" && this.#edge?.readyState === WebSocket.OPEN) this.#edge.send(encodeReset(StreamStatus.GeneralFailure, "client closed the connection"));
    this.#closeEdge(CloseCode.Normal, "client closed");
    this.#finish("client closed the connection", "info");
  }

  #onEdgeClosed(code: number, reason: string): void {
    if (this.#phase === "closed") return;
    const cause = missedPong(this.#edge as WebSocket)
      ? "edge stopped answering pings"
      : `edge closed the tunnel (${code}${reason ? ` ${reason}` : ""}${this.#edgeError ? `: ${this.#edgeError}` : ""})`;
    if (this.#phase === "opening") {
      this.#failOpen(StreamStatus.GeneralFailure, cause, "warn");
      return;
    }
    if (this.#sentEnd && this.#receivedEnd) return; // only the client's last writes remain; 'finish' ends it
    this.#resetClient(cause);
  }

  #protocolFailure(error: ProtocolError): void {
    this.#closeEdge(error.closeCode, error.message);
    const cause = error.closeCode === CloseCode.InternalError ? error.message : `edge broke the protocol: ${error.message}`;
    if (this.#phase === "opening") this.#failOpen(StreamStatus.GeneralFailure, cause, "warn");
    else this.#resetClient(cause);
  }

  /**
   * The open failed: answer the client in its protocol, then close both sides. A client already
   * answered (zeroRtt) can only be reset.
   */
  #failOpen(status: StreamStatus, reason: string, level: "info" | "warn"): void {
    if (this.#phase !== "opening") return;
    if (this.#answered) {
      if (this.#client.resetAndDestroy) this.#client.resetAndDestroy();
      else this.#client.destroy(new Error(reason));
      this.#closeEdge(CloseCode.Normal, "open failed");
      this.#finish(`${STATUS_NAMES[status]} after a 0-RTT answer, client reset: ${reason}`, level);
      return;
    }
    const reply = this.#answer.failed(status, reason);
    if (reply) this.#client.end(reply);
    else this.#client.end();
    this.#closeEdge(CloseCode.Normal, "open failed");
    this.#finish(`${STATUS_NAMES[status]}: ${reason}`, level);
  }

  /** A mid-stream failure: the client gets a TCP reset, so it cannot mistake a cut for an end. */
  #resetClient(reason: string): void {
    if (this.#phase === "closed") return;
    if (this.#client.resetAndDestroy) this.#client.resetAndDestroy();
    else this.#client.destroy(new Error(reason));
    this.#closeEdge(CloseCode.Normal, "stream reset");
    this.#finish(`reset: ${reason}`, "info");
  }

  #closeEdge(code: number, reason: string): void {
    const edge = this.#edge;
    if (!edge) return;
    if (edge.readyState === WebSocket.CONNECTING) edge.terminate();
    else if (edge.readyState === WebSocket.OPEN) edge.close(code, closeReason(reason));
  }

  /** The one end of every stream: idempotent, logs the connection's line. */
  #finish(result: string, level: "info" | "warn"): void {
    if (this.#phase === "closed") return;
    this.#phase = "closed";
    clearTimeout(this.#openTimer);
    this.#credit?.release();
    this.#pendingUpload = [];
    const seconds = ((Date.now() - this.#startedAtMs) / 1000).toFixed(2);
    this.#log[level](`${this.#label} up=${formatBytes(this.#uploadedBytes)} down=${formatBytes(this.#downloadedBytes)} ${seconds}s ${result}`);
    this.#onClosed();
  }
}
