// POST /dns (docs/protocol.md §9): the refusals in their order, a query answered through a
// DoH resolver stub on loopback (test/dns/doh-stub.ts), and each way the resolver can fail.

import { createExecutionContext } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import type { EdgeEnv } from "../../worker/config.ts";
import app from "../../worker/index.ts";
import { DNS_MESSAGE_TYPE, MAX_DNS_MESSAGE_BYTES } from "../../worker/protocol.ts";
import { KNOWN_ADDRESS, KNOWN_NAME, buildQuery, parseAnswer } from "../dns/dns-message.ts";
import { DohStubPath } from "../dns/doh-stub.ts";
import { TEST_TOKEN } from "./tunnel-client.ts";

const stubUrl = (path: string): string => `http://127.0.0.1:${inject("dohStubPort")}${path}`;
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
