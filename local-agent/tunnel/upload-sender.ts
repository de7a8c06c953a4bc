// The client-to-edge direction of one stream: queues what the client sends, cuts it into EARLY
// frames under the early budget before OPENED and DATA frames under the edge's credit after,
// pauses the client while bytes wait, and sends END once the client has and its last byte is out.

import WebSocket from "ws";
import type { ClientConnection } from "./stream-request.ts";
import { UploadQueue } from "./upload-queue.ts";
import { noteWindow } from "./window-budget.ts";
import { SendCredit, type WindowBudget } from "../../worker/protocol/flow-control.ts";
import { MAX_EARLY_DATA_BYTES, encodeData, encodeEarly, encodeEnd } from "../../worker/protocol/index.ts";

/**
 * Largest upload frame: client reads that arrive in one turn of the event loop are packed up to
 * this. workerd's upload CPU is mostly per message, yet larger messages cost it more per byte:
 * against one frame per 64 KiB read, 256 KiB frames measured 0.81x workerd and 0.82x agent CPU
 * per GB and 1.15x upload MB/s; against 256 KiB, 128 KiB cost workerd 1.26x, 512 KiB 1.62x and
 * 1 MiB 1.65x (paired A/B runs of 256 MiB, npm run bench:ab; docs/benchmarks.md).
 */
const UPLOAD_FRAME_BYTES = 256 * 1024;

/**
 * Once the edge gives credit, client bytes read beyond what may be sent now: a frame's worth, so
 * a full frame leaves the moment a WINDOW arrives instead of after the client is resumed and read
 * again. It bounds what the agent holds per stream (what may be sent plus this).
 */
const READ_AHEAD_BYTES = UPLOAD_FRAME_BYTES;

export type UploadOptions = {
  /** The agent's window budget: what the edge's grown windows may have in flight from us beyond its first window. */
  budget: WindowBudget;
  /** Client bytes that arrived behind the request: the first pending upload. */
  earlyBytes: Buffer;
  /** The client is answered before OPENED (--zero-rtt), so it is read under the early budget too. */
  readsBeforeOpened: boolean;
  /** Runs once, right after END has left. */
  onEndSent: () => void;
};

/** One stream's upload: never sends more than the early budget or the credit allows, and END once. */
export class UploadSender {
  readonly #client: ClientConnection;
  readonly #readsBeforeOpened: boolean;
  readonly #onEndSent: () => void;
  readonly #budget: WindowBudget;
  /** Client bytes waiting to be sent: the client is paused once they reach the hold limit. */
  readonly #pending = new UploadQueue();
  #edge: WebSocket | undefined;
  /** The edge's credit, from OPENED on; before it, the early budget is what may be sent. */
  #credit: SendCredit | undefined;
  /** What the edge still takes before OPENED: MAX_EARLY_DATA_BYTES, less what went already. */
  #earlyBudgetBytes = MAX_EARLY_DATA_BYTES;
  /** OPEN has left (in the upgrade or as the tunnel's first frame): EARLY frames may follow it. */
  #isOpenSent = false;
  /**
   * Client bytes sent before OPENED (in the OPEN and EARLY frames), at most MAX_EARLY_DATA_BYTES:
   * kept until OPENED so a stream the edge cannot open can replay them elsewhere (--on-cloudflare direct).
   */
  #sentBeforeOpened: Uint8Array[] = [];
  /** A flush is scheduled for the end of this turn of the event loop. */
  #flushScheduled = false;
  #hasClientEnded = false;
  #sentEnd = false;
  #isClosed = false;
  #uploadedBytes = 0;
  /** Runs while the upload waits for the client's first bytes (a zero-RTT cold open). */
  #firstBytesTimer: ReturnType<typeof setTimeout> | undefined;
  #onFirstBytes: (() => void) | undefined;

  constructor(client: ClientConnection, options: UploadOptions) {
    this.#client = client;
    this.#readsBeforeOpened = options.readsBeforeOpened;
    this.#onEndSent = options.onEndSent;
    this.#budget = options.budget;
    if (options.earlyBytes.byteLength > 0) this.#pending.push(options.earlyBytes);
  }

  /** Bytes sent to the edge so far, in the OPEN, EARLY and DATA frames. */
  get uploadedBytes(): number {
    return this.#uploadedBytes;
  }

  /** Client bytes read and not yet sent. */
  get pendingBytes(): number {
    return this.#pending.byteLength;
  }

  /** Client bytes that have left before OPENED (in the OPEN and EARLY frames): what a destination may have been sent. */
  get sentBeforeOpenedBytes(): number {
    return this.#sentBeforeOpened.reduce((total, piece) => total + piece.byteLength, 0);
  }

  /** END has left: no more DATA follows it. */
  get hasSentEnd(): boolean {
    return this.#sentEnd;
  }

  /** Queues a read from the client and sends it by the end of this turn, as far as it may go. */
  received(chunk: Buffer): void {
    this.#pending.push(chunk);
    if (this.#firstBytesTimer !== undefined) this.#stopWaiting(); // the first bytes the wait was for
    if (this.#pending.byteLength >= this.#holdLimitBytes()) this.#client.pause();
    this.#scheduleFlush();
  }

  /** The client sent FIN: END follows its last pending byte (once OPENED). */
  clientEnded(): void {
    this.#hasClientEnded = true;
    this.flush();
  }

  /**
   * Reads the client and sends nothing until its first bytes are queued or `maxWaitMs` has
   * passed, whichever is first; then calls `then` once.
   */
  waitForFirstBytes(maxWaitMs: number, then: () => void): void {
    this.#onFirstBytes = then;
    this.#firstBytesTimer = setTimeout(() => this.#stopWaiting(), maxWaitMs);
  }

  #stopWaiting(): void {
    clearTimeout(this.#firstBytesTimer);
    this.#firstBytesTimer = undefined;
    const then = this.#onFirstBytes;
    this.#onFirstBytes = undefined;
    then?.();
  }

  /**
   * Takes up to `maxBytes` of the pending upload as the early data the OPEN carries, counted
   * against the early budget; EARLY frames may follow the OPEN from now on.
   */
  takeOpenData(maxBytes: number): Buffer {
    const earlyData = Buffer.concat(this.#pending.take(maxBytes));
    if (earlyData.byteLength > 0) this.#sentBeforeOpened.push(earlyData);
    this.#isOpenSent = true;
    this.#earlyBudgetBytes -= earlyData.byteLength;
    this.#uploadedBytes += earlyData.byteLength;
    return earlyData;
  }

  /** Sends on `edge` from now on (from its 'open' on, for a tunnel still connecting). */
  useTunnel(edge: WebSocket): void {
    this.#edge = edge;
  }

  /** OPENED: the edge's window becomes the credit, and what waits for it goes as DATA. */
  opened(edgeWindowBytes: number): void {
    this.#credit = new SendCredit(edgeWindowBytes, edgeWindowBytes, { budget: this.#budget, unclaimedBytes: edgeWindowBytes, initialClaimBytes: 0 });
    this.#sentBeforeOpened = [];
    this.flush();
  }

  /** A WINDOW frame (after OPENED): adds its credit and sends what it lets go. */
  grant(bytes: number): void {
    this.#credit?.grant(bytes);
    this.flush();
  }

  /** A GROW frame (v4): the edge's window is larger now; what our budget lets us keep in flight of it may go. */
  grow(windowBytes: number): void {
    if (!this.#credit) return;
    this.#credit.grow(windowBytes);
    noteWindow(this.#credit.limitBytes);
    this.flush();
  }

  /** What may be sent now: the early budget before OPENED, the credit after, and never more than one frame. */
  #sendableBytes(): number {
    if (this.#credit) return Math.min(this.#credit.sendableBytes, UPLOAD_FRAME_BYTES);
    return this.#isClosed ? 0 : Math.min(this.#earlyBudgetBytes, UPLOAD_FRAME_BYTES);
  }

  /** The most client bytes held unsent before the client is paused: what may be sent, plus the read-ahead once there is credit. */
  #holdLimitBytes(): number {
    return this.#sendableBytes() + (this.#credit ? READ_AHEAD_BYTES : 0);
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
      this.flush();
    });
  }

  /**
   * Sends what may be sent of the pending upload (EARLY before OPENED, DATA under credit after);
   * pauses the client while bytes wait, resumes it when there is room again.
   */
  flush(): void {
    const edge = this.#edge;
    if (this.#firstBytesTimer !== undefined) {
      this.#client.resume(); // a zero-RTT cold open waits for the client's first bytes
      return;
    }
    if (this.#isClosed || edge?.readyState !== WebSocket.OPEN) return;
    if (!this.#credit && !this.#isOpenSent) return;
    for (let pieceBytes = this.#sendableBytes(); this.#pending.byteLength > 0 && pieceBytes > 0; pieceBytes = this.#sendableBytes()) {
      const pieces = this.#pending.take(pieceBytes);
      const sentBytes = pieces.reduce((total, piece) => total + piece.byteLength, 0);
      if (this.#credit) {
        edge.send(encodeData(pieces));
        this.#credit.consume(sentBytes);
      } else {
        edge.send(encodeEarly(pieces));
        this.#sentBeforeOpened.push(...pieces);
        this.#earlyBudgetBytes -= sentBytes;
      }
      this.#uploadedBytes += sentBytes;
    }
    if (this.#pending.byteLength === 0 && this.#credit && this.#hasClientEnded) {
      if (!this.#sentEnd) {
        this.#sentEnd = true;
        edge.send(encodeEnd());
        this.#onEndSent();
      }
      return;
    }
    // Read on only while there is room for what comes: under the hold limit once there is
    // credit; before OPENED, only with nothing waiting and early budget left for a client already
    // answered (an unanswered one sends nothing more until it hears OPENED).
    const mayRead = this.#credit
      ? this.#pending.byteLength < this.#holdLimitBytes()
      : this.#pending.byteLength === 0 && this.#readsBeforeOpened && this.#sendableBytes() > 0;
    if (mayRead) this.#client.resume();
    else this.#client.pause();
  }

  /**
   * Before the open is tried again on another tunnel, which the caller gives with useTunnel: what
   * left before OPENED is pending again, ahead of the rest, with the early budget whole, and the
   * next OPEN carries it from the start. Only before OPENED.
   */
  rewind(): void {
    if (this.#credit) throw new Error("rewind after OPENED");
    const sent = this.#sentBeforeOpened;
    this.#sentBeforeOpened = [];
    this.#pending.unshift(sent);
    this.#uploadedBytes -= sent.reduce((total, piece) => total + piece.byteLength, 0);
    this.#earlyBudgetBytes = MAX_EARLY_DATA_BYTES;
    this.#isOpenSent = false;
    this.#edge = undefined;
  }

  /**
   * Stops for good and hands back every client byte the edge did not open a destination for: what
   * went out before OPENED, then what is still pending; and whether the client has sent FIN.
   */
  takeBack(): { bytes: Buffer; clientEnded: boolean } {
    const bytes = Buffer.concat([...this.#sentBeforeOpened, ...this.#pending.take(this.#pending.byteLength)]);
    this.#sentBeforeOpened = [];
    this.close();
    return { bytes, clientEnded: this.#hasClientEnded };
  }

  /** Stops for good: no more frames, the wait and the credit released, the pending bytes dropped. */
  close(): void {
    this.#isClosed = true;
    clearTimeout(this.#firstBytesTimer);
    this.#firstBytesTimer = undefined;
    this.#onFirstBytes = undefined;
    this.#credit?.release();
    this.#pending.clear();
    this.#sentBeforeOpened = [];
  }
}
