// Several edges (--edge given more than once, or a list in the config file's "edge"): each with a
// warm pool of its own, which is also its health (tunnel-pool.ts: failing from a failed attempt,
// backing off, probed, well again once a tunnel lives or an OPEN is answered). A new stream goes
// to the healthy edge carrying the fewest streams, ties taken in turn; open-attempts.ts tries a
// failed open again on another before the client hears of it. One edge is the same set of one.

import type { AgentConfig } from "../config/config.ts";
import type { Logger } from "../log.ts";
import { TunnelPool, type PoolTimings } from "./tunnel-pool.ts";

/** One edge: where its tunnels go, its pool (and with it its health), and the streams it carries now. */
export class Edge {
  readonly tunnelUrl: string;
  /** The edge as the user gave it, for messages and the status page (never carries the token). */
  readonly edgeLabel: string;
  readonly pool: TunnelPool;
  /** Streams whose open is under way or done on this edge, not yet over. */
  openStreams = 0;

  constructor(pool: TunnelPool) {
    this.pool = pool;
    this.tunnelUrl = pool.edge.tunnelUrl;
    this.edgeLabel = pool.edge.edgeLabel;
  }
}

/** One edge as the status page shows it (EdgeSet.status). */
export type EdgeStatus = {
  edgeLabel: string;
  /** New streams go to it (with none healthy, streams still try the failing ones). */
  healthy: boolean;
  /** Failed attempts in a row; 0 when healthy. */
  consecutiveFailures: number;
  /** Date.now() of its next attempt, while failing and waiting out its backoff (absent while an attempt is under way). */
  nextRetryAt?: number;
  /** Streams opening or open on it now. */
  openStreams: number;
  /** Warm tunnels ready in its pool now (spares, and tunnels taken back after their stream). */
  poolSpares: number;
};

/** What the chooser weighs of an edge. */
export type EdgeStanding = { healthy: boolean; consecutiveFailures: number; nextRetryAtMs: number | undefined; openStreams: number };

/**
 * The index in `standings` of the edge a new stream should go to (undefined for none): the healthy
 * one with the fewest open streams; with none healthy, the failing one likeliest to be back (fewest
 * failures in a row, then the soonest retry). Ties go to the first at or after `turn` (modulo the
 * length), so that equal edges take turns.
 *
 * Fewest open streams rather than plain turns: a long download on one edge sends the next
 * streams to the other, and an edge that answers slowly holds its streams longer and so gets fewer.
 */
export function chooseEdge(standings: readonly EdgeStanding[], turn: number): number | undefined {
  const count = standings.length;
  let best: number | undefined;
  for (let step = 0; step < count; step++) {
    const index = (((turn + step) % count) + count) % count;
    const candidate = standings[index] as EdgeStanding;
    if (best === undefined || isBetter(candidate, standings[best] as EdgeStanding)) best = index;
  }
  return best;
}

/** Strictly better: a tie keeps the earlier in turn. */
function isBetter(candidate: EdgeStanding, best: EdgeStanding): boolean {
  if (candidate.healthy !== best.healthy) return candidate.healthy;
  if (candidate.healthy) return candidate.openStreams < best.openStreams;
  if (candidate.consecutiveFailures !== best.consecutiveFailures) return candidate.consecutiveFailures < best.consecutiveFailures;
  const candidateRetry = candidate.nextRetryAtMs ?? 0;
  const bestRetry = best.nextRetryAtMs ?? 0;
  if (candidateRetry !== bestRetry) return candidateRetry < bestRetry;
  return candidate.openStreams < best.openStreams;
}

/** Every configured edge with its pool. */
export class EdgeSet {
  readonly edges: readonly Edge[];
  /** Where the next tie goes: one past the last edge chosen. */
  #turn = 0;

  constructor(config: AgentConfig, log: Logger, timings?: PoolTimings) {
    const hasAlternatives = config.edges.length > 1;
    this.edges = config.edges.map((target) => new Edge(new TunnelPool(config, log, timings, { tunnelUrl: target.tunnelUrl, edgeLabel: target.edgeLabel, hasAlternatives })));
  }

  /** More than one edge: log lines name the edge a stream went through. */
  get isSeveral(): boolean {
    return this.edges.length > 1;
  }

  /** Opens every edge's spares. */
  start(): void {
    for (const edge of this.edges) edge.pool.start();
  }

  /** Closes every pool: no new spares, the ready ones closed. */
  close(): void {
    for (const edge of this.edges) edge.pool.close();
  }

  /**
   * The edge for a stream's next attempt among those `excluded` does not rule out (chooseEdge), or
   * undefined when it rules out all. The other pools hear of the client (TunnelPool.noteClient:
   * they do not shrink, and a failing one is probed); the chosen one hears of it when taken from.
   */
  choose(excluded: (edge: Edge) => boolean = () => false): Edge | undefined {
    const candidates = this.edges.filter((edge) => !excluded(edge));
    const index = chooseEdge(candidates.map(standingOf), this.#turnAmong(candidates));
    const chosen = index === undefined ? undefined : candidates[index];
    if (chosen === undefined) return undefined;
    this.#turn = this.edges.indexOf(chosen) + 1;
    for (const edge of this.edges) if (edge !== chosen) edge.pool.noteClient();
    return chosen;
  }

  /** The edges in the order a request that any of them may answer tries them (DNS over the edge): best first. */
  inOrder(): Edge[] {
    const left = [...this.edges];
    const ordered: Edge[] = [];
    while (left.length > 0) {
      const index = chooseEdge(left.map(standingOf), this.#turnAmong(left)) as number;
      ordered.push(...left.splice(index, 1));
    }
    return ordered;
  }

  /**
   * Each edge's health, load and spares, in the order configured: what the status page shows.
   * A snapshot; call it again for the next.
   */
  status(): EdgeStatus[] {
    return this.edges.map((edge) => {
      const health = edge.pool.health;
      return {
        edgeLabel: edge.edgeLabel,
        healthy: health.healthy,
        consecutiveFailures: health.consecutiveFailures,
        ...(health.nextRetryAtMs === undefined ? {} : { nextRetryAt: health.nextRetryAtMs }),
        openStreams: edge.openStreams,
        poolSpares: edge.pool.readyCount,
      };
    });
  }

  /** #turn as an index into `candidates`: the first candidate at or after the edge it names. */
  #turnAmong(candidates: readonly Edge[]): number {
    for (let step = 0; step < this.edges.length; step++) {
      const index = candidates.indexOf(this.edges[(this.#turn + step) % this.edges.length] as Edge);
      if (index >= 0) return index;
    }
    return 0;
  }
}

function standingOf(edge: Edge): EdgeStanding {
  const health = edge.pool.health;
  return { healthy: health.healthy, consecutiveFailures: health.consecutiveFailures, nextRetryAtMs: health.nextRetryAtMs, openStreams: edge.openStreams };
}
