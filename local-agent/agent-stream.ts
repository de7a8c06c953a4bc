// One proxied connection in the agent, from the SOCKS request on: opens the stream on a warm or
// a new tunnel, answers the client, relays both directions under credit-based flow control, and
// ends exactly once.

import WebSocket from "ws";
import type { AgentConfig } from "./config.ts";
import { missedPong, openEdgeSocket, whenRefused } from "./edge-socket.ts";
import { formatBytes, type Logger } from "./log.ts";
import { STATUS_NAMES, type ClientConnection, type OpenAnswer, type StreamRequest } from "./stream-request.ts";
import type { TunnelPool } from "./tunnel-pool.ts";
import { UploadQueue } from "./upload-queue.ts";
import { ReceiveWindow, SendCredit } from "../worker/flow-control.ts";
import {
  CloseCode,
  FrameType,
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

/**
 * Largest upload frame: client reads that arrive in one turn of the event loop are packed up to
 * this. workerd's upload CPU is mostly per message, yet larger messages cost it more per byte:
 * against one frame per 64 KiB read, 256 KiB frames measured 0.81x workerd and 0.82x agent CPU
 * per GB and 1.15x upload MB/s; against 256 KiB, 128 KiB cost workerd 1.26x, 512 KiB 1.62x and
 * 1 MiB 1.65x (paired A/B runs of 256 MiB, npm run bench:ab; docs/benchmarks.md).
 */
const UPLOAD_FRAME_BYTES = 256 * 1024;

/**
 * Longest a zero-RTT cold open waits for the client's first bytes. A client that speaks first
 * sends them within a millisecond of its answer on the same machine; one that waits for the
 * server pays this once, where the wait would save an edge round trip for the others.
 */
const ZERO_RTT_COLD_WAIT_MS = 10;

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
  /** Client bytes waiting to be sent: the client is paused once they reach what may be sent. */
  readonly #pendingUpload = new UploadQueue();
  /** A flush is scheduled for the end of this turn of the event loop. */
  #flushScheduled = false;
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
  /** OPEN has left (in the upgrade or as the tunnel's first frame): EARLY frames may follow it. */
  #isOpenSent = false;
  /** What the edge still takes before OPENED: MAX_EARLY_DATA_BYTES, less what went already. */
  #earlyBudgetBytes = MAX_EARLY_DATA_BYTES;
  /** Runs while a zero-RTT cold open waits for the client's first bytes. */
  #coldOpenTimer: ReturnType<typeof setTimeout> | undefined;

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
      if (this.#coldOpenTimer !== undefined) this.#openCold(); // the first bytes the cold open waited for
      if (this.#pendingUpload.byteLength >= this.#sendableBytes()) this.#client.pause();
      this.#scheduleFlush();
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
    if (warm) {
      this.#attach(warm);
      // The warm tunnel's OPEN leaves now, with every early byte it can carry.
      const earlyData = Buffer.concat(this.#pendingUpload.take(MAX_EARLY_DATA_BYTES));
      warm.send(encodeOpen(this.#destination, this.#config.windowBytes, earlyData));
      this.#openSent(earlyData.byteLength);
    } else if (this.#config.zeroRtt && this.#pendingUpload.byteLength === 0) {
      // The client was answered a moment ago and its first bytes are on their way: waiting for
      // them lets the upgrade carry them, a round trip sooner than EARLY after the 101. A client
      // that waits for the server to speak first costs the wait.
      this.#coldOpenTimer = setTimeout(() => this.#openCold(), ZERO_RTT_COLD_WAIT_MS);
    } else {
      this.#openCold();
    }
    this.#openTimer = setTimeout(
      () => this.#failOpen(StreamStatus.Timeout, `edge did not answer the open within ${this.#config.openTimeoutMs} ms`, "info"),
      this.#config.openTimeoutMs,
    );
    this.#flushUpload();
  }

  /** Opens a new tunnel whose upgrade request carries the OPEN: the edge dials before it answers 101. */
  #openCold(): void {
    clearTimeout(this.#coldOpenTimer);
    this.#coldOpenTimer = undefined;
    if (this.#edge || this.#phase !== "opening") return;
    const roomBytes = MAX_HEADER_OPEN_BYTES - encodeOpen(this.#destination, this.#config.windowBytes).byteLength;
    const earlyData = Buffer.concat(this.#pendingUpload.take(roomBytes));
    const openFrame = encodeOpen(this.#destination, this.#config.windowBytes, earlyData);
    this.#openSent(earlyData.byteLength);
    const edge = openEdgeSocket(this.#config, { [OPEN_HEADER]: encodeHeaderOpen(openFrame) });
    this.#attach(edge);
    edge.on("open", () => this.#flushUpload());
    whenRefused(edge, (status, explanation) => this.#failOpen(StreamStatus.GeneralFailure, `edge refused the tunnel: HTTP ${status} ${explanation}`, "warn"));
  }

  /** Makes `edge` this stream's tunnel. */
  #attach(edge: WebSocket): void {
    this.#edge = edge;
    edge.on("message", (data: Buffer, isBinary: boolean) => this.#onEdgeMessage(data, isBinary));
    edge.on("error", (error) => {
      this.#edgeError = error.message;
    });
    edge.on("close", (code, reason) => this.#onEdgeClosed(code, reason.toString("utf8")));
  }

  #openSent(earlyBytes: number): void {
    this.#isOpenSent = true;
    this.#earlyBudgetBytes -= earlyBytes;
    this.#uploadedBytes += earlyBytes;
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

  /** What may be sent now: the early budget before OPENED, the credit after, and never more than one frame. */
  #sendableBytes(): number {
    if (this.#phase === "opening") return Math.min(this.#earlyBudgetBytes, UPLOAD_FRAME_BYTES);
    return Math.min(this.#credit?.availableBytes ?? 0, UPLOAD_FRAME_BYTES);
  }

  /**
   * Flushes once the reads of this turn of the event loop are in: a client sending fast is read
   * 64 KiB at a time, and one frame per read would cost the edge a message each (workerd's
   * upload CPU is mostly per message), while waiting longer than this turn would add latency.
   */
  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flushUpload();
    });
  }

  /**
   * Sends what may be sent of the pending upload (EARLY before OPENED, DATA under credit after);
   * pauses the client while bytes wait, resumes it when there is room again.
   */
  #flushUpload(): void {
    const edge = this.#edge;
    if (this.#coldOpenTimer !== undefined) {
      this.#client.resume(); // a zero-RTT cold open waits for the client's first bytes
      return;
    }
    if (this.#phase === "closed" || edge?.readyState !== WebSocket.OPEN) return;
    if (this.#phase === "opening" && !this.#isOpenSent) return;
    for (let pieceBytes = this.#sendableBytes(); this.#pendingUpload.byteLength > 0 && pieceBytes > 0; pieceBytes = this.#sendableBytes()) {
      const pieces = this.#pendingUpload.take(pieceBytes);
      const sentBytes = pieces.reduce((total, piece) => total + piece.byteLength, 0);
      if (this.#phase === "opening") {
        edge.send(encodeEarly(pieces));
        this.#earlyBudgetBytes -= sentBytes;
      } else {
        edge.send(encodeData(pieces));
        this.#credit?.consume(sentBytes);
      }
      this.#uploadedBytes += sentBytes;
    }
    if (this.#pendingUpload.byteLength > 0) {
      this.#client.pause();
      return;
    }
    if (this.#phase === "relaying" && this.#clientEnded) {
      if (!this.#sentEnd) {
        this.#sentEnd = true;
        edge.send(encodeEnd());
        this.#finishIfDone();
      }
      return;
    }
    // Read on only while there is room to send what comes: credit, or the early budget of a
    // client already answered (an unanswered one sends nothing more until it hears OPENED).
    if (this.#sendableBytes() > 0 && (this.#phase === "relaying" || this.#answered)) this.#client.resume();
    else this.#client.pause();
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
    clearTimeout(this.#coldOpenTimer);
    this.#coldOpenTimer = undefined;
    this.#credit?.release();
    this.#pendingUpload.clear();
    const seconds = ((Date.now() - this.#startedAtMs) / 1000).toFixed(2);
    this.#log[level](`${this.#label} up=${formatBytes(this.#uploadedBytes)} down=${formatBytes(this.#downloadedBytes)} ${seconds}s ${result}`);
    this.#onClosed();
  }
}
