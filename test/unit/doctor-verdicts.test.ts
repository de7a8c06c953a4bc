// The doctor's verdicts (local-agent/doctor/edge-http-checks.ts, stream-checks.ts): what each
// answer from an edge makes of its row, status, detail and fix, without an edge.

import { describe, expect, it } from "vitest";
import { CLOCK_FAIL_MS, CLOCK_WARN_MS, clockVerdict, dnsVerdict, healthzVerdict, tokenVerdict } from "../../local-agent/doctor/edge-http-checks.ts";
import type { HealthzAnswer } from "../../local-agent/tunnel/edge-probe.ts";
import { dnsQueryName } from "../../local-agent/doctor/edge-checks.ts";
import { edgeAddress } from "../../local-agent/doctor/reach-checks.ts";
import { cloudflareVerdict, targetVerdict } from "../../local-agent/doctor/stream-checks.ts";
import type { StreamOutcome } from "../../local-agent/doctor/test-stream.ts";
import { AddressType, PROTOCOL_VERSION, StreamStatus, type Destination } from "../../worker/protocol/index.ts";

const URL = "http://127.0.0.1:8787/healthz";

function healthz(body: unknown, status = 200): HealthzAnswer {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  return { kind: "answered", status, body: new TextEncoder().encode(text), date: null, sentAtMs: 0, receivedAtMs: 0 };
}

describe("healthzVerdict", () => {
  it("passes edgesocks at this agent's protocol", () => {
    expect(healthzVerdict(healthz({ name: "edgesocks", version: "0.1.0", protocol: PROTOCOL_VERSION }), URL)).toMatchObject({ status: "pass", detail: `edgesocks 0.1.0, protocol ${PROTOCOL_VERSION} (this agent speaks 4, 3, 2)` });
  });

  it("warns of an older protocol this agent still speaks, with the fix to redeploy", () => {
    expect(healthzVerdict(healthz({ name: "edgesocks", version: "0.0.9", protocol: 3 }), URL)).toMatchObject({ status: "warn", fix: "redeploy the Worker (npm run deploy)" });
  });

  it("fails a protocol this agent does not speak: newer means update the agent, older redeploy", () => {
    expect(healthzVerdict(healthz({ name: "edgesocks", protocol: 99 }), URL)).toMatchObject({ status: "fail", fix: "update the agent to the Worker's release" });
    expect(healthzVerdict(healthz({ name: "edgesocks", protocol: 1 }), URL)).toMatchObject({ status: "fail", fix: "redeploy the Worker (npm run deploy)" });
  });

  it.each([
    ["an error status", healthz("not found", 404), `GET ${URL} answered HTTP 404`],
    ["a page that is not JSON", healthz("<html>hello</html>"), `GET ${URL} is not JSON ("<html>hello</html>"): not edgesocks`],
    ["JSON of something else", healthz({ status: "ok" }), `GET ${URL} does not name edgesocks`],
    ["JSON null", healthz("null"), `GET ${URL} does not name edgesocks`],
    ["an endless body", { kind: "answered", status: 200, body: "too large", date: null, sentAtMs: 0, receivedAtMs: 0 } as HealthzAnswer, `GET ${URL} answered more than 4096 bytes: not edgesocks`],
  ])("fails %s as not the edgesocks Worker", (_what, answer, detail) => {
    expect(healthzVerdict(answer, URL)).toEqual({ name: "healthz/protocol", status: "fail", detail, fix: "--edge must be the edgesocks Worker's URL (npm run deploy prints it)" });
  });

  it("fails no answer with the cause", () => {
    expect(healthzVerdict({ kind: "unreachable", cause: "no answer within 5000 ms" }, URL)).toMatchObject({ status: "fail", detail: `GET ${URL}: no answer within 5000 ms` });
  });
});

describe("tokenVerdict", () => {
  it("passes an accepted token, fails a 401 with the fix naming where the token comes from", () => {
    expect(tokenVerdict({ kind: "accepted" }).status).toBe("pass");
    expect(tokenVerdict({ kind: "refused", status: 401, message: "wrong token" })).toMatchObject({ status: "fail", detail: "the edge refused the token (HTTP 401 wrong token)", fix: expect.stringContaining("EDGESOCKS_TOKEN or --token-file") });
  });

  it("tells a Worker without a token (503) and a misconfigured one (500) apart", () => {
    expect(tokenVerdict({ kind: "refused", status: 503, message: "no token configured" }).fix).toBe("set one: npx wrangler secret put EDGESOCKS_TOKEN");
    expect(tokenVerdict({ kind: "refused", status: 500, message: "EDGESOCKS_UPSTREAM does not parse" }).detail).toBe("the Worker is misconfigured (HTTP 500 EDGESOCKS_UPSTREAM does not parse)");
  });

  it("warns when the edge is older than /check, so the token could not be checked", () => {
    expect(tokenVerdict({ kind: "unknown", status: 404 })).toMatchObject({ status: "warn", fix: "redeploy the Worker (npm run deploy)" });
  });
});

/** A DNS response for one A question: `rcode`, and an A record per address (RFC 1035 4.1). */
function dnsAnswer(name: string, rcode: number, addresses: number[][]): Uint8Array {
  const labels = name.split(".").flatMap((label) => [label.length, ...Buffer.from(label)]);
  const question = [...labels, 0, 0, 1, 0, 1];
  const records = addresses.flatMap((address) => [0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...address]);
  return Uint8Array.from([0, 0, 0x81, 0x80 | rcode, 0, 1, 0, addresses.length, 0, 0, 0, 0, ...question, ...records]);
}

describe("dnsVerdict", () => {
  it("passes an answer with its addresses, and an NXDOMAIN (the resolver answered)", () => {
    expect(dnsVerdict({ answer: dnsAnswer("localhost", 0, [[127, 0, 0, 1]]) }, "localhost", 7)).toMatchObject({ status: "pass", detail: "localhost: 127.0.0.1 (in 7 ms, through the edge's resolver)" });
    expect(dnsVerdict({ answer: dnsAnswer("example.com", 3, []) }, "example.com", 7)).toMatchObject({ status: "pass", detail: "example.com does not exist (NXDOMAIN in 7 ms, through the edge's resolver)" });
  });

  it("fails SERVFAIL, an answer that does not parse and the edge's refusal, with the fix naming EDGESOCKS_DOH_URL", () => {
    const fix = "check EDGESOCKS_DOH_URL at the Worker (unset: https://cloudflare-dns.com/dns-query), then redeploy";
    expect(dnsVerdict({ answer: dnsAnswer("localhost", 2, []) }, "localhost", 1)).toMatchObject({ status: "fail", detail: "the edge's resolver answered localhost with SERVFAIL", fix });
    expect(dnsVerdict({ answer: new Uint8Array(3) }, "localhost", 1)).toMatchObject({ status: "fail", fix });
    expect(dnsVerdict({ failure: "edge answered HTTP 502 resolver unreachable: connection refused", kind: "answered" }, "localhost", 1)).toMatchObject({ status: "fail", fix });
  });

  it("asks for the target's name, or a fixed one for an IP literal", () => {
    expect(dnsQueryName({ type: AddressType.Domain, host: "localhost", port: 1 })).toBe("localhost");
    expect(dnsQueryName({ type: AddressType.IPv4, host: "127.0.0.1", port: 1 })).toBe("example.com");
  });
});

describe("clockVerdict", () => {
  const atMs = Date.parse("2026-01-02T03:04:05.000Z");
  const date = new Date(atMs).toUTCString();

  it("passes a clock within the Date header's second and the round trip", () => {
    expect(clockVerdict(date, atMs + 100, atMs + 300)).toMatchObject({ status: "pass", detail: "within 0.6 s of the edge's clock" });
  });

  it("warns past 30 s and fails past 300 s, saying which way", () => {
    expect(clockVerdict(date, atMs + CLOCK_WARN_MS + 2_000, atMs + CLOCK_WARN_MS + 2_000)).toMatchObject({ status: "warn", detail: "this machine's clock is 31 s ahead of the edge's clock (more than 30 s)" });
    expect(clockVerdict(date, atMs - CLOCK_FAIL_MS - 2_000, atMs - CLOCK_FAIL_MS - 2_000)).toMatchObject({ status: "fail", detail: "this machine's clock is 302 s behind the edge's clock (more than 300 s)" });
  });

  it("does not call a slow round trip a clock offset", () => {
    // 40 s there and back, the edge's Date from the middle: the offset is inside the uncertainty.
    expect(clockVerdict(new Date(atMs + 20_000).toUTCString(), atMs, atMs + 40_000).status).toBe("pass");
  });

  it("skips an answer without a Date header (wrangler dev sends none) or with one that does not parse", () => {
    expect(clockVerdict(null, atMs, atMs).status).toBe("skip");
    expect(clockVerdict("yesterday", atMs, atMs).status).toBe("skip");
  });
});

const TARGET: Destination = { type: AddressType.Domain, host: "example.com", port: 443 };
const CLOUDFLARE: Destination = { type: AddressType.Domain, host: "www.cloudflare.com", port: 443 };

function opened(status: StreamStatus, reason = "", version: 2 | 3 | 4 = 4): StreamOutcome {
  return { kind: "opened", status, reason, version, elapsedMs: 12 };
}

describe("targetVerdict", () => {
  it("passes an OPENED Ok with the time and the tunnel's version", () => {
    expect(targetVerdict(opened(StreamStatus.Ok), TARGET)).toMatchObject({ status: "pass", detail: "the edge opened example.com:443 in 12 ms (protocol v4)" });
  });

  it("fails a refused open with the status's name and the edge's reason", () => {
    expect(targetVerdict(opened(StreamStatus.ConnectionRefused, "connect ECONNREFUSED"), TARGET)).toMatchObject({ status: "fail", detail: "the edge could not open example.com:443 (connection refused: connect ECONNREFUSED)" });
    expect(targetVerdict(opened(StreamStatus.HostUnreachable), TARGET).fix).toBe("check the spelling of --target's host");
  });

  it("fails a tunnel the edge refused, or one that never answered", () => {
    expect(targetVerdict({ kind: "refused", httpStatus: 401, explanation: "wrong token" }, TARGET)).toMatchObject({ status: "fail", detail: "the edge refused the tunnel (HTTP 401 wrong token)" });
    expect(targetVerdict({ kind: "timeout", timeoutMs: 15_000 }, TARGET)).toMatchObject({ status: "fail", detail: "no OPENED from the edge within 15000 ms (--open-timeout-ms)" });
  });
});

describe("cloudflareVerdict", () => {
  it("passes a destination the edge's fallback opened", () => {
    expect(cloudflareVerdict(opened(StreamStatus.Ok), CLOUDFLARE, "refuse").status).toBe("pass");
  });

  it("warns with the fix when no fallback applies, and passes under --on-cloudflare direct", () => {
    expect(cloudflareVerdict(opened(StreamStatus.OnCloudflare), CLOUDFLARE, "refuse")).toMatchObject({
      status: "warn",
      fix: 'configure a fallback at the Worker (README: "Sites hosted on Cloudflare") or run the agent with --on-cloudflare direct',
    });
    expect(cloudflareVerdict(opened(StreamStatus.OnCloudflare), CLOUDFLARE, "direct").status).toBe("pass");
  });

  it("fails a fallback that was tried and failed", () => {
    expect(cloudflareVerdict(opened(StreamStatus.GeneralFailure, "upstream socks5://relay:1080 unreachable"), CLOUDFLARE, "refuse")).toMatchObject({
      status: "fail",
      detail: "the edge could not open www.cloudflare.com:443 (general failure: upstream socks5://relay:1080 unreachable)",
    });
  });

  it("warns that a v2 tunnel cannot tell Cloudflare-hosted sites apart", () => {
    expect(cloudflareVerdict(opened(StreamStatus.NotAllowed, "", 2), CLOUDFLARE, "refuse")).toMatchObject({ status: "warn", fix: "redeploy the Worker (npm run deploy)" });
  });
});

describe("edgeAddress", () => {
  it("reads host, port and TLS from a tunnel URL, the scheme's port when none is given", () => {
    expect(edgeAddress("wss://edgesocks.example.workers.dev/tunnel")).toEqual({ host: "edgesocks.example.workers.dev", port: 443, tls: true });
    expect(edgeAddress("ws://[::1]:8787/base/tunnel")).toEqual({ host: "::1", port: 8787, tls: false });
  });
});
