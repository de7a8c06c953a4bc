// One proxied TCP connection at the edge: dials the destination with connect(), relays both
// directions under credit-based flow control, and half-closes each direction on its own.

import { errorMessage } from "../connect-error.ts";
import type { EdgeConfig } from "../config.ts";
import { DialAttempt, dialDestination } from "../dial/dial-destination.ts";
import { BUDGET_FLOOR_BYTES, ReceiveWindow, SendCredit, creditBatchBytes } from "../protocol/flow-control.ts";
import { trackStream, type StreamHold } from "./held-bytes.ts";
import { isolateBudget, noteWindow } from "./window-budget.ts";
import {
  CloseCode,
  DATA_HEADER_BYTES,
  MAX_DATA_BYTES,
  MAX_EARLY_DATA_BYTES,
  ProtocolError,
  StreamStatus,
  dataFrameAround,
  encodeData,
  encodeEnd,
  encodeGrow,
  encodeOpened,
  encodeReset,
  encodeWindow,
  formatDestination,
  speaksWindowGrowth,
  statusForVersion,
  type OpenFrame,
  type ProtocolVersion,
} from "../protocol/index.ts";

/** Where the stream sends its frames: the tunnel's WebSocket. */
export type FrameSink = (frame: Uint8Array) => void;

/** What a stream may ask of its tunnel besides sending: the round trip its windows grow to (v4). */
export type TunnelLink = {
  rttMs(): number | undefined;
  /** Sends a PING when the last one is old enough (round-trip.ts). */
  pingIfDue(): void;
};

/** How a stream ended, for the tunnel's log line. */
export type StreamOutcome = {
  destination: string;
  /** How the edge reached it: "direct", "via upstream socks5://host:port", ...; "not opened" when it did not. */
  route: string;
  status: StreamStatus;
  /** Empty on a clean finish; otherwise what went wrong, as sent to (or received from) the agent. */
  reason: string;
  uploadedBytes: number;
  downloadedBytes: number;
};

type StreamState = "opening" | "open" | "closed";

/** Size of a stream's first read from its destination, and of its reads while it is not busy. */
const FIRST_READ_BYTES = 16 * 1024;

/** A stream from OPEN to its last frame. Every end goes through #finish, once. */
export class EdgeStream {
  readonly #open: OpenFrame;
  readonly #send: FrameSink;
  readonly #config: EdgeConfig;
  readonly #receive: ReceiveWindow;
  readonly #credit: SendCredit;
  readonly #version: ProtocolVersion;
  /** The tunnel's round trip: given on v4 tunnels only, so a stream without it sends no PING or GROW. */
  readonly #link: TunnelLink | undefined;
  #state: StreamState = "opening";
  #dial: DialAttempt | undefined;
  #socket: Socket | undefined;
  #route = "not opened";
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  /** EARLY payloads that arrived while we dialed: written, uncounted, right after the OPEN's own early data. */
  #earlyData: Uint8Array[] = [];
  /** Early bytes so far, the OPEN's included: the agent may send MAX_EARLY_DATA_BYTES before OPENED. */
  #earlyBytes: number;
  /** A DATA frame has arrived: EARLY frames, sent before it, may no longer. */
  #sawData = false;
  /** The agent sent END: no more upload DATA may arrive. */
  #uploadEnded = false;
  /** The destination has been sent FIN after every upload byte. */
  #uploadClosed = false;
  /** The destination sent FIN and the agent has been sent END. */
  #downloadEnded = false;
  #uploadedBytes = 0;
  #downloadedBytes = 0;
  #resolveFinished!: (outcome: StreamOutcome) => void;
  /** Settles once the stream has ended, however it ended. */
  readonly finished: Promise<StreamOutcome>;

  constructor(open: OpenFrame, send: FrameSink, config: EdgeConfig, version: ProtocolVersion, link?: TunnelLink) {
    this.#open = open;
    this.#version = version;
    this.#send = send;
    this.#config = config;
    this.#link = link;
    // Both directions claim from the isolate's budget: the upload window we announce, and the
    // download bytes we let ourselves have in flight, whatever window the agent announces (a
    // full budget shrinks both to BUDGET_FLOOR_BYTES rather than refusing the stream).
    const budget = isolateBudget(config.windowBudgetBytes);
    const uploadWindowBytes = budget.claim(config.windowBytes, BUDGET_FLOOR_BYTES);
    const tuning = link ? { maxWindowBytes: config.maxWindowBytes, rttMs: () => link.rttMs(), nowMs: Date.now } : undefined;
    this.#receive = new ReceiveWindow(uploadWindowBytes, { budget, claimedBytes: uploadWindowBytes, tuning });
    this.#credit = new SendCredit(open.windowBytes, open.windowBytes, {
      budget,
      unclaimedBytes: 0,
      initialClaimBytes: config.windowBytes,
      // However full the budget, enough in flight for the agent to return credit at all.
      floorBytes: Math.max(BUDGET_FLOOR_BYTES, creditBatchBytes(open.windowBytes, speaksWindowGrowth(version))),
    });
    this.#earlyBytes = open.earlyData.byteLength;
    this.finished = new Promise((resolve) => {
      this.#resolveFinished = resolve;
    });
    void this.finished.then(() => {
      this.#receive.close();
      this.#credit.release();
    });
    trackStream(this, this.finished);
  }

  /** What this stream holds now: upload bytes not yet written onward, download bytes not yet credited back. */
  hold(): StreamHold {
    return { uploadHeldBytes: this.#receive.heldBytes, downloadUncreditedBytes: this.#credit.inFlightBytes };
  }

  /** Dials the destination (worker/dial/) and answers OPENED; then relays until both directions end. */
  async start(): Promise<void> {
    const { destination } = this.#open;
    const attempt = new DialAttempt(this.#config);
    this.#dial = attempt;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#config.connectTimeoutMs);
    });
    const result = await Promise.race([dialDestination(destination, this.#config, attempt), timedOut]);
    clearTimeout(timer);
    if (result === "timeout") {
      attempt.abort();
      this.#failOpen(StreamStatus.Timeout, `no connection to ${formatDestination(destination)} within ${this.#config.connectTimeoutMs} ms`);
      return;
    }
    if (this.#state !== "opening") {
      attempt.abort(); // the agent reset, or the tunnel closed, while we dialed
      return;
    }
    if (!result.ok) {
      this.#failOpen(result.status, result.reason, result.verdictSeconds);
      return;
    }
    const socket = result.socket;
    this.#socket = socket;
    this.#route = result.route;
    this.#state = "open";
    this.#send(encodeOpened(StreamStatus.Ok, this.#receive.windowBytes));
    this.#link?.pingIfDue();
    this.#writer = socket.writable.getWriter();
    if (this.#open.earlyData.byteLength > 0) this.#write(this.#open.earlyData, false);
    for (const chunk of this.#earlyData) this.#write(chunk, false);
    this.#earlyData = [];
    if (this.#uploadEnded) this.#closeUpload();
    void this.#pumpDownload(socket, result.leftover);
  }

  /** Upload bytes from the agent. Throws ProtocolError when the agent breaks the protocol. */
  onData(payload: Uint8Array): void {
    if (this.#state === "closed") return; // in flight when we reset: harmless, dropped
    if (this.#state === "opening") throw new ProtocolError(CloseCode.UnexpectedFrame, "DATA before OPENED");
    if (this.#uploadEnded) throw new ProtocolError(CloseCode.UnexpectedFrame, "DATA after END");
    this.#sawData = true;
    this.#receive.received(payload.byteLength);
    this.#write(payload, true);
  }

  /**
   * Early upload bytes (a 0-RTT open): held while we dial, written uncounted after, bounded by
   * MAX_EARLY_DATA_BYTES. The agent sent them before it saw OPENED, so they may arrive after it.
   */
  onEarly(payload: Uint8Array): void {
    if (this.#state === "closed") return;
    if (this.#uploadEnded) throw new ProtocolError(CloseCode.UnexpectedFrame, "EARLY after END");
    if (this.#sawData) throw new ProtocolError(CloseCode.UnexpectedFrame, "EARLY after DATA");
    this.#earlyBytes += payload.byteLength;
    if (this.#earlyBytes > MAX_EARLY_DATA_BYTES) {
      throw new ProtocolError(CloseCode.WindowExceeded, `agent sent ${this.#earlyBytes} early bytes; at most ${MAX_EARLY_DATA_BYTES}`);
    }
    if (this.#state === "opening") this.#earlyData.push(payload); // each message is its own ArrayBuffer: no copy needed
    else this.#write(payload, false);
  }

  /** Credit from the agent for the download direction. */
  onWindow(bytes: number): void {
    if (this.#state === "closed") return;
    if (this.#state === "opening") throw new ProtocolError(CloseCode.UnexpectedFrame, "WINDOW before OPENED");
    this.#credit.grant(bytes);
  }

  /** The agent grew its download window (v4): more credit, used as far as the isolate's budget lets this stream hold it. */
  onGrow(windowBytes: number): void {
    if (this.#state === "closed") return;
    if (this.#state === "opening") throw new ProtocolError(CloseCode.UnexpectedFrame, "GROW before OPENED");
    this.#credit.grow(windowBytes);
    noteWindow(this.#credit.limitBytes);
  }

  /** The agent's client finished sending: pass FIN on after every queued byte. */
  onEnd(): void {
    if (this.#state === "closed") return;
    if (this.#uploadEnded) throw new ProtocolError(CloseCode.UnexpectedFrame, "second END");
    this.#uploadEnded = true;
    if (this.#state === "open") this.#closeUpload();
  }

  /** The agent aborted the stream. */
  onReset(status: StreamStatus, reason: string): void {
    this.#teardown(status, `reset by agent${reason ? `: ${reason}` : ""}`);
  }

  /** Both directions have ended; only the last upload bytes and FIN to the destination remain. */
  get draining(): boolean {
    return this.#state === "open" && this.#uploadEnded && this.#downloadEnded;
  }

  /**
   * The agent may open the tunnel's next stream: this one is draining, or has ended and its
   * `finished` has not been taken up yet (that runs a microtask later than the frame that ended it).
   */
  get makesRoomForNext(): boolean {
    return this.#state === "closed" || this.draining;
  }

  /**
   * The tunnel's WebSocket is gone. A draining stream still flushes its last upload bytes and
   * FIN to the destination; any other stream is aborted.
   */
  onTunnelClosed(reason: string): void {
    if (this.draining) return;
    this.#teardown(StreamStatus.GeneralFailure, reason);
  }

  /** Aborts the stream after a protocol error on the tunnel. */
  abort(reason: string): void {
    this.#teardown(StreamStatus.GeneralFailure, reason);
  }

  #write(payload: Uint8Array, countedInWindow: boolean): void {
    const writer = this.#writer;
    if (!writer) return;
    const byteLength = payload.byteLength;
    writer.write(payload).then(
      () => {
        this.#uploadedBytes += byteLength;
        if (!countedInWindow || this.#state !== "open") return;
        this.#returnCredit(this.#receive.delivered(byteLength));
      },
      (error: unknown) => this.#fail(StreamStatus.GeneralFailure, `write to destination failed: ${errorMessage(error)}`),
    );
  }

  /** Sends what delivered() says: GROW before its WINDOW, so the agent's ceiling rises first. */
  #returnCredit(grantBytes: number): void {
    if (grantBytes === 0 || this.#uploadEnded) return;
    const grownTo = this.#receive.takeGrowth();
    if (grownTo !== undefined) {
      noteWindow(grownTo);
      this.#send(encodeGrow(grownTo));
    }
    this.#send(encodeWindow(grantBytes));
    this.#link?.pingIfDue();
  }

  #closeUpload(): void {
    this.#writer?.close().then(
      () => {
        this.#uploadClosed = true;
        this.#finishIfDone();
      },
      (error: unknown) => this.#fail(StreamStatus.GeneralFailure, `closing the destination's write side failed: ${errorMessage(error)}`),
    );
  }

  /** Sends `leftover` (what an upstream proxy sent past its reply) under credit, then relays the socket's reads. */
  async #pumpDownload(socket: Socket, leftover: Uint8Array): Promise<void> {
    for (let rest = leftover; rest.byteLength > 0; ) {
      await this.#credit.whenAvailable();
      if (this.#state !== "open") return;
      const piece = rest.subarray(0, Math.min(this.#credit.sendableBytes, MAX_DATA_BYTES));
      if (piece.byteLength === 0) continue; // woken by credit our own limit still holds back
      rest = rest.subarray(piece.byteLength);
      this.#credit.consume(piece.byteLength);
      this.#downloadedBytes += piece.byteLength;
      this.#send(encodeData(piece));
    }
    const reader = socket.readable.getReader({ mode: "byob" });
    // One buffer, reused: each read transfers it into `value` and hands it back, and
    // WebSocket.send() copies the frame out before returning. A fresh ArrayBuffer per read cost
    // workerd ~12% of its download CPU (zero-fill, page faults). Its size adapts: it doubles
    // while reads come back full (a bulk download, where fewer, larger messages are cheaper) up
    // to config.readBytes, and halves when one comes back under half of what it asked, so a
    // stream that never gets busy (an idle keep-alive connection) holds a 16 KiB read, not 512.
    let readBytes = Math.min(FIRST_READ_BYTES, this.#config.readBytes);
    let buffer = new ArrayBuffer(DATA_HEADER_BYTES + readBytes);
    try {
      for (;;) {
        await this.#credit.whenAvailable();
        if (this.#state !== "open") return;
        const wantBytes = Math.min(this.#credit.sendableBytes, readBytes);
        if (wantBytes === 0) continue; // woken by credit our own limit still holds back
        // Read behind a one-byte gap so the DATA header goes in front without a copy.
        const { value, done } = await reader.read(new Uint8Array(buffer, DATA_HEADER_BYTES, wantBytes));
        const gotBytes = value?.byteLength ?? 0;
        const nextReadBytes =
          gotBytes === readBytes
            ? Math.min(readBytes * 2, this.#config.readBytes)
            : gotBytes < wantBytes / 2
              ? Math.max(readBytes / 2, FIRST_READ_BYTES)
              : readBytes;
        if (value && nextReadBytes === readBytes) {
          buffer = value.buffer;
        } else {
          readBytes = nextReadBytes;
          buffer = new ArrayBuffer(DATA_HEADER_BYTES + readBytes);
        }
        if (this.#state !== "open") return;
        if (done) {
          this.#downloadEnded = true;
          this.#send(encodeEnd());
          this.#finishIfDone();
          return;
        }
        if (!value || value.byteLength === 0) continue;
        this.#credit.consume(value.byteLength);
        this.#downloadedBytes += value.byteLength;
        this.#send(dataFrameAround(value));
      }
    } catch (error) {
      this.#fail(StreamStatus.GeneralFailure, `read from destination failed: ${errorMessage(error)}`);
    }
  }

  #finishIfDone(): void {
    if (this.#state !== "open" || !this.#uploadClosed || !this.#downloadEnded) return;
    this.#state = "closed";
    this.#closeSocket();
    this.#resolveFinished(this.#outcome(StreamStatus.Ok, ""));
  }

  /** OPENED with a failure; for OnCloudflare its window field carries `verdictSeconds` (v3; a v2 agent hears NotAllowed). */
  #failOpen(status: StreamStatus, reason: string, verdictSeconds = 0): void {
    if (this.#state !== "opening") return;
    this.#state = "closed";
    this.#earlyData = [];
    const sent = statusForVersion(status, this.#version);
    this.#send(encodeOpened(sent, sent === StreamStatus.OnCloudflare ? verdictSeconds : 0, reason));
    this.#closeSocket();
    this.#resolveFinished(this.#outcome(status, reason));
  }

  /** A failure on our side mid-stream: tell the agent with RESET, then tear down. */
  #fail(status: StreamStatus, reason: string): void {
    if (this.#state === "closed") return;
    this.#send(encodeReset(status, reason));
    this.#teardown(status, reason);
  }

  #teardown(status: StreamStatus, reason: string): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#earlyData = [];
    this.#credit.release();
    this.#closeSocket();
    this.#resolveFinished(this.#outcome(status, reason));
  }

  #closeSocket(): void {
    this.#dial?.abort();
    this.#socket?.close().catch(() => {});
  }

  #outcome(status: StreamStatus, reason: string): StreamOutcome {
    return {
      destination: formatDestination(this.#open.destination),
      route: this.#route,
      status,
      reason,
      uploadedBytes: this.#uploadedBytes,
      downloadedBytes: this.#downloadedBytes,
    };
  }
}
