// What the edge's isolate (worker/dial/name-cache.ts) and the agent
// (local-agent/tunnel/cloudflare-verdicts.ts) remember about names: bounded in entries, oldest first
// out, held for the DNS answer's TTL clamped to 10 s .. 1 h, and one hint per host and hour.
// Both take their clock as a parameter, so time moves here without timers.

import { describe, expect, it } from "vitest";
import { CloudflareVerdicts, HINT_INTERVAL_MS, MAX_VERDICTS, MAX_VERDICT_SECONDS, MIN_VERDICT_SECONDS } from "../../local-agent/tunnel/cloudflare-verdicts.ts";
import { DEFAULT_NAME_TTL_SECONDS, MAX_NAME_ENTRIES, MAX_NAME_TTL_SECONDS, MIN_NAME_TTL_SECONDS, NameCache } from "../../worker/dial/name-cache.ts";

/** A clock the test moves by hand. */
function manualClock(startMs = 1_000_000): { now: () => number; advance(ms: number): void } {
  let nowMs = startMs;
  return { now: () => nowMs, advance: (ms) => (nowMs += ms) };
}

describe("NameCache: the isolate's names", () => {
  it("holds an entry for its TTL and not a millisecond longer", () => {
    const clock = manualClock();
    const cache = new NameCache(MAX_NAME_ENTRIES, clock.now);
    cache.set("site.example", ["104.16.0.1"], 300);
    clock.advance(300_000 - 1);
    expect(cache.get("site.example")?.addresses).toEqual(["104.16.0.1"]);
    clock.advance(1);
    expect(cache.get("site.example")).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it.each([
    { ttl: 0, heldSeconds: MIN_NAME_TTL_SECONDS },
    { ttl: 86_400, heldSeconds: MAX_NAME_TTL_SECONDS },
    { ttl: undefined, heldSeconds: DEFAULT_NAME_TTL_SECONDS },
  ])("clamps a TTL of $ttl to $heldSeconds s", ({ ttl, heldSeconds }) => {
    const clock = manualClock();
    const cache = new NameCache(MAX_NAME_ENTRIES, clock.now);
    const entry = cache.set("site.example", [], ttl);
    expect(cache.remainingSeconds(entry)).toBe(heldSeconds);
    clock.advance(heldSeconds * 1000 - 1);
    expect(cache.get("site.example")).toBe(entry);
    clock.advance(1);
    expect(cache.get("site.example")).toBeUndefined();
  });

  it("keeps at most its bound, dropping the oldest first", () => {
    const cache = new NameCache(3);
    for (const name of ["a.example", "b.example", "c.example", "d.example"]) cache.set(name, ["192.0.2.1"], 60);
    expect(cache.size).toBe(3);
    expect(cache.get("a.example")).toBeUndefined();
    expect(cache.get("d.example")).toBeDefined();
  });

  it("bounds the isolate's cache at MAX_NAME_ENTRIES", () => {
    const cache = new NameCache();
    for (let index = 0; index <= MAX_NAME_ENTRIES; index++) cache.set(`n${index}.example`, [], 60);
    expect(cache.size).toBe(MAX_NAME_ENTRIES);
    expect(cache.get("n0.example")).toBeUndefined();
  });

  it("ignores case and a trailing dot", () => {
    const cache = new NameCache();
    cache.set("Site.Example.", ["104.16.0.1"], 60);
    expect(cache.get("site.example")?.addresses).toEqual(["104.16.0.1"]);
  });
});

describe("CloudflareVerdicts: what the agent remembers", () => {
  it("holds a verdict for its seconds, clamped to 10 s .. 1 h", () => {
    const clock = manualClock();
    const verdicts = new CloudflareVerdicts(clock.now);
    verdicts.remember("short.example", 1);
    verdicts.remember("long.example", 86_400);
    clock.advance(MIN_VERDICT_SECONDS * 1000 - 1);
    expect(verdicts.isOnCloudflare("short.example")).toBe(true);
    clock.advance(1);
    expect(verdicts.isOnCloudflare("short.example")).toBe(false);
    clock.advance(MAX_VERDICT_SECONDS * 1000 - MIN_VERDICT_SECONDS * 1000 - 1);
    expect(verdicts.isOnCloudflare("LONG.example.")).toBe(true);
    clock.advance(1);
    expect(verdicts.isOnCloudflare("long.example")).toBe(false);
  });

  it("keeps at most MAX_VERDICTS hosts, dropping the oldest first", () => {
    const verdicts = new CloudflareVerdicts();
    for (let index = 0; index <= MAX_VERDICTS; index++) verdicts.remember(`h${index}.example`, 60);
    expect(verdicts.isOnCloudflare("h0.example")).toBe(false);
    expect(verdicts.isOnCloudflare("h1.example")).toBe(true);
    expect(verdicts.isOnCloudflare(`h${MAX_VERDICTS}.example`)).toBe(true);
  });

  it("gives one hint per host and HINT_INTERVAL_MS", () => {
    const clock = manualClock();
    const verdicts = new CloudflareVerdicts(clock.now);
    expect(verdicts.takeHint("site.example")).toBe(true);
    expect(verdicts.takeHint("SITE.example")).toBe(false);
    expect(verdicts.takeHint("other.example")).toBe(true);
    clock.advance(HINT_INTERVAL_MS - 1);
    expect(verdicts.takeHint("site.example")).toBe(false);
    clock.advance(1);
    expect(verdicts.takeHint("site.example")).toBe(true);
  });
});
