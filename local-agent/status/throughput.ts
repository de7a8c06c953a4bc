// Bytes per second over the last minutes, for the status page's chart: a fixed ring of buckets
// (THROUGHPUT_BUCKETS of THROUGHPUT_BUCKET_MS), filled as bytes move, so no timer samples it and
// an agent that moves nothing does no work. Memory is the ring, whatever the traffic.

/** One bucket's span: fine enough to show a transfer's shape, coarse enough for a small ring. */
export const THROUGHPUT_BUCKET_MS = 5_000;
/** Buckets kept: 120 of 5 s, the last 10 minutes. */
export const THROUGHPUT_BUCKETS = 120;

/** One span of the chart: when it started, and the mean rate each way over it. */
export type ThroughputBucket = { startedAtMs: number; upBytesPerSecond: number; downBytesPerSecond: number };

export class ThroughputSampler {
  readonly bucketMs: number;
  readonly bucketCount: number;
  /** Which bucket (Date.now() / bucketMs, floored) each slot of the ring holds now. */
  readonly #bucketOfSlot: number[];
  readonly #upBytes: number[];
  readonly #downBytes: number[];

  constructor(bucketMs = THROUGHPUT_BUCKET_MS, bucketCount = THROUGHPUT_BUCKETS) {
    if (!(bucketMs > 0 && Number.isInteger(bucketCount) && bucketCount > 0)) throw new RangeError("a sampler needs a positive bucket span and count");
    this.bucketMs = bucketMs;
    this.bucketCount = bucketCount;
    this.#bucketOfSlot = new Array<number>(bucketCount).fill(Number.NaN);
    this.#upBytes = new Array<number>(bucketCount).fill(0);
    this.#downBytes = new Array<number>(bucketCount).fill(0);
  }

  /** Adds bytes that moved at `nowMs` to the bucket that time falls in. */
  record(nowMs: number, upBytes: number, downBytes: number): void {
    const bucket = Math.floor(nowMs / this.bucketMs);
    const slot = this.#slotOf(bucket);
    if (this.#bucketOfSlot[slot] !== bucket) {
      // The slot held a bucket a whole ring ago (or the clock went back): it starts over.
      this.#bucketOfSlot[slot] = bucket;
      this.#upBytes[slot] = 0;
      this.#downBytes[slot] = 0;
    }
    this.#upBytes[slot] = (this.#upBytes[slot] ?? 0) + upBytes;
    this.#downBytes[slot] = (this.#downBytes[slot] ?? 0) + downBytes;
  }

  /**
   * The last bucketCount whole buckets before the one `nowMs` falls in, oldest first, as bytes per
   * second; a bucket nothing moved in is 0. The bucket under way is left out: its rate would read
   * low until it is over.
   */
  series(nowMs: number): ThroughputBucket[] {
    const current = Math.floor(nowMs / this.bucketMs);
    const seconds = this.bucketMs / 1000;
    const buckets: ThroughputBucket[] = [];
    for (let bucket = current - this.bucketCount; bucket < current; bucket++) {
      const slot = this.#slotOf(bucket);
      const held = this.#bucketOfSlot[slot] === bucket;
      buckets.push({
        startedAtMs: bucket * this.bucketMs,
        upBytesPerSecond: held ? (this.#upBytes[slot] ?? 0) / seconds : 0,
        downBytesPerSecond: held ? (this.#downBytes[slot] ?? 0) / seconds : 0,
      });
    }
    return buckets;
  }

  #slotOf(bucket: number): number {
    return ((bucket % this.bucketCount) + this.bucketCount) % this.bucketCount;
  }
}
