// The tunnel's round trip, measured with PING and PONG (protocol v4), for the windows that grow
// to it (flow-control.ts). Shared by the edge and the agent; pure: the clock is passed in.

/** A PING is sent at most this often while streams want a fresh sample. */
export const PING_INTERVAL_MS = 1_000;
/**
 * A PING unanswered this long is taken as lost and replaced. Sooner, a new PING would discard the
 * pending one, and a path slower than PING_INTERVAL_MS (or a PING queued behind that much DATA)
 * would never yield a sample.
 */
export const PING_LOST_MS = 10 * PING_INTERVAL_MS;
/** Samples kept: the round trip used is their minimum. */
const SAMPLES_KEPT = 8;

/**
 * The minimum of the last few samples, not their mean: a PING queues behind the DATA in flight
 * on a busy tunnel, and the window a stream needs is the path's rate times its unloaded round
 * trip (a window sized to the loaded one only fills the queue further).
 */
export class RoundTrip {
  #nextId = 1;
  /** The PING awaiting its PONG, and when it left. */
  #pending: { id: number; sentAtMs: number } | undefined;
  #lastPingAtMs = Number.NEGATIVE_INFINITY;
  readonly #samplesMs: number[] = [];

  /** The round trip in ms, or undefined before the first PONG. */
  get rttMs(): number | undefined {
    return this.#samplesMs.length === 0 ? undefined : Math.min(...this.#samplesMs);
  }

  /** The id of a PING to send now, or undefined when one went less than PING_INTERVAL_MS ago or is still awaiting its PONG. */
  pingDue(nowMs: number): number | undefined {
    if (nowMs - this.#lastPingAtMs < PING_INTERVAL_MS) return undefined;
    if (this.#pending && nowMs - this.#pending.sentAtMs < PING_LOST_MS) return undefined;
    const id = this.#nextId;
    this.#nextId = (this.#nextId % 0xffffffff) + 1;
    this.#pending = { id, sentAtMs: nowMs };
    this.#lastPingAtMs = nowMs;
    return id;
  }

  /** A PONG arrived: a sample when it answers the PING in flight; any other id (a stale or unsolicited PONG) is ignored. */
  pong(id: number, nowMs: number): void {
    const pending = this.#pending;
    if (!pending || pending.id !== id) return;
    this.#pending = undefined;
    this.#samplesMs.push(Math.max(0, nowMs - pending.sentAtMs));
    if (this.#samplesMs.length > SAMPLES_KEPT) this.#samplesMs.shift();
  }
}
