// Worker requests per edge and UTC day (local-agent/status/worker-requests.ts): an edge's
// configured URL, tunnel URL and DNS URL count as one edge, and the count starts over at 00:00
// UTC, when Cloudflare's daily allowance does.

import { describe, expect, it } from "vitest";
import { parseEdgeUrl } from "../../local-agent/config/config.ts";
import { FREE_PLAN_DAILY_REQUESTS, WorkerRequestCounter, edgeKey } from "../../local-agent/status/worker-requests.ts";
import { dnsUrl } from "../../local-agent/tunnel/edge-dns.ts";

describe("edgeKey", () => {
  it("gives an edge's label, tunnel URL and DNS URL the same key", () => {
    for (const given of ["https://edgesocks.alice.workers.dev", "http://127.0.0.1:8787", "https://example.com/base/", "wss://example.net/tunnel"]) {
      const { tunnelUrl, edgeLabel } = parseEdgeUrl(given);
      expect(edgeKey(tunnelUrl)).toBe(edgeKey(edgeLabel));
      expect(edgeKey(dnsUrl(tunnelUrl))).toBe(edgeKey(edgeLabel));
    }
    expect(edgeKey("https://edgesocks.alice.workers.dev")).toBe("edgesocks.alice.workers.dev:443");
    expect(edgeKey("ws://127.0.0.1:8787/tunnel")).toBe("127.0.0.1:8787");
  });

  it("tells edges apart by host, port and base path", () => {
    const keys = ["https://a.example", "https://b.example", "http://a.example", "https://a.example:8443", "https://a.example/other"].map(edgeKey);
    expect(new Set(keys).size).toBe(keys.length);
  });
});

describe("WorkerRequestCounter", () => {
  const day = (text: string) => Date.parse(text);

  it("counts per edge, whichever of its URLs a request went to", () => {
    const counter = new WorkerRequestCounter(() => day("2026-03-01T10:00:00Z"));
    counter.count("wss://a.example/tunnel");
    counter.count("wss://a.example/tunnel");
    counter.count("https://a.example/dns");
    counter.count("ws://127.0.0.1:8787/tunnel");
    expect(Object.fromEntries(counter.today().byEdge)).toEqual({ "a.example:443": 3, "127.0.0.1:8787": 1 });
  });

  it("starts over at 00:00 UTC, counting from the later of midnight and its own start", () => {
    let now = day("2026-03-01T23:59:58Z");
    const counter = new WorkerRequestCounter(() => now);
    counter.count("https://a.example");
    expect(counter.today()).toMatchObject({ day: "2026-03-01", countingSinceMs: day("2026-03-01T23:59:58Z"), resetsAtMs: day("2026-03-02T00:00:00Z") });
    expect(counter.today().byEdge.get("a.example:443")).toBe(1);
    now = day("2026-03-02T00:00:01Z");
    expect(counter.today()).toMatchObject({ day: "2026-03-02", countingSinceMs: day("2026-03-02T00:00:00Z"), resetsAtMs: day("2026-03-03T00:00:00Z") });
    expect(counter.today().byEdge.size).toBe(0);
    counter.count("https://a.example");
    expect(counter.today().byEdge.get("a.example:443")).toBe(1);
  });

  it("keeps at most 64 edges", () => {
    const counter = new WorkerRequestCounter(() => 0);
    for (let index = 0; index < 100; index++) counter.count(`https://edge-${index}.example`);
    expect(counter.today().byEdge.size).toBe(64);
    counter.count("https://edge-0.example");
    expect(counter.today().byEdge.get("edge-0.example:443")).toBe(2);
  });

  it("names the free plan's daily allowance", () => {
    expect(FREE_PLAN_DAILY_REQUESTS).toBe(100_000);
  });
});
