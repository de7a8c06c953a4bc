// Credit-based flow control (worker/protocol/flow-control.ts; docs/protocol.md section 5): the receiver's
// accounting and credit cadence, the sender's credit and its waiters.

import { describe, expect, it } from "vitest";
import { ReceiveWindow, SendCredit } from "../../worker/protocol/flow-control.ts";
import { CloseCode, DEFAULT_WINDOW_BYTES, MIN_WINDOW_BYTES, ProtocolError } from "../../worker/protocol/index.ts";

/** The smallest window a peer may announce: credit returns in batches of at least 4096 bytes. */
const W = MIN_WINDOW_BYTES;

/** Lets queued promise callbacks and timers run. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

function expectWindowExceeded(action: () => void): void {
  let thrown: unknown;
  try {
    action();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(ProtocolError);
  expect((thrown as ProtocolError).closeCode).toBe(CloseCode.WindowExceeded);
}

describe("ReceiveWindow", () => {
  it("accepts DATA up to exactly the window and holds it", () => {
    const window = new ReceiveWindow(W);
    window.received(W - 1);
    window.received(1);
    expect(window.heldBytes).toBe(W);
  });

  it("refuses DATA beyond the window with 4429 and leaves its count unchanged", () => {
    const window = new ReceiveWindow(W);
    window.received(W - 10);
    expectWindowExceeded(() => window.received(11));
    expect(window.heldBytes).toBe(W - 10);
    window.received(10);
    expectWindowExceeded(() => window.received(1));
  });

  it("refuses a single DATA larger than the whole window", () => {
    expectWindowExceeded(() => new ReceiveWindow(W).received(W + 1));
  });

  it("still counts delivered bytes against the sender until their credit is returned", () => {
    const window = new ReceiveWindow(W);
    window.received(W);
    expect(window.delivered(4095)).toBe(0);
    expect(window.heldBytes).toBe(W - 4095);
    // 4095 bytes left this side but were never credited back: the sender has no credit.
    expectWindowExceeded(() => window.received(1));
    expect(window.delivered(1)).toBe(4096);
    window.received(4096);
    expectWindowExceeded(() => window.received(1));
  });

  it("returns credit once a quarter window has been delivered, as one grant of everything unreturned", () => {
    const window = new ReceiveWindow(W);
    window.received(W);
    expect(window.delivered(1000)).toBe(0);
    expect(window.delivered(1000)).toBe(0);
    expect(window.delivered(2095)).toBe(0); // 4095: one short of W/4
    expect(window.delivered(3000)).toBe(7095); // crosses W/4: all of it goes back at once
    expect(window.delivered(4095)).toBe(0); // the count started again from 0
    expect(window.delivered(1)).toBe(4096);
    expect(window.heldBytes).toBe(W - 7095 - 4096);
  });

  it("grants in batches of at least 262144 bytes with the default 1 MiB window", () => {
    const window = new ReceiveWindow(DEFAULT_WINDOW_BYTES);
    window.received(DEFAULT_WINDOW_BYTES);
    const grants: number[] = [];
    for (let delivered = 0; delivered < DEFAULT_WINDOW_BYTES; delivered += 16_384) {
      const grant = window.delivered(16_384);
      if (grant > 0) grants.push(grant);
    }
    expect(grants).toEqual([262_144, 262_144, 262_144, 262_144]);
    expect(window.heldBytes).toBe(0);
  });

  it("rounds the threshold down for a window that is not a multiple of 4", () => {
    const window = new ReceiveWindow(W + 3);
    window.received(W + 3);
    expect(window.delivered(4095)).toBe(0);
    expect(window.delivered(1)).toBe(4096);
  });

  it("returns credit on every delivery when a quarter window is under one byte", () => {
    const window = new ReceiveWindow(3);
    window.received(3);
    expect(window.delivered(1)).toBe(1);
    expect(window.delivered(2)).toBe(2);
  });
});

describe("SendCredit", () => {
  it("starts with the initial credit and spends it", () => {
    const credit = new SendCredit(W, W);
    expect(credit.availableBytes).toBe(W);
    credit.consume(1000);
    credit.consume(0);
    expect(credit.availableBytes).toBe(W - 1000);
  });

  it("refuses to spend more than it has with a RangeError, not a protocol error", () => {
    const credit = new SendCredit(100, W);
    expect(() => credit.consume(101)).toThrow(RangeError);
    expect(credit.availableBytes).toBe(100);
    credit.consume(100);
    expect(credit.availableBytes).toBe(0);
  });

  it("adds granted credit up to the receiver's window", () => {
    const credit = new SendCredit(W, W);
    credit.consume(W);
    credit.grant(4096);
    credit.grant(W - 4096);
    expect(credit.availableBytes).toBe(W);
  });

  it("refuses with 4429 a grant that would lift credit above the window, and keeps its credit", () => {
    const credit = new SendCredit(W, W);
    expectWindowExceeded(() => credit.grant(1));
    credit.consume(5000);
    expectWindowExceeded(() => credit.grant(5001));
    expect(credit.availableBytes).toBe(W - 5000);
  });

  it("whenAvailable resolves at once while there is credit", async () => {
    const credit = new SendCredit(1, W);
    let resolved = false;
    void credit.whenAvailable().then(() => (resolved = true));
    await settle();
    expect(resolved).toBe(true);
  });

  it("whenAvailable waits for a grant when credit is spent", async () => {
    const credit = new SendCredit(10, W);
    credit.consume(10);
    let resolved = false;
    void credit.whenAvailable().then(() => (resolved = true));
    await settle();
    expect(resolved).toBe(false);
    credit.grant(4096);
    await settle();
    expect(resolved).toBe(true);
    expect(credit.availableBytes).toBe(4096);
  });

  it("wakes every waiter with one grant", async () => {
    const credit = new SendCredit(0, W);
    const woken: number[] = [];
    void credit.whenAvailable().then(() => woken.push(1));
    void credit.whenAvailable().then(() => woken.push(2));
    void credit.whenAvailable().then(() => woken.push(3));
    await settle();
    expect(woken).toEqual([]);
    credit.grant(1);
    await settle();
    expect(woken.sort()).toEqual([1, 2, 3]);
  });

  it("does not wake a waiter for a grant it refuses", async () => {
    const credit = new SendCredit(0, 100);
    let resolved = false;
    void credit.whenAvailable().then(() => (resolved = true));
    expectWindowExceeded(() => credit.grant(101));
    await settle();
    expect(resolved).toBe(false);
  });

  it("release wakes waiters without granting credit; a later wait waits again", async () => {
    const credit = new SendCredit(0, W);
    let first = false;
    void credit.whenAvailable().then(() => (first = true));
    credit.release();
    await settle();
    expect(first).toBe(true);
    expect(credit.availableBytes).toBe(0);

    let second = false;
    void credit.whenAvailable().then(() => (second = true));
    await settle();
    expect(second).toBe(false);
    credit.release();
    await settle();
    expect(second).toBe(true);
  });

  it("release with no waiter does nothing", () => {
    const credit = new SendCredit(5, W);
    credit.release();
    expect(credit.availableBytes).toBe(5);
  });
});

describe("an honest sender and receiver together", () => {
  it("never exceed the window, and all credit comes back once everything is delivered", () => {
    const windowBytes = 20_000;
    const receiver = new ReceiveWindow(windowBytes);
    const sender = new SendCredit(windowBytes, windowBytes);
    // A fixed pseudo-random sequence keeps the run reproducible.
    let seed = 12345;
    const next = (limit: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return 1 + (seed % limit);
    };
    let held = 0;
    let sent = 0;
    for (let step = 0; step < 5000; step++) {
      if (sender.availableBytes > 0 && next(2) === 1) {
        const size = Math.min(sender.availableBytes, next(3000));
        sender.consume(size);
        receiver.received(size);
        held += size;
        sent += size;
      } else if (held > 0) {
        const size = Math.min(held, next(3000));
        held -= size;
        const grant = receiver.delivered(size);
        if (grant > 0) sender.grant(grant);
      }
      expect(receiver.heldBytes).toBe(held);
      expect(held).toBeLessThanOrEqual(windowBytes);
    }
    expect(sent).toBeGreaterThan(windowBytes * 10);
    // Drain: whatever is held goes out, and credit below the threshold stays unreturned.
    const grant = receiver.delivered(held);
    if (grant > 0) sender.grant(grant);
    expect(windowBytes - sender.availableBytes).toBeLessThan(windowBytes / 4);
  });
});
