// The tunnel's round trip from PING and PONG (worker/protocol/round-trip.ts; protocol v4): how often a PING
// is due, which PONG is a sample, and the minimum over the last 8 samples. The clock is passed in,
// so every time here is a number the test chose.

import { describe, expect, it } from "vitest";
import { PING_INTERVAL_MS, PING_LOST_MS, RoundTrip } from "../../worker/protocol/round-trip.ts";

/** Sends a PING at `sentAtMs` and answers it at `sentAtMs + rttMs`; returns the next free time. */
function sample(roundTrip: RoundTrip, sentAtMs: number, rttMs: number): number {
  const id = roundTrip.pingDue(sentAtMs);
  expect(id, `a PING is due at ${sentAtMs} ms`).toBeDefined();
  roundTrip.pong(id ?? -1, sentAtMs + rttMs);
  return sentAtMs + Math.max(rttMs, PING_INTERVAL_MS);
}

describe("RoundTrip.pingDue", () => {
  it("has a PING due at once, whatever the clock reads", () => {
    expect(new RoundTrip().pingDue(0)).toBeDefined();
    expect(new RoundTrip().pingDue(-5_000)).toBeDefined();
    expect(new RoundTrip().pingDue(123_456.789)).toBeDefined();
  });

  it("has at most one PING due per PING_INTERVAL_MS, the next one exactly PING_INTERVAL_MS after the last", () => {
    const roundTrip = new RoundTrip();
    const answered = (id: number | undefined, atMs: number) => {
      roundTrip.pong(id ?? -1, atMs);
      return id;
    };
    expect(answered(roundTrip.pingDue(10_000), 10_001)).toBe(1);
    expect(roundTrip.pingDue(10_002)).toBeUndefined();
    expect(roundTrip.pingDue(10_000 + PING_INTERVAL_MS - 0.001)).toBeUndefined();
    expect(answered(roundTrip.pingDue(10_000 + PING_INTERVAL_MS), 10_000 + PING_INTERVAL_MS + 1)).toBe(2);
    // The interval counts from the PING that went, not from when the previous one was due.
    expect(roundTrip.pingDue(10_000 + 2 * PING_INTERVAL_MS - 1)).toBeUndefined();
    expect(answered(roundTrip.pingDue(10_000 + 3 * PING_INTERVAL_MS + 500), 10_000 + 3 * PING_INTERVAL_MS + 501)).toBe(3);
    expect(roundTrip.pingDue(10_000 + 4 * PING_INTERVAL_MS + 499)).toBeUndefined();
  });

  it("sends no new PING while one awaits its PONG, until PING_LOST_MS says it is lost", () => {
    const roundTrip = new RoundTrip();
    expect(roundTrip.pingDue(0)).toBe(1);
    expect(roundTrip.pingDue(PING_LOST_MS - 1)).toBeUndefined();
    expect(roundTrip.pingDue(PING_LOST_MS)).toBe(2);
    // A path slower than the interval still gets its sample.
    roundTrip.pong(2, PING_LOST_MS + 3 * PING_INTERVAL_MS);
    expect(roundTrip.rttMs).toBe(3 * PING_INTERVAL_MS);
  });

  it("keeps the interval whether or not the PONG came", () => {
    const roundTrip = new RoundTrip();
    const id = roundTrip.pingDue(0);
    roundTrip.pong(id ?? -1, 5);
    expect(roundTrip.pingDue(6)).toBeUndefined();
    expect(roundTrip.pingDue(PING_INTERVAL_MS)).toBeDefined();
  });

  it("gives each PING a new id", () => {
    const roundTrip = new RoundTrip();
    const ids = new Set<number>();
    for (let step = 0; step < 100; step++) {
      const id = roundTrip.pingDue(step * PING_INTERVAL_MS) ?? -1;
      ids.add(id);
      roundTrip.pong(id, step * PING_INTERVAL_MS + 1);
    }
    expect(ids.size).toBe(100);
    expect(ids.has(-1)).toBe(false);
    for (const id of ids) expect(id >= 1 && id <= 0xffffffff).toBe(true);
  });
});

describe("RoundTrip.pong", () => {
  it("has no round trip before the first PONG", () => {
    const roundTrip = new RoundTrip();
    expect(roundTrip.rttMs).toBeUndefined();
    roundTrip.pingDue(0);
    expect(roundTrip.rttMs).toBeUndefined();
  });

  it("takes the time from the PING to its PONG as a sample", () => {
    const roundTrip = new RoundTrip();
    const id = roundTrip.pingDue(1_000);
    roundTrip.pong(id ?? -1, 1_037.5);
    expect(roundTrip.rttMs).toBe(37.5);
  });

  it("ignores a PONG whose id is not the PING in flight", () => {
    const roundTrip = new RoundTrip();
    const id = roundTrip.pingDue(0) ?? -1;
    roundTrip.pong(id + 1, 10);
    roundTrip.pong(0, 10);
    expect(roundTrip.rttMs).toBeUndefined();
    // The PING in flight still gets its sample when its own PONG comes.
    roundTrip.pong(id, 40);
    expect(roundTrip.rttMs).toBe(40);
  });

  it("ignores an unsolicited PONG before any PING", () => {
    const roundTrip = new RoundTrip();
    roundTrip.pong(1, 10);
    expect(roundTrip.rttMs).toBeUndefined();
    // ...and it did not consume the first PING's answer either.
    roundTrip.pong(roundTrip.pingDue(100) ?? -1, 130);
    expect(roundTrip.rttMs).toBe(30);
  });

  it("takes one sample per PING: a repeated PONG is ignored", () => {
    const roundTrip = new RoundTrip();
    const id = roundTrip.pingDue(0) ?? -1;
    roundTrip.pong(id, 50);
    roundTrip.pong(id, 5); // a duplicate must not count as a 5 ms sample from the same PING
    expect(roundTrip.rttMs).toBe(50);
  });

  it("ignores the PONG of a PING taken as lost and replaced, and samples the newer one", () => {
    const roundTrip = new RoundTrip();
    const first = roundTrip.pingDue(0) ?? -1;
    const second = roundTrip.pingDue(PING_LOST_MS) ?? -1;
    roundTrip.pong(first, PING_LOST_MS + 1); // would be a 10001 ms sample
    expect(roundTrip.rttMs).toBeUndefined();
    roundTrip.pong(second, PING_LOST_MS + 20);
    expect(roundTrip.rttMs).toBe(20);
  });

  it("never takes a negative sample from a clock that stepped back", () => {
    const roundTrip = new RoundTrip();
    roundTrip.pong(roundTrip.pingDue(1_000) ?? -1, 900);
    expect(roundTrip.rttMs).toBe(0);
  });
});

describe("RoundTrip.rttMs", () => {
  it("is the minimum of the samples, not their mean or the latest", () => {
    const roundTrip = new RoundTrip();
    let atMs = 0;
    for (const rttMs of [80, 30, 120, 45]) atMs = sample(roundTrip, atMs, rttMs);
    expect(roundTrip.rttMs).toBe(30);
  });

  it("keeps the lowest sample of the tunnel's life: samples under load, however many, never raise it", () => {
    const roundTrip = new RoundTrip();
    let atMs = 0;
    atMs = sample(roundTrip, atMs, 10); // the idle tunnel's PING
    for (let count = 0; count < 100; count++) {
      atMs = sample(roundTrip, atMs, 90 + count); // PINGs queued behind a stream's DATA
      expect(roundTrip.rttMs).toBe(10);
    }
    sample(roundTrip, atMs, 5);
    expect(roundTrip.rttMs).toBe(5); // a lower sample counts at once
  });
});
