// The client connections the agent carries now, and what the ended ones came to: the status
// page's connection table, its counts by result and its byte totals. Fed by connection-meter.ts;
// what it holds is bounded by the connections open (--max-connections) plus one count per result.

import type { Route } from "../config/routing.ts";
import { StreamStatus } from "../../worker/protocol/index.ts";
import { ThroughputSampler } from "./throughput.ts";

/** How a connection ended; the names are the metrics' `result` label values. */
export const ConnectionResult = {
  /** Both sides finished: every byte each way, and both FINs. */
  Ok: "ok",
  /** The client hung up (or reset) before the stream was done: a browser leaving a page, a cancelled download. */
  ClientClosed: "client_closed",
  /** The agent reset the client: the stream broke after it was open (the edge or the destination), or a --zero-rtt open failed. */
  Reset: "reset",
  /** A `block` rule refused it. */
  Blocked: "blocked",
  GeneralFailure: "general_failure",
  NotAllowed: "not_allowed",
  NetworkUnreachable: "network_unreachable",
  HostUnreachable: "host_unreachable",
  ConnectionRefused: "connection_refused",
  TimedOut: "timed_out",
  OnCloudflare: "on_cloudflare",
} as const;
export type ConnectionResult = (typeof ConnectionResult)[keyof typeof ConnectionResult];
export const CONNECTION_RESULTS: readonly ConnectionResult[] = Object.values(ConnectionResult);

/** Results that are not errors: a stream that finished, and a client that left on its own. */
export const NON_ERROR_RESULTS: ReadonlySet<ConnectionResult> = new Set([ConnectionResult.Ok, ConnectionResult.ClientClosed]);

/** The result of an open that failed with `status` (the status the client was answered with). */
export const RESULT_FOR_STATUS: Readonly<Record<StreamStatus, ConnectionResult>> = {
  [StreamStatus.Ok]: ConnectionResult.Ok,
  [StreamStatus.GeneralFailure]: ConnectionResult.GeneralFailure,
  [StreamStatus.NotAllowed]: ConnectionResult.NotAllowed,
  [StreamStatus.NetworkUnreachable]: ConnectionResult.NetworkUnreachable,
  [StreamStatus.HostUnreachable]: ConnectionResult.HostUnreachable,
  [StreamStatus.ConnectionRefused]: ConnectionResult.ConnectionRefused,
  [StreamStatus.Timeout]: ConnectionResult.TimedOut,
  [StreamStatus.OnCloudflare]: ConnectionResult.OnCloudflare,
};

/** One open connection as the status page shows it. */
export type OpenConnection = {
  id: number;
  /** HOST:PORT as the client asked for it ([IPv6]:PORT). */
  destination: string;
  route: Route;
  /** The edge it goes through (its URL as configured); undefined for other routes. */
  edgeLabel: string | undefined;
  startedAtMs: number;
  /** Bytes from the client (after its request), and to it (after its success answer). */
  upBytes: number;
  downBytes: number;
};

/** What a new connection is. */
export type ConnectionStart = { destination: string; route: Route; edgeLabel: string | undefined };

/** One connection in the registry: its meter adds bytes to it, and closes it once. */
export class ConnectionRecord {
  readonly #view: OpenConnection;
  readonly #registry: ConnectionRegistry;
  #closed = false;

  constructor(view: OpenConnection, registry: ConnectionRegistry) {
    this.#view = view;
    this.#registry = registry;
  }

  get id(): number {
    return this.#view.id;
  }

  /** Counts bytes the client sent. */
  addUp(bytes: number): void {
    if (bytes <= 0) return;
    this.#view.upBytes += bytes;
    this.#registry.moved(bytes, 0);
  }

  /** Counts bytes written to the client. */
  addDown(bytes: number): void {
    if (bytes <= 0) return;
    this.#view.downBytes += bytes;
    this.#registry.moved(0, bytes);
  }

  /** The edge the connection's stream goes through, once it is known (with several edges, the one chosen). */
  useEdge(edgeLabel: string): void {
    this.#view.edgeLabel = edgeLabel;
  }

  /** Ends the connection with `result`; only the first call counts. */
  close(result: ConnectionResult): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#registry.ended(this.#view.id, result);
  }

  /** A copy of what the page shows. */
  view(): OpenConnection {
    return { ...this.#view };
  }
}

export class ConnectionRegistry {
  readonly throughput: ThroughputSampler;
  readonly #now: () => number;
  readonly #live = new Map<number, ConnectionRecord>();
  readonly #ended = new Map<ConnectionResult, number>();
  #nextId = 1;
  #upBytes = 0;
  #downBytes = 0;

  constructor(now: () => number = Date.now, throughput = new ThroughputSampler()) {
    this.#now = now;
    this.throughput = throughput;
  }

  /** Registers a connection that has just been handed to its route. */
  open(start: ConnectionStart): ConnectionRecord {
    const id = this.#nextId++;
    const record = new ConnectionRecord({ id, ...start, startedAtMs: this.#now(), upBytes: 0, downBytes: 0 }, this);
    this.#live.set(id, record);
    return record;
  }

  /** Called by a record: bytes moved for one of the connections. */
  moved(upBytes: number, downBytes: number): void {
    this.#upBytes += upBytes;
    this.#downBytes += downBytes;
    this.throughput.record(this.#now(), upBytes, downBytes);
  }

  /** Called by a record: it is over. */
  ended(id: number, result: ConnectionResult): void {
    if (!this.#live.delete(id)) return;
    this.#ended.set(result, (this.#ended.get(result) ?? 0) + 1);
  }

  /** Connections open now. */
  get openCount(): number {
    return this.#live.size;
  }

  /** The open connections, oldest first, at most `limit` of them. */
  openConnections(limit = Number.POSITIVE_INFINITY): OpenConnection[] {
    const views: OpenConnection[] = [];
    for (const record of this.#live.values()) {
      if (views.length >= limit) break;
      views.push(record.view());
    }
    return views;
  }

  /** Open connections on each route. */
  openByRoute(): Map<Route, number> {
    const counts = new Map<Route, number>();
    for (const record of this.#live.values()) {
      const { route } = record.view();
      counts.set(route, (counts.get(route) ?? 0) + 1);
    }
    return counts;
  }

  /** Connections ended since the agent started, by result; every result is listed, 0 included. */
  endedByResult(): Record<ConnectionResult, number> {
    const counts = Object.fromEntries(CONNECTION_RESULTS.map((result) => [result, 0])) as Record<ConnectionResult, number>;
    for (const [result, count] of this.#ended) counts[result] = count;
    return counts;
  }

  /** Bytes moved since the agent started, open connections included. */
  get totalBytes(): { upBytes: number; downBytes: number } {
    return { upBytes: this.#upBytes, downBytes: this.#downBytes };
  }
}
