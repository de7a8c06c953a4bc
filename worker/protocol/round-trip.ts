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
/**
 * The lowest sample of the tunnel's life, not a mean nor a recent window: a PING queues behind
 * the DATA in flight on a busy tunnel, and every sample under load is longer by the path's queue.
 * The window a stream needs is the path's rate times its unloaded round trip; one sized to the
 * loaded one only fills the queue further (measured: windows of 4 MiB on a 250 KB path). A
 * tunnel's path does not change under it, and a tunnel lives minutes, so its least sample stands.
 */
export class RoundTrip {
  #nextId = 1;
  /** The PING awaiting its PONG, and when it left. */
  #pending: { id: number; sentAtMs: number } | undefined;
  #lastPingAtMs = Number.NEGATIVE_INFINITY;
  #lowestMs: number | undefined;

  /** The round trip in ms, or undefined before the first PONG. */
  get rttMs(): number | undefined {
    return this.#lowestMs;
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
    const sampleMs = Math.max(0, nowMs - pending.sentAtMs);
    this.#lowestMs = this.#lowestMs === undefined ? sampleMs : Math.min(this.#lowestMs, sampleMs);
  }
}
