// What the isolate has learnt about names it resolved to classify a failed dial: module state,
// shared by every tunnel the isolate serves, bounded in entries and held for the DNS answer's TTL.

/** A name's addresses (both families) or its absence (NXDOMAIN or no data), until `expiresAtMs`. */
export type NameEntry = { addresses: string[]; expiresAtMs: number };

/** Entries kept at most: the oldest goes first. A few hundred bytes each, well inside an isolate's 128 MB. */
export const MAX_NAME_ENTRIES = 1024;
/** TTLs are clamped to this range: 0 would re-ask on every connection, days would outlive a move off Cloudflare. */
export const MIN_NAME_TTL_SECONDS = 10;
export const MAX_NAME_TTL_SECONDS = 3600;
/** TTL for an answer that gave none (no SOA with a negative answer). */
export const DEFAULT_NAME_TTL_SECONDS = 60;

/** A bounded map of names to their resolution, expiring by TTL. */
export class NameCache {
  readonly #entries = new Map<string, NameEntry>();
  readonly #maxEntries: number;
  readonly #now: () => number;

  constructor(maxEntries = MAX_NAME_ENTRIES, now: () => number = Date.now) {
    this.#maxEntries = maxEntries;
    this.#now = now;
  }

  /** The live entry for `name` (case and a trailing dot ignored), or undefined. */
  get(name: string): NameEntry | undefined {
    const key = keyOf(name);
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAtMs <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry;
  }

  /** Remembers `addresses` (empty: the name does not resolve) for `ttlSeconds`, clamped; returns the entry. */
  set(name: string, addresses: string[], ttlSeconds: number | undefined): NameEntry {
    const key = keyOf(name);
    const seconds = Math.min(MAX_NAME_TTL_SECONDS, Math.max(MIN_NAME_TTL_SECONDS, ttlSeconds ?? DEFAULT_NAME_TTL_SECONDS));
    const entry = { addresses, expiresAtMs: this.#now() + seconds * 1000 };
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    return entry;
  }

  /** Seconds `entry` still holds, at least 1. */
  remainingSeconds(entry: NameEntry): number {
    return Math.max(1, Math.ceil((entry.expiresAtMs - this.#now()) / 1000));
  }

  get size(): number {
    return this.#entries.size;
  }
}

function keyOf(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}
