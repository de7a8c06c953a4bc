// The status page's throughput ring (local-agent/status/throughput.ts): bytes land in the bucket
// of the time they moved, rates are per second, the bucket under way is left out, and what is
// older than the ring is gone.

import { describe, expect, it } from "vitest";
import { THROUGHPUT_BUCKETS, THROUGHPUT_BUCKET_MS, ThroughputSampler } from "../../local-agent/status/throughput.ts";

describe("ThroughputSampler", () => {
  it("keeps 10 minutes in 5 s buckets by default", () => {
    expect(THROUGHPUT_BUCKET_MS * THROUGHPUT_BUCKETS).toBe(10 * 60_000);
    expect(new ThroughputSampler().series(1_000_000)).toHaveLength(THROUGHPUT_BUCKETS);
  });

  it("averages each bucket's bytes over its span, oldest first, without the bucket under way", () => {
    const sampler = new ThroughputSampler(1_000, 4);
    sampler.record(10_000, 100, 2_000);
    sampler.record(10_999, 50, 0);
    sampler.record(12_500, 0, 700);
    sampler.record(13_200, 999, 999); // the bucket under way at 13_500
    expect(sampler.series(13_500)).toEqual([
      { startedAtMs: 9_000, upBytesPerSecond: 0, downBytesPerSecond: 0 },
      { startedAtMs: 10_000, upBytesPerSecond: 150, downBytesPerSecond: 2_000 },
      { startedAtMs: 11_000, upBytesPerSecond: 0, downBytesPerSecond: 0 },
      { startedAtMs: 12_000, upBytesPerSecond: 0, downBytesPerSecond: 700 },
    ]);
  });

  it("forgets a bucket once the ring has come round, however long nothing moved", () => {
    const sampler = new ThroughputSampler(1_000, 3);
    sampler.record(5_000, 10, 10);
    // 3 buckets later the slot is the same one: the old bytes must not be added to the new.
    sampler.record(8_000, 1, 1);
    expect(sampler.series(9_000)).toEqual([
      { startedAtMs: 6_000, upBytesPerSecond: 0, downBytesPerSecond: 0 },
      { startedAtMs: 7_000, upBytesPerSecond: 0, downBytesPerSecond: 0 },
      { startedAtMs: 8_000, upBytesPerSecond: 1, downBytesPerSecond: 1 },
    ]);
    // An hour later, nothing is left, and the series is still 3 buckets.
    expect(sampler.series(3_609_000).every((bucket) => bucket.upBytesPerSecond === 0 && bucket.downBytesPerSecond === 0)).toBe(true);
    expect(sampler.series(3_609_000)).toHaveLength(3);
  });

  it("takes a clock that went back without counting into a newer bucket", () => {
    const sampler = new ThroughputSampler(1_000, 3);
    sampler.record(20_000, 5, 5);
    sampler.record(17_000, 7, 7); // same slot as 20_000, an older bucket: it starts over
    expect(sampler.series(18_000).at(-1)).toEqual({ startedAtMs: 17_000, upBytesPerSecond: 7, downBytesPerSecond: 7 });
    expect(sampler.series(21_000).at(-1)).toEqual({ startedAtMs: 20_000, upBytesPerSecond: 0, downBytesPerSecond: 0 });
  });

  it("refuses a span or count that is not positive", () => {
    expect(() => new ThroughputSampler(0, 10)).toThrow(RangeError);
    expect(() => new ThroughputSampler(1_000, 0)).toThrow(RangeError);
  });
});
