// Credit-based flow control, shared by the edge and the agent (docs/protocol.md, "Flow control").
//
// Each direction of a stream has a receive window W announced by its receiver. The sender may
// have at most W bytes of DATA that the receiver has not yet delivered onward; the receiver
// returns credit with WINDOW frames once bytes have left it (written to the TCP socket and
// accepted by the kernel). So neither side ever holds more than W unsent bytes per direction,
// whatever the far reader does: a stalled reader stops the credit, the credit stops the sender's
// reads, and TCP backpressure stops the source.

import { CloseCode, ProtocolError } from "./protocol.ts";

/**
 * Credit is returned once this fraction of the window has been delivered: fewer WINDOW frames
 * than one per DATA, while the sender still has three quarters of a window in flight.
 */
const WINDOW_UPDATE_DIVISOR = 4;

/** The receiving half: counts bytes in, bytes delivered, and decides when to return credit. */
export class ReceiveWindow {
  readonly windowBytes: number;
  /** Received and not yet delivered onward: what this side is holding. */
  #heldBytes = 0;
  /** Delivered but not yet returned to the sender as credit. */
  #unreturnedBytes = 0;
  readonly #updateThresholdBytes: number;

  constructor(windowBytes: number) {
    this.windowBytes = windowBytes;
    this.#updateThresholdBytes = Math.max(1, Math.floor(windowBytes / WINDOW_UPDATE_DIVISOR));
  }

  /** Bytes received and not yet delivered. */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** Records `bytes` of DATA; throws ProtocolError(WindowExceeded) if the sender overran its credit. */
  received(bytes: number): void {
    // The sender's credit is W minus what it has sent and we have not returned; delivered but
    // unreturned bytes still count against it.
    if (this.#heldBytes + this.#unreturnedBytes + bytes > this.windowBytes) {
      throw new ProtocolError(
        CloseCode.WindowExceeded,
        `peer sent ${bytes} bytes with ${this.windowBytes - this.#heldBytes - this.#unreturnedBytes} bytes of credit`,
      );
    }
    this.#heldBytes += bytes;
  }

  /** Records that `bytes` left this side; returns the credit to grant now, or 0 to wait for more. */
  delivered(bytes: number): number {
    this.#heldBytes -= bytes;
    this.#unreturnedBytes += bytes;
    if (this.#unreturnedBytes < this.#updateThresholdBytes) return 0;
    const grant = this.#unreturnedBytes;
    this.#unreturnedBytes = 0;
    return grant;
  }
}

/** The sending half: how many bytes may be sent now, and a way to wait for more. */
export class SendCredit {
  #availableBytes: number;
  /** The receiver's announced window: honest credit never adds up to more. */
  readonly #windowBytes: number;
  #waiter: (() => void) | undefined;

  constructor(initialBytes: number, windowBytes: number) {
    this.#availableBytes = initialBytes;
    this.#windowBytes = windowBytes;
  }

  get availableBytes(): number {
    return this.#availableBytes;
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
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  /** Spends credit; the caller never sends more than availableBytes. */
  consume(bytes: number): void {
    if (bytes > this.#availableBytes) throw new RangeError(`spending ${bytes} bytes of ${this.#availableBytes} credit`);
    this.#availableBytes -= bytes;
  }

  /** Resolves once some credit is available (at once if there is). */
  whenAvailable(): Promise<void> {
    if (this.#availableBytes > 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#waiter;
      this.#waiter = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** Wakes any waiter without granting credit, so a sender that is shutting down can leave. */
  release(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }
}
