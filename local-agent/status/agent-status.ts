// What the status page, /status.json and /metrics show of one running agent, gathered in one
// snapshot: its connections (connection-registry.ts), throughput, the warm pool, each edge's
// health and the Worker requests it made today. Found by the agent's config, as the warm pool
// is (tunnel/dialer.ts), so the dialer and the HTTP front door reach it without a parameter of
// its own. Nothing in it is a secret: no token, no password, no user name; edges are named by
// their URLs as configured, which never carry credentials (config-values.ts refuses them).

import type { AgentConfig } from "../config/config.ts";
import { Route } from "../config/routing.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";
import { CONNECTION_RESULTS, ConnectionRegistry, NON_ERROR_RESULTS, type ConnectionResult, type OpenConnection } from "./connection-registry.ts";
import type { ThroughputBucket } from "./throughput.ts";
import { FREE_PLAN_DAILY_REQUESTS, WorkerRequestCounter, edgeKey, workerRequests } from "./worker-requests.ts";

/** An edge's health: healthy or failing as its pool reports it, or unknown where nothing reports it. */
export type EdgeHealth = "healthy" | "failing" | "unknown";

/**
 * One configured edge as the edge set reports it; EdgeSet.status() (tunnel/edge-set.ts) gives
 * exactly this. Only the label is required: what is left out shows as unknown.
 */
export type EdgeStatus = {
  /** The edge as configured (its URL, never carrying credentials). */
  edgeLabel: string;
  healthy?: boolean;
  /** Failed tunnel attempts in a row. */
  consecutiveFailures?: number;
  /** Date.now() of the next attempt, while the edge's pool waits out its backoff. */
  nextRetryAt?: number;
  /** Streams opening or open on it now. */
  openStreams?: number;
  /** Warm tunnels ready in its pool now. */
  poolSpares?: number;
};

/** Where the parts this module does not own come from; the agent's wiring sets them. */
export type StatusSources = {
  /** Every configured edge, in the order configured. */
  edgeStatuses: () => EdgeStatus[];
};

/** Open connections listed in a snapshot at most; the rest are counted. */
export const MAX_LISTED_CONNECTIONS = 500;

/** A connection row: what OpenConnection holds, and its age. */
export type ConnectionView = OpenConnection & { ageMs: number };

export type EdgeView = {
  edge: string;
  health: EdgeHealth;
  consecutiveFailures: number | null;
  nextRetryAtMs: number | null;
  openStreams: number | null;
  poolSpares: number | null;
  workerRequestsToday: number;
};

/** Everything /status.json answers, and what the page and /metrics are made from. */
export type StatusSnapshot = {
  version: string;
  nowMs: number;
  startedAtMs: number;
  listen: string;
  connections: {
    open: number;
    openByRoute: Record<string, number>;
    /** The open connections, oldest first, at most MAX_LISTED_CONNECTIONS. */
    listed: ConnectionView[];
    unlisted: number;
    /** Connections ended since the start, by result (every result, 0 included). */
    ended: Record<ConnectionResult, number>;
    /** The ended ones that were errors, by kind, only those that happened. */
    errors: Partial<Record<ConnectionResult, number>>;
  };
  bytes: { upBytes: number; downBytes: number };
  throughput: { bucketMs: number; buckets: ThroughputBucket[] };
  pool: {
    size: number;
    /** Spares open and ready now, over every edge's pool; null while no edge reports its pool. */
    readySpares: number | null;
    /** Tunnels carrying a connection now: one per connection on the edge route (tunnels carry one stream at a time). */
    tunnelsInUse: number;
    maxStreamsPerTunnel: number;
  };
  edges: EdgeView[];
  workerRequests: { day: string; countingSinceMs: number; resetsAtMs: number; total: number; freePlanDailyLimit: number };
};

export class AgentStatus {
  readonly connections: ConnectionRegistry;
  readonly startedAtMs: number;
  readonly #config: AgentConfig;
  readonly #now: () => number;
  readonly #workerRequests: WorkerRequestCounter;
  #sources: StatusSources;

  /**
   * `startedAtMs` defaults to the process's start (the agent is its process; this object is made
   * on first use, which may be much later); the rest are for tests.
   */
  constructor(
    config: AgentConfig,
    options: { now?: () => number; startedAtMs?: number; workerRequests?: WorkerRequestCounter; connections?: ConnectionRegistry } = {},
  ) {
    this.#config = config;
    this.#now = options.now ?? Date.now;
    this.startedAtMs = options.startedAtMs ?? Math.round(performance.timeOrigin);
    this.connections = options.connections ?? new ConnectionRegistry(this.#now);
    this.#workerRequests = options.workerRequests ?? workerRequests;
    this.#sources = { edgeStatuses: () => config.edges.map((edge) => ({ edgeLabel: edge.edgeLabel })) };
  }

  /** Replaces the given sources: `statusFor(config).useSources({ edgeStatuses: () => edgeSet.status() })` once the edges run. */
  useSources(sources: Partial<StatusSources>): void {
    this.#sources = { ...this.#sources, ...sources };
  }

  /** The agent as it stands now; `listenPort`: the port it really listens on (the config may say 0, any free one). */
  snapshot(listenPort = this.#config.listenPort): StatusSnapshot {
    const nowMs = this.#now();
    const config = this.#config;
    const registry = this.connections;
    const ended = registry.endedByResult();
    const errors: Partial<Record<ConnectionResult, number>> = {};
    for (const result of CONNECTION_RESULTS) {
      if (!NON_ERROR_RESULTS.has(result) && ended[result] > 0) errors[result] = ended[result];
    }
    const openByRoute: Record<string, number> = { [Route.Edge]: 0, [Route.Direct]: 0 };
    for (const [route, count] of registry.openByRoute()) openByRoute[route] = count;
    const listed = registry.openConnections(MAX_LISTED_CONNECTIONS).map((connection) => ({ ...connection, ageMs: Math.max(0, nowMs - connection.startedAtMs) }));
    const requests = this.#workerRequests.today();
    const reports = this.#sources.edgeStatuses();
    const edges = reports.map(
      (edge): EdgeView => ({
        edge: edge.edgeLabel,
        health: edge.healthy === undefined ? "unknown" : edge.healthy ? "healthy" : "failing",
        consecutiveFailures: edge.consecutiveFailures ?? null,
        nextRetryAtMs: edge.nextRetryAt ?? null,
        openStreams: edge.openStreams ?? null,
        poolSpares: edge.poolSpares ?? null,
        workerRequestsToday: requests.byEdge.get(edgeKey(edge.edgeLabel)) ?? 0,
      }),
    );
    const spares = reports.filter((edge) => edge.poolSpares !== undefined);
    let total = 0;
    for (const count of requests.byEdge.values()) total += count;
    return {
      version: EDGESOCKS_VERSION,
      nowMs,
      startedAtMs: this.startedAtMs,
      listen: config.listenHost.includes(":") ? `[${config.listenHost}]:${listenPort}` : `${config.listenHost}:${listenPort}`,
      connections: { open: registry.openCount, openByRoute, listed, unlisted: registry.openCount - listed.length, ended, errors },
      bytes: registry.totalBytes,
      throughput: { bucketMs: registry.throughput.bucketMs, buckets: registry.throughput.series(nowMs) },
      pool: {
        size: config.poolSize,
        readySpares: spares.length === 0 ? null : spares.reduce((sum, edge) => sum + (edge.poolSpares ?? 0), 0),
        tunnelsInUse: openByRoute[Route.Edge] ?? 0,
        maxStreamsPerTunnel: config.maxStreamsPerTunnel,
      },
      edges,
      workerRequests: { day: requests.day, countingSinceMs: requests.countingSinceMs, resetsAtMs: requests.resetsAtMs, total, freePlanDailyLimit: FREE_PLAN_DAILY_REQUESTS },
    };
  }
}

const statuses = new WeakMap<AgentConfig, AgentStatus>();

/** The status of the agent running with `config`, created on first use. */
export function statusFor(config: AgentConfig): AgentStatus {
  let status = statuses.get(config);
  if (!status) {
    status = new AgentStatus(config);
    statuses.set(config, status);
  }
  return status;
}
