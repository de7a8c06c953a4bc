// POST /dns (docs/protocol.md §9): the refusals in their order, a query answered through a
// DoH resolver stub on loopback (test/dns/doh-stub.ts), and each way the resolver can fail:
// down, silent, redirecting, oversized. Then the same resolver failures for resolveName, the
// edge's other DoH client (worker/dial/resolver.ts).

import { createExecutionContext } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import { DEFAULT_DOH_TIMEOUT_MS, loadEdgeConfig, type EdgeConfig, type EdgeEnv } from "../../worker/config.ts";
import { resolveName } from "../../worker/dial/resolver.ts";
import { NameCache } from "../../worker/dial/name-cache.ts";
import app from "../../worker/index.ts";
import { DNS_MESSAGE_TYPE, MAX_DNS_MESSAGE_BYTES } from "../../worker/protocol/index.ts";
import { KNOWN_ADDRESS, KNOWN_NAME, buildQuery, parseAnswer } from "../dns/dns-message.ts";
import { DohStubPath, type StubStats } from "../dns/doh-stub.ts";
import { TEST_TOKEN } from "./tunnel-client.ts";

const stubUrl = (path: string): string => `http://127.0.0.1:${inject("dohStubPort")}${path}`;
/** How late past a timeout an answer may come on a busy 2-core machine and still count as on time. */
const TIMEOUT_SLACK_MS = 2_000;
const answeringEnv: EdgeEnv = { EDGESOCKS_TOKEN: TEST_TOKEN, EDGESOCKS_DOH_URL: stubUrl(DohStubPath.Answer) };

/** The headers of a valid query; an override of undefined leaves that header out. */
function dnsHeaders(overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const headers: Record<string, string | undefined> = { Authorization: `Bearer ${TEST_TOKEN}`, "Content-Type": DNS_MESSAGE_TYPE, ...overrides };
  return Object.fromEntries(Object.entries(headers).filter((entry): entry is [string, string] => entry[1] !== undefined));
}

/** Sends a request for /dns to the Worker's Hono app with bindings of the test's choosing. */
function requestDns(env: EdgeEnv, init: RequestInit = {}): Promise<Response> {
  const request = new Request("http://edge.test/dns", { method: "POST", headers: dnsHeaders(), body: buildQuery(KNOWN_NAME, 0x1234), ...init });
  return Promise.resolve(app.fetch(request, env, createExecutionContext()));
}

async function expectRefusal(response: Response, status: number, body: string | RegExp): Promise<void> {
  expect(response.status).toBe(status);
  expect(response.headers.get("Content-Type")).toBe("text/plain; charset=utf-8");
  const text = await response.text();
  if (typeof body === "string") expect(text).toBe(body);
  else expect(text).toMatch(body);
}

describe("POST /dns configuration and authentication", () => {
  it("answers 503 when no token is configured", async () => {
    await expectRefusal(await requestDns({ EDGESOCKS_DOH_URL: stubUrl(DohStubPath.Answer) }), 503, /^edgesocks has no EDGESOCKS_TOKEN configured.*\n$/);
  });

  it("answers 500 naming EDGESOCKS_DOH_URL when it is not an http(s) URL, before any other check", async () => {
    const response = await requestDns({ EDGESOCKS_TOKEN: TEST_TOKEN, EDGESOCKS_DOH_URL: "ftp://127.0.0.1/dns-query" }, { method: "GET", body: null });
    await expectRefusal(response, 500, "edgesocks is misconfigured: EDGESOCKS_DOH_URL must be an http:// or https:// URL\n");
  });

  it("answers 500 for a token shorter than the minimum", async () => {
    await expectRefusal(await requestDns({ EDGESOCKS_TOKEN: "short", EDGESOCKS_DOH_URL: stubUrl(DohStubPath.Answer) }), 500, /^edgesocks is misconfigured: EDGESOCKS_TOKEN entry 1/);
  });

  it("answers 401 'missing bearer token' without an Authorization header", async () => {
    const response = await requestDns(answeringEnv, { headers: dnsHeaders({ Authorization: undefined }) });
    expect(response.headers.get("WWW-Authenticate")).toBe('Bearer realm="edgesocks"');
    await expectRefusal(response, 401, "missing bearer token\n");
  });

  it("answers 401 'wrong token' for a token in no entry", async () => {
    const response = await requestDns(answeringEnv, { headers: dnsHeaders({ Authorization: "Bearer worker-test-token-wrong-0000000" }) });
    await expectRefusal(response, 401, "wrong token\n");
  });

  it("serves the Worker as deployed in the tests: its own token, the default resolver URL validated", async () => {
    const response = await exports.default.fetch("http://edge.test/dns", { method: "POST", headers: dnsHeaders({ Authorization: "Bearer worker-test-token-wrong-0000000" }), body: buildQuery(KNOWN_NAME, 1) });
    await expectRefusal(response, 401, "wrong token\n");
  });
});

describe("POST /dns request checks", () => {
  it("answers 405 with Allow: POST to a GET", async () => {
    const response = await requestDns(answeringEnv, { method: "GET", body: null });
    expect(response.headers.get("Allow")).toBe("POST");
    await expectRefusal(response, 405, `the DNS endpoint takes POST with a ${DNS_MESSAGE_TYPE} body\n`);
  });

  it("answers 415 to a body of another content type", async () => {
    const response = await requestDns(answeringEnv, { headers: dnsHeaders({ "Content-Type": "application/octet-stream" }) });
    await expectRefusal(response, 415, `the DNS endpoint takes Content-Type: ${DNS_MESSAGE_TYPE}\n`);
  });

  it("answers 413 to a body over 65535 bytes", async () => {
    const response = await requestDns(answeringEnv, { body: new Uint8Array(MAX_DNS_MESSAGE_BYTES + 1) });
    await expectRefusal(response, 413, `a DNS message is at most ${MAX_DNS_MESSAGE_BYTES} bytes\n`);
  });

  it("answers 413 to an over-long body sent without a Content-Length", async () => {
    const chunk = new Uint8Array(16 * 1024);
    let sentBytes = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sentBytes > MAX_DNS_MESSAGE_BYTES) controller.close();
        else controller.enqueue(chunk);
        sentBytes += chunk.byteLength;
      },
    });
    await expectRefusal(await requestDns(answeringEnv, { body }), 413, `a DNS message is at most ${MAX_DNS_MESSAGE_BYTES} bytes\n`);
  });

  it("answers 413 to a body that never ends, and cancels it instead of reading on", async () => {
    const chunk = new Uint8Array(16 * 1024);
    let pulledBytes = 0;
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(chunk);
        pulledBytes += chunk.byteLength;
      },
      cancel() {
        cancelled = true;
      },
    });
    await expectRefusal(await requestDns(answeringEnv, { body }), 413, `a DNS message is at most ${MAX_DNS_MESSAGE_BYTES} bytes\n`);
    await expect.poll(() => cancelled).toBe(true);
    // The bound plus what the stream queued ahead of the reader, not the unbounded rest.
    expect(pulledBytes).toBeLessThanOrEqual(MAX_DNS_MESSAGE_BYTES + 4 * chunk.byteLength);
  });

  it("answers 400 to a body shorter than a DNS header", async () => {
    const response = await requestDns(answeringEnv, { body: new Uint8Array(11) });
    await expectRefusal(response, 400, "a DNS message is at least 12 bytes (its header); this one is 11\n");
  });

  it("checks the token before the body, so an unauthenticated peer gets 401 for any body", async () => {
    const response = await requestDns(answeringEnv, { headers: dnsHeaders({ Authorization: undefined }), body: new Uint8Array(3) });
    expect(response.status).toBe(401);
  });
});

describe("POST /dns answers", () => {
  it("returns the resolver's answer with 200 and application/dns-message", async () => {
    const response = await requestDns(answeringEnv, { body: buildQuery(KNOWN_NAME, 0xbeef) });
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toBe(DNS_MESSAGE_TYPE);
    const answer = parseAnswer(new Uint8Array(await response.arrayBuffer()));
    expect(answer).toEqual({ id: 0xbeef, rcode: 0, name: KNOWN_NAME, addresses: [KNOWN_ADDRESS] });
  });

  it("passes an NXDOMAIN answer through unchanged", async () => {
    const response = await requestDns(answeringEnv, { body: buildQuery("unknown.example", 7) });
    expect(response.status).toBe(200);
    expect(parseAnswer(new Uint8Array(await response.arrayBuffer()))).toEqual({ id: 7, rcode: 3, name: "unknown.example", addresses: [] });
  });

  it("answers 502 naming the status when the resolver answers 503", async () => {
    const response = await requestDns({ ...answeringEnv, EDGESOCKS_DOH_URL: stubUrl(DohStubPath.Unavailable) });
    await expectRefusal(response, 502, "resolver answered HTTP 503\n");
  });

  it("answers 502 when the resolver answers 200 with a type other than application/dns-message", async () => {
    const response = await requestDns({ ...answeringEnv, EDGESOCKS_DOH_URL: stubUrl(DohStubPath.NotDns) });
    await expectRefusal(response, 502, "resolver answered with Content-Type text/plain, not application/dns-message\n");
  });

  it("answers 502 'resolver unreachable' when nothing listens at the resolver URL", async () => {
    const response = await requestDns({ ...answeringEnv, EDGESOCKS_DOH_URL: `http://127.0.0.1:${inject("closedPort")}/dns-query` });
    await expectRefusal(response, 502, /^resolver unreachable: .+\n$/);
  });
});

/** The stub's counters, fetched over HTTP: the stub runs in Node, these tests in workerd. */
async function stubStats(): Promise<StubStats> {
  return (await (await fetch(stubUrl(DohStubPath.Stats))).json()) as StubStats;
}

const envFor = (path: string): EdgeEnv => ({ ...answeringEnv, EDGESOCKS_DOH_URL: stubUrl(path) });

describe("POST /dns against a resolver that misbehaves", () => {
  it(`answers 502 'resolver did not answer within ${DEFAULT_DOH_TIMEOUT_MS} ms' when the resolver never answers, and hangs up on it`, async () => {
    const before = await stubStats();
    const startedAt = Date.now();
    const response = await requestDns(envFor(DohStubPath.Hang));
    const elapsedMs = Date.now() - startedAt;
    await expectRefusal(response, 502, `resolver did not answer within ${DEFAULT_DOH_TIMEOUT_MS} ms\n`);
    expect(elapsedMs).toBeGreaterThanOrEqual(DEFAULT_DOH_TIMEOUT_MS);
    expect(elapsedMs).toBeLessThan(DEFAULT_DOH_TIMEOUT_MS + TIMEOUT_SLACK_MS);
    // The edge's abort closes its connection to the resolver: nothing is left waiting there.
    await expect.poll(async () => (await stubStats()).unansweredAbandoned - before.unansweredAbandoned).toBe(1);
  });

  it("gives the same 502 when the resolver sends its headers and then no body: the timeout covers the answer's bytes too", async () => {
    const before = await stubStats();
    const startedAt = Date.now();
    const response = await requestDns(envFor(DohStubPath.HangAfterHeaders));
    const elapsedMs = Date.now() - startedAt;
    await expectRefusal(response, 502, `resolver did not answer within ${DEFAULT_DOH_TIMEOUT_MS} ms\n`);
    expect(elapsedMs).toBeGreaterThanOrEqual(DEFAULT_DOH_TIMEOUT_MS);
    expect(elapsedMs).toBeLessThan(DEFAULT_DOH_TIMEOUT_MS + TIMEOUT_SLACK_MS);
    await expect.poll(async () => (await stubStats()).unansweredAbandoned - before.unansweredAbandoned).toBe(1);
  });

  for (const status of [301, 302, 303, 307, 308]) {
    it(`does not follow a ${status} redirect: 502 'resolver answered HTTP ${status}', and the query never reaches the Location`, async () => {
      const before = await stubStats();
      const response = await requestDns(envFor(`${DohStubPath.Redirect}?status=${status}`));
      await expectRefusal(response, 502, `resolver answered HTTP ${status}\n`);
      expect((await stubStats()).redirectTargetHits).toBe(before.redirectTargetHits);
    });
  }

  it(`answers 502 to an answer whose Content-Length is over ${MAX_DNS_MESSAGE_BYTES} bytes`, async () => {
    const response = await requestDns(envFor(DohStubPath.Oversized));
    await expectRefusal(response, 502, `resolver's answer is over ${MAX_DNS_MESSAGE_BYTES} bytes\n`);
  });

  it(`stops reading an answer without a Content-Length once it passes ${MAX_DNS_MESSAGE_BYTES} bytes, and answers 502 at once`, async () => {
    const before = await stubStats();
    const startedAt = Date.now();
    const response = await requestDns(envFor(DohStubPath.Flood));
    const elapsedMs = Date.now() - startedAt;
    await expectRefusal(response, 502, `resolver's answer is over ${MAX_DNS_MESSAGE_BYTES} bytes\n`);
    expect(elapsedMs).toBeLessThan(DEFAULT_DOH_TIMEOUT_MS);
    // The edge hung up with most of the FLOOD_ANSWER_BYTES unsent: it never buffered them.
    await expect.poll(async () => (await stubStats()).floodAbandoned - before.floodAbandoned).toBe(1);
    expect((await stubStats()).floodCompleted).toBe(before.floodCompleted);
  });
});

// The resolver the edge classifies refused dials with (worker/dial/resolver.ts), against the
// same misbehaving resolver: called directly, as a tunnel's dial does, with a cache of its own.
describe("resolveName against a resolver that misbehaves", () => {
  const configFor = (path: string): EdgeConfig => loadEdgeConfig(envFor(path));

  it(`fails with 'resolver did not answer within ${DEFAULT_DOH_TIMEOUT_MS} ms' when the resolver never answers`, async () => {
    const startedAt = Date.now();
    const resolution = await resolveName(KNOWN_NAME, configFor(DohStubPath.Hang), new NameCache());
    const elapsedMs = Date.now() - startedAt;
    expect(resolution).toEqual({ kind: "failed", reason: `resolver did not answer within ${DEFAULT_DOH_TIMEOUT_MS} ms` });
    expect(elapsedMs).toBeGreaterThanOrEqual(DEFAULT_DOH_TIMEOUT_MS);
    expect(elapsedMs).toBeLessThan(DEFAULT_DOH_TIMEOUT_MS + TIMEOUT_SLACK_MS);
  });

  it("does not follow a 307 redirect: fails with 'resolver answered HTTP 307', the Location never asked", async () => {
    const before = await stubStats();
    const resolution = await resolveName(KNOWN_NAME, configFor(DohStubPath.Redirect), new NameCache());
    expect(resolution).toEqual({ kind: "failed", reason: "resolver answered HTTP 307" });
    expect((await stubStats()).redirectTargetHits).toBe(before.redirectTargetHits);
  });

  it(`fails with 'resolver's answer is too large' for an answer over ${MAX_DNS_MESSAGE_BYTES} bytes`, async () => {
    const resolution = await resolveName(KNOWN_NAME, configFor(DohStubPath.Oversized), new NameCache());
    expect(resolution).toEqual({ kind: "failed", reason: "resolver's answer is too large" });
  });

  it(`stops reading an answer without a Content-Length once it passes ${MAX_DNS_MESSAGE_BYTES} bytes`, async () => {
    const before = await stubStats();
    const resolution = await resolveName(KNOWN_NAME, configFor(DohStubPath.Flood), new NameCache());
    expect(resolution).toEqual({ kind: "failed", reason: "resolver's answer is too large" });
    // A and AAAA: two answers, each hung up on long before FLOOD_ANSWER_BYTES.
    await expect.poll(async () => (await stubStats()).floodAbandoned - before.floodAbandoned).toBe(2);
    expect((await stubStats()).floodCompleted).toBe(before.floodCompleted);
  });
});
