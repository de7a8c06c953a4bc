// What the agent has learnt from the edge about destinations on Cloudflare's network (OPENED
// status OnCloudflare, protocol v3): which hosts to open directly at once under --on-cloudflare
// direct, and which it has already told the user about. Bounded, expiring by the edge's verdict.

import type { AgentConfig } from "../config/config.ts";

/** Hosts remembered at most; the oldest goes first. */
export const MAX_VERDICTS = 4096;
/** The edge's verdict is clamped to this range (seconds): it comes from a DNS TTL. */
export const MIN_VERDICT_SECONDS = 10;
export const MAX_VERDICT_SECONDS = 3600;
/** A destination's hint line is written once in this long, not once per connection. */
export const HINT_INTERVAL_MS = 3_600_000;

/** Hosts on Cloudflare's network with the time their verdict ends, and when each was last hinted. */
export class CloudflareVerdicts {
  readonly #until = new Map<string, number>();
  readonly #hintedAt = new Map<string, number>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Remembers `host` as on Cloudflare for `seconds` (clamped). */
  remember(host: string, seconds: number): void {
    const clamped = Math.min(MAX_VERDICT_SECONDS, Math.max(MIN_VERDICT_SECONDS, seconds));
    setBounded(this.#until, keyOf(host), this.#now() + clamped * 1000);
  }

  /** True while `host` has a live verdict. */
  isOnCloudflare(host: string): boolean {
    const key = keyOf(host);
    const until = this.#until.get(key);
    if (until === undefined) return false;
    if (until > this.#now()) return true;
    this.#until.delete(key);
    return false;
  }

  /** True when `host`'s hint line is due (the first time, then once per HINT_INTERVAL_MS), and marks it written. */
  takeHint(host: string): boolean {
    const key = keyOf(host);
    const last = this.#hintedAt.get(key);
    if (last !== undefined && this.#now() - last < HINT_INTERVAL_MS) return false;
    setBounded(this.#hintedAt, key, this.#now());
    return true;
  }
}

const verdicts = new WeakMap<AgentConfig, CloudflareVerdicts>();

/** The verdicts of the agent running with `config` (one agent, one config object). */
export function verdictsFor(config: AgentConfig): CloudflareVerdicts {
  let found = verdicts.get(config);
  if (!found) {
    found = new CloudflareVerdicts();
    verdicts.set(config, found);
  }
  return found;
}

function setBounded(map: Map<string, number>, key: string, value: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > MAX_VERDICTS) {
    const oldest = map.keys().next().value;
    if (oldest === undefined) break;
    map.delete(oldest);
  }
}

function keyOf(host: string): string {
  return host.toLowerCase().replace(/\.$/, "");
}
