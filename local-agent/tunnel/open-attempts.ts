// Where each attempt at one stream's open goes, and whether a failed attempt may be tried again
// before the client hears of it (docs/protocol.md §4, "Several edges"): a warm tunnel that died as
// it was taken, or an upgrade that failed (refused, unreachable, timed out), goes on to another
// edge, or to a new tunnel on the same one, each edge at most once warm and once new. An answer
// from the edge (an OPENED with any status, a RESET, a broken frame) is never tried again: a
// destination's refusal is the destination's answer, not the edge's failure.

import type { AgentConfig } from "../config/config.ts";
import type { Edge, EdgeSet } from "./edge-set.ts";
import type { OpenRoute } from "./stream-open.ts";
import type { FailureKind } from "./tunnel-pool.ts";

/**
 * Longest a new tunnel's upgrade may take while another edge is left to try (never more than half
 * of what is left of --open-timeout-ms): the rest of the budget is that edge's. A Worker answers
 * the upgrade before its dial completes (worker/tunnel/tunnel-endpoint.ts), so the 101 takes the
 * TCP, TLS and HTTP round trips only: well under a second on any working link.
 */
export const FAILOVER_HANDSHAKE_TIMEOUT_MS = 5_000;

/**
 * Errors of a connect that never completed: no request left this machine, so no edge can have
 * dialed anything. Any other failure may come after the upgrade request was written.
 */
const NOT_CONNECTED_CODES: ReadonlySet<string> = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL", "ENOTFOUND", "EAI_AGAIN"]);

/** Whether a tunnel error with `code` (a Node error code) means the request never left this machine. */
export function neverConnected(code: string | undefined): boolean {
  return code !== undefined && NOT_CONNECTED_CODES.has(code);
}

/** How one attempt failed, as far as the agent can tell. */
export type TunnelFailure = {
  cause: string;
  /** For the edge's backoff (tunnel-pool.ts): the edge answered (an HTTP status, a close frame), or nothing did. */
  kind: FailureKind;
  /**
   * The edge may have read the OPEN, dialed the destination and written the client's early bytes
   * to it. False only when no upgrade request left (neverConnected) or the edge refused the
   * upgrade with an HTTP status, which it does before it dials (tunnel-endpoint.ts).
   */
  mayHaveReachedDestination: boolean;
};

/**
 * Whether an open that failed this way may be tried again: not once the destination may have the
 * client's bytes (with --zero-rtt, its first bytes went with the OPEN), since sending them twice
 * could repeat what they ask for. A bare dial the destination may have seen carries nothing.
 */
export function mayRetry(failure: TunnelFailure, sentBeforeOpenedBytes: number): boolean {
  return !failure.mayHaveReachedDestination || sentBeforeOpenedBytes === 0;
}

/** One attempt: the route for sendOpen, and the edge it goes to (undefined without an edge set). */
export type Attempt = { route: OpenRoute; edge: Edge | undefined };

/** The attempts of one stream's open: which edge each goes to, and the count of streams each edge carries. */
export class OpenAttempts {
  readonly #config: AgentConfig;
  readonly #edges: EdgeSet | undefined;
  readonly #startedAtMs = Date.now();
  /** How each edge has been tried: "warm" only its pool's tunnel (a new one may follow), "new" a new tunnel. */
  readonly #tried = new Map<Edge, "warm" | "new">();
  /** The edge of the attempt under way, counted in its openStreams until the stream leaves it. */
  #current: Edge | undefined;
  #attempts = 0;
  /** The failed attempts, for the stream's log line. */
  readonly #failed: string[] = [];

  /** `edges` undefined (a stream opened without a running agent's edge set): one attempt, a new tunnel to the first edge. */
  constructor(config: AgentConfig, edges: EdgeSet | undefined) {
    this.#config = config;
    this.#edges = edges;
  }

  /** The edge of the attempt under way. */
  get current(): Edge | undefined {
    return this.#current;
  }

  /** The attempt after the last (the first, on the first call), or undefined when none is left. */
  next(): Attempt | undefined {
    const first = this.#attempts === 0;
    const edges = this.#edges;
    if (!edges) {
      if (!first) return undefined;
      this.#attempts++;
      return { edge: undefined, route: { tunnelUrl: this.#config.tunnelUrl, pool: undefined, handshakeTimeoutMs: this.#config.openTimeoutMs, mayWaitForFirstBytes: true } };
    }
    // The stream leaves the edge that failed it before the choice, which weighs the streams each carries.
    this.#leave();
    const edge = edges.choose((candidate) => this.#tried.get(candidate) === "new");
    if (!edge) return undefined;
    this.#attempts++;
    this.#current = edge;
    edge.openStreams++;
    const warmAllowed = !this.#tried.has(edge);
    const othersLeft = edges.edges.some((other) => other !== edge && this.#tried.get(other) !== "new");
    const leftMs = Math.max(1, this.#config.openTimeoutMs - (Date.now() - this.#startedAtMs));
    return {
      edge,
      route: {
        tunnelUrl: edge.tunnelUrl,
        pool: warmAllowed ? edge.pool : undefined,
        // The last attempt's upgrade has what the open has (the stream's own timer ends it).
        handshakeTimeoutMs: othersLeft ? Math.min(FAILOVER_HANDSHAKE_TIMEOUT_MS, Math.ceil(leftMs / 2)) : this.#config.openTimeoutMs,
        mayWaitForFirstBytes: first,
      },
    };
  }

  /** The attempt under way has its tunnel: `warm` from the pool, else a new one. */
  tunnelIs(warm: boolean): void {
    if (this.#current) this.#tried.set(this.#current, warm ? "warm" : "new");
  }

  /**
   * The attempt under way failed (`warm`: on a tunnel from the pool) in a way that may be tried
   * again: the next attempt, or undefined when none is left. The failure is kept for the stream's
   * log line when it was tried again.
   */
  retry(warm: boolean): Attempt | undefined {
    const whose = this.#current && this.#edges?.isSeveral ? `edge ${this.#current.edgeLabel}'s` : "a";
    const next = this.next();
    if (next) this.#failed.push(`${whose} ${warm ? "warm" : "new"} tunnel`);
    return next;
  }

  /** What the stream's log line says of the attempts that failed before the last: empty when none did. */
  describeFailures(): string {
    return this.#failed.length === 0 ? "" : ` (after ${this.#failed.join(", then ")} failed)`;
  }

  /** The stream is over, or left the edges (a direct fallback): its edge no longer counts it. Idempotent. */
  done(): void {
    this.#leave();
  }

  #leave(): void {
    if (this.#current) this.#current.openStreams--;
    this.#current = undefined;
  }
}
