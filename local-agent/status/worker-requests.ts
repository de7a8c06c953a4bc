// Worker requests this agent has made today, per edge: each tunnel the edge answered (its
// WebSocket upgrade, 101 or a refusal) and each DNS query it answered is one request of the
// Worker's daily allowance. Cloudflare's free plan allows 100,000 a day, reset at 00:00 UTC
// (developers.cloudflare.com/workers/platform/limits/), so the count starts over then too.
//
// Process-wide, like the allowance: the tunnel and DNS code count with one call each, whatever
// agent (config) they serve. An upgrade that never reached the edge (refused connection, no
// route) is no request and is not counted. Requests made before the agent started are unknown
// to it: the count is "since the later of 00:00 UTC and the agent's start".

import { DNS_PATH, TUNNEL_PATH } from "../../worker/protocol/index.ts";

/** Requests a Worker on the free plan may serve per day (all of an account's Workers together). */
export const FREE_PLAN_DAILY_REQUESTS = 100_000;
/** Distinct edges counted at most: more than any configuration has; a URL past it is not counted. */
const MAX_EDGES_COUNTED = 64;
const DAY_MS = 24 * 60 * 60 * 1000;

/** Today's counts. */
export type WorkerRequestsToday = {
  /** The UTC day counted, YYYY-MM-DD. */
  day: string;
  /** Counting began at the later of 00:00 UTC and the counter's creation (the agent's start). */
  countingSinceMs: number;
  /** 00:00 UTC of the next day, when the count starts over. */
  resetsAtMs: number;
  /** Requests per edge, keyed by edgeKey(). */
  byEdge: ReadonlyMap<string, number>;
};

/**
 * One key per edge for its URL in any of the forms the agent uses: as configured
 * (https://NAME.workers.dev/base), its tunnel URL (wss://…/base/tunnel) and its DNS URL
 * (https://…/base/dns) all give "name.workers.dev:443/base".
 */
export function edgeKey(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url;
  }
  const secure = parsed.protocol === "https:" || parsed.protocol === "wss:";
  const port = parsed.port || (secure ? "443" : "80");
  let path = parsed.pathname.replace(/\/+$/, "");
  for (const suffix of [TUNNEL_PATH, DNS_PATH]) {
    if (path.endsWith(suffix)) {
      path = path.slice(0, -suffix.length);
      break;
    }
  }
  return `${parsed.hostname}:${port}${path}`;
}

export class WorkerRequestCounter {
  readonly #now: () => number;
  readonly #createdAtMs: number;
  #dayStartMs: number;
  readonly #byEdge = new Map<string, number>();

  constructor(now: () => number = Date.now) {
    this.#now = now;
    this.#createdAtMs = now();
    this.#dayStartMs = utcDayStart(this.#createdAtMs);
  }

  /** Counts one request the Worker at `url` (any form edgeKey() takes) answered. */
  count(url: string): void {
    this.#rollOver();
    const key = edgeKey(url);
    const counted = this.#byEdge.get(key);
    if (counted === undefined && this.#byEdge.size >= MAX_EDGES_COUNTED) return;
    this.#byEdge.set(key, (counted ?? 0) + 1);
  }

  /** Today's counts, started over if a UTC midnight has passed since the last request. */
  today(): WorkerRequestsToday {
    this.#rollOver();
    return {
      day: new Date(this.#dayStartMs).toISOString().slice(0, 10),
      countingSinceMs: Math.max(this.#dayStartMs, this.#createdAtMs),
      resetsAtMs: this.#dayStartMs + DAY_MS,
      byEdge: new Map(this.#byEdge),
    };
  }

  #rollOver(): void {
    const dayStartMs = utcDayStart(this.#now());
    if (dayStartMs === this.#dayStartMs) return;
    this.#dayStartMs = dayStartMs;
    this.#byEdge.clear();
  }
}

function utcDayStart(timeMs: number): number {
  return Math.floor(timeMs / DAY_MS) * DAY_MS;
}

/** The agent process's counter. */
export const workerRequests = new WorkerRequestCounter();

/** Counts one request the Worker at `url` answered (a tunnel upgrade, a DNS query): one line at each place the agent makes one. */
export function countWorkerRequest(url: string): void {
  workerRequests.count(url);
}
