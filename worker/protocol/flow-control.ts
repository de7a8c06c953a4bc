// Credit-based flow control, shared by the edge and the agent (docs/protocol.md, "Flow control").
//
// Each direction of a stream has a receive window W announced by its receiver. The sender may
// have at most W bytes of DATA that the receiver has not yet delivered onward; the receiver
// returns credit with WINDOW frames once bytes have left it (written to the TCP socket and
// accepted by the kernel). So neither side ever holds more than W unsent bytes per direction,
// whatever the far reader does: a stalled reader stops the credit, the credit stops the sender's
// reads, and TCP backpressure stops the source.

import { CloseCode, ProtocolError } from "./index.ts";

/**
 * Credit is returned once this fraction of the window has been delivered: fewer WINDOW frames
 * than one per DATA, while the sender still has three quarters of a window in flight.
 */
const WINDOW_UPDATE_DIVISOR = 4;
/**
 * Largest credit batch: with windows grown to megabytes, a quarter window would leave the
 * sender with that much less in flight while a batch builds; 256 KiB is the default window's
 * quarter, so the default's WINDOW frames are as before.
 */
const MAX_CREDIT_BATCH_BYTES = 256 * 1024;

/**
 * Largest window auto-tuning grows a stream's direction to, by default (the Worker's
 * EDGESOCKS_MAX_WINDOW_BYTES, the agent's --max-window-bytes): 16 MiB fills 50 MB/s at ~300 ms
 * round trip, the order of magnitude quic-go (6 MiB per stream) and gRPC (16 MiB) settle on.
 */
export const DEFAULT_MAX_WINDOW_BYTES = 16 * 1024 * 1024;
/**
 * What a stream direction gets whatever its budget says: a stream must not stall for want of
 * room, so a full budget shrinks new windows to this instead of refusing them. The budget is
 * exceeded only by floors: this one per stream direction, and a sender's credit-batch floor (a
 * receiver returns no credit until a batch is in: at most 256 KiB per stream toward a v4
 * receiver, a quarter of its window toward an older one).
 */
export const BUDGET_FLOOR_BYTES = 64 * 1024;

/**
 * Memory that windows may claim, shared by streams (the edge: every tunnel one isolate serves;
 * the agent: the whole process). A window grows only while its budget has room, and returns
 * what it claimed when its stream ends; granted credit is never revoked.
 */
export class WindowBudget {
  readonly totalBytes: number;
  #inUseBytes = 0;
  #peakInUseBytes = 0;

  constructor(totalBytes: number) {
    this.totalBytes = totalBytes;
  }

  get inUseBytes(): number {
    return this.#inUseBytes;
  }

  /** The most ever claimed at once: what the memory tests and the link benchmark report. */
  get peakInUseBytes(): number {
    return this.#peakInUseBytes;
  }

  /** The peak starts over from what is claimed now. */
  resetPeak(): void {
    this.#peakInUseBytes = this.#inUseBytes;
  }

  /** Claims up to `wantBytes`, as much as there is room for but never less than min(floorBytes, wantBytes). */
  claim(wantBytes: number, floorBytes = 0): number {
    const room = Math.max(0, this.totalBytes - this.#inUseBytes);
    const claimed = Math.max(Math.min(wantBytes, room), Math.min(floorBytes, wantBytes));
    this.#inUseBytes += claimed;
    this.#peakInUseBytes = Math.max(this.#peakInUseBytes, this.#inUseBytes);
    return claimed;
  }

  release(bytes: number): void {
    this.#inUseBytes -= bytes;
  }
}

/**
 * The growth rule's factor: a window doubles when its delivered fraction took less than this many
 * round trips times the fraction, i.e. while the window is under this many bandwidth-delay
 * products. quic-go uses 4; windows then settle at 4-8 BDP. Set by the link benchmark.
 */
export const GROWTH_ROUND_TRIPS = 4;

/** How a receive window auto-tunes (protocol v4): its ceiling and the tunnel's round trip. */
export type WindowTuning = {
  maxWindowBytes: number;
  /** The tunnel's round trip in ms, or undefined before the first PONG. */
  rttMs: () => number | undefined;
  nowMs: () => number;
};

/** A receive window's budget, and what the caller already claimed from it for the initial window (returned by close()). */
export type ReceiveBudget = { budget: WindowBudget; claimedBytes: number; tuning?: WindowTuning };

/**
 * The receiving half: counts bytes in, bytes delivered, and decides when to return credit. With
 * tuning (v4) it also grows its window while the window limits the stream: quic-go's scheme
 * (flowcontrol/base_flow_controller.go): at each credit return, once more than half the window was
 * delivered since the epoch began, the window doubles if that took less than 4 x fraction x RTT,
 * that is, if the stream moves faster than a quarter of what the window allows per round trip.
 */
export class ReceiveWindow {
  #windowBytes: number;
  /** Received and not yet delivered onward: what this side is holding. */
  #heldBytes = 0;
  /** Delivered but not yet returned to the sender as credit. */
  #unreturnedBytes = 0;
  #updateThresholdBytes: number;
  readonly #budget: WindowBudget | undefined;
  readonly #tuning: WindowTuning | undefined;
  /** Bytes this window holds claimed from its budget (the initial window too, when the caller claimed it). */
  #claimedBytes = 0;
  #deliveredBytes = 0;
  #epochStartDeliveredBytes = 0;
  #epochStartMs = 0;
  /** A grown window the sender has not been told of yet. */
  #unannouncedWindowBytes: number | undefined;
  /** close() ran: the window claims nothing more. */
  #closed = false;

  /** Without `budget` the window is fixed and unbudgeted (the v1-v3 rules; the unit tests). */
  constructor(windowBytes: number, budget?: ReceiveBudget) {
    this.#windowBytes = windowBytes;
    this.#updateThresholdBytes = thresholdFor(windowBytes);
    this.#budget = budget?.budget;
    this.#claimedBytes = budget?.claimedBytes ?? 0;
    this.#tuning = budget?.tuning;
    if (this.#tuning) this.#epochStartMs = this.#tuning.nowMs();
  }

  /** The window the sender was last told of. */
  get windowBytes(): number {
    return this.#windowBytes;
  }

  /** Bytes received and not yet delivered. */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** Records `bytes` of DATA; throws ProtocolError(WindowExceeded) if the sender overran its credit. */
  received(bytes: number): void {
    // The sender's credit is W minus what it has sent and we have not returned; delivered but
    // unreturned bytes still count against it.
    if (this.#heldBytes + this.#unreturnedBytes + bytes > this.#windowBytes) {
      throw new ProtocolError(
        CloseCode.WindowExceeded,
        `peer sent ${bytes} bytes with ${this.#windowBytes - this.#heldBytes - this.#unreturnedBytes} bytes of credit`,
      );
    }
    this.#heldBytes += bytes;
  }

  /**
   * Records that `bytes` left this side; returns the credit to grant now, or 0 to wait for more.
   * With a grant, call takeGrowth(): tuning may have grown the window, to be announced first.
   */
  delivered(bytes: number): number {
    this.#heldBytes -= bytes;
    this.#unreturnedBytes += bytes;
    this.#deliveredBytes += bytes;
    if (this.#unreturnedBytes < this.#updateThresholdBytes) return 0;
    const grant = this.#unreturnedBytes;
    this.#unreturnedBytes = 0;
    this.#maybeGrow();
    return grant;
  }

  /** The window to announce with GROW before the next WINDOW, once; undefined when it has not grown since. */
  takeGrowth(): number | undefined {
    const grownTo = this.#unannouncedWindowBytes;
    this.#unannouncedWindowBytes = undefined;
    return grownTo;
  }

  /** Returns every byte this window claimed from its budget; the stream is over. */
  close(): void {
    if (this.#budget && this.#claimedBytes > 0) this.#budget.release(this.#claimedBytes);
    this.#claimedBytes = 0;
    this.#closed = true;
  }

  #maybeGrow(): void {
    const tuning = this.#tuning;
    const budget = this.#budget;
    if (!tuning || !budget || this.#closed) return;
    const inEpochBytes = this.#deliveredBytes - this.#epochStartDeliveredBytes;
    if (inEpochBytes <= this.#windowBytes / 2) return;
    const nowMs = tuning.nowMs();
    const rttMs = tuning.rttMs();
    const elapsedMs = nowMs - this.#epochStartMs;
    this.#epochStartMs = nowMs;
    this.#epochStartDeliveredBytes = this.#deliveredBytes;
    if (rttMs === undefined || elapsedMs >= GROWTH_ROUND_TRIPS * (inEpochBytes / this.#windowBytes) * rttMs) return;
    const targetBytes = Math.min(2 * this.#windowBytes, tuning.maxWindowBytes);
    if (targetBytes <= this.#windowBytes) return;
    const extraBytes = budget.claim(targetBytes - this.#windowBytes);
    if (extraBytes === 0) return;
    this.#claimedBytes += extraBytes;
    this.#windowBytes += extraBytes;
    this.#updateThresholdBytes = thresholdFor(this.#windowBytes);
    this.#unannouncedWindowBytes = this.#windowBytes;
  }
}

function thresholdFor(windowBytes: number): number {
  return creditBatchBytes(windowBytes, true);
}

/**
 * Most credit a receiver holds back before it returns it: a quarter of its window, and since v4
 * at most MAX_CREDIT_BATCH_BYTES, which this build's receivers keep to on every tunnel (returning
 * credit sooner is always allowed). A sender must be able to have this much in flight, or the
 * receiver never returns any: a v2 or v3 receiver batches a whole quarter of its window.
 */
export function creditBatchBytes(windowBytes: number, capped: boolean): number {
  const quarter = Math.max(1, Math.floor(windowBytes / WINDOW_UPDATE_DIVISOR));
  return capped ? Math.min(quarter, MAX_CREDIT_BATCH_BYTES) : quarter;
}

/**
 * Where a sender's own bound comes from: its budget; how much of the peer's window it may use
 * without claiming; what it claims at first (at least floorBytes, however full the budget).
 */
export type SendBudget = { budget: WindowBudget; unclaimedBytes: number; initialClaimBytes: number; floorBytes?: number };

/**
 * The sending half: how many bytes may be sent now, and a way to wait for more. What it may have
 * in flight (sent, not yet credited back) is the peer's window, or less: its own limit, claimed
 * from its budget. In-flight bytes sit in the sender's WebSocket queue, which WebSocket.send()
 * grows without limit, so a sender bounds them itself, whatever window the peer announces. The
 * limit starts small and doubles each time it is what stops the sender (the peer's window would
 * let it send more), as far as the budget has room: a peer announcing a large window claims the
 * budget only as its stream really has that much in flight.
 */
export class SendCredit {
  #availableBytes: number;
  /** The receiver's announced window: honest credit never adds up to more. */
  #windowBytes: number;
  /** The most this side lets itself have in flight: the window, or less when its budget is short. */
  #limitBytes: number;
  readonly #budget: SendBudget | undefined;
  #claimedBytes = 0;
  /** release() ran: the stream is over, and nothing more is claimed for it. */
  #released = false;
  #waiter: (() => void) | undefined;

  /** `initialBytes`: the credit to start with, the whole window unless bytes are already in flight. */
  constructor(initialBytes: number, windowBytes: number, budget?: SendBudget) {
    this.#availableBytes = initialBytes;
    this.#windowBytes = windowBytes;
    this.#budget = budget;
    if (!budget) {
      this.#limitBytes = windowBytes;
      return;
    }
    const unclaimedBytes = Math.min(windowBytes, budget.unclaimedBytes);
    const floorBytes = Math.max(0, (budget.floorBytes ?? 0) - unclaimedBytes);
    const wantBytes = Math.min(windowBytes - unclaimedBytes, Math.max(budget.initialClaimBytes, floorBytes));
    this.#claimedBytes = budget.budget.claim(wantBytes, floorBytes);
    this.#limitBytes = unclaimedBytes + this.#claimedBytes;
  }

  /** Credit the peer has given: what its window still lets us send. */
  get availableBytes(): number {
    return this.#availableBytes;
  }

  /**
   * What may be sent now: the credit, less what this side's own limit keeps back. When the limit
   * is what stops us, it first claims more of the budget (doubling), so every sender that asks
   * grows its limit only when it has a use for it.
   */
  get sendableBytes(): number {
    if (this.#limitBytes < this.#windowBytes && this.#availableBytes > 0 && this.#availableBytes <= this.#windowBytes - this.#limitBytes) this.#raiseLimit();
    return Math.max(0, this.#availableBytes - (this.#windowBytes - this.#limitBytes));
  }

  /** Sent and not yet credited back. */
  get inFlightBytes(): number {
    return this.#windowBytes - this.#availableBytes;
  }

  get limitBytes(): number {
    return this.#limitBytes;
  }

  /**
   * Adds credit from a WINDOW frame and wakes a waiting sender. Throws ProtocolError when the
   * grant would exceed the receiver's own window: such a peer would let our unacknowledged
   * sends (which WebSocket.send buffers without limit) grow past every bound.
   */
  grant(bytes: number): void {
    if (this.#availableBytes + bytes > this.#windowBytes) {
      throw new ProtocolError(CloseCode.WindowExceeded, `peer granted ${bytes} bytes beyond its ${this.#windowBytes}-byte window`);
    }
    this.#availableBytes += bytes;
    this.#wake();
  }

  /** A GROW frame (v4): the receiver's window is now `windowBytes`; the difference is new credit. */
  grow(windowBytes: number): void {
    if (windowBytes <= this.#windowBytes) {
      throw new ProtocolError(CloseCode.UnexpectedFrame, `GROW to ${windowBytes} bytes does not grow the ${this.#windowBytes}-byte window`);
    }
    this.#availableBytes += windowBytes - this.#windowBytes;
    this.#windowBytes = windowBytes;
    // Only a v4 receiver sends GROW, and it returns credit in batches of a quarter of its grown
    // window (at most MAX_CREDIT_BATCH_BYTES): keep that much in flight however full the budget,
    // as the first limit's floor does for the window it started with, or no credit ever comes back.
    this.#claimAtLeast(creditBatchBytes(windowBytes, true));
    this.#wake();
  }

  /** Spends credit; the caller never sends more than sendableBytes. */
  consume(bytes: number): void {
    if (bytes > this.sendableBytes) throw new RangeError(`spending ${bytes} bytes of ${this.sendableBytes} sendable`);
    this.#availableBytes -= bytes;
  }

  /** Resolves once something may be sent (at once if it may). */
  whenAvailable(): Promise<void> {
    if (this.sendableBytes > 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#waiter;
      this.#waiter = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** Wakes any waiter without granting credit, so a sender that is shutting down can leave; returns what the limit claimed. */
  release(): void {
    this.#released = true;
    if (this.#budget && this.#claimedBytes > 0) this.#budget.budget.release(this.#claimedBytes);
    this.#claimedBytes = 0;
    this.#wake();
  }

  /** Raises the limit to `limitBytes`, past the budget if it must (by at most MAX_CREDIT_BATCH_BYTES per stream). */
  #claimAtLeast(limitBytes: number): void {
    const shortBytes = Math.min(limitBytes, this.#windowBytes) - this.#limitBytes;
    if (!this.#budget || this.#released || shortBytes <= 0) return;
    const extraBytes = this.#budget.budget.claim(shortBytes, shortBytes);
    this.#claimedBytes += extraBytes;
    this.#limitBytes += extraBytes;
  }

  #raiseLimit(): void {
    if (!this.#budget) {
      this.#limitBytes = this.#windowBytes;
      return;
    }
    if (this.#released) return;
    const extraBytes = this.#budget.budget.claim(Math.min(this.#windowBytes - this.#limitBytes, Math.max(this.#limitBytes, BUDGET_FLOOR_BYTES)));
    this.#claimedBytes += extraBytes;
    this.#limitBytes += extraBytes;
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }
}
