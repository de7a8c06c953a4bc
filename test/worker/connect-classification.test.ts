// How the real Worker, in workerd, classifies failed dials into OPENED statuses (docs/protocol.md
// §6, §10; worker/connect-error.ts, worker/dial/dial-destination.ts), provoked on loopback:
// 0x04 for a name under .invalid, 0x05 (not 0x03) for a dial the kernel refuses as network
// unreachable, 0x06 when the dial outlives the edge's own connect timeout, and HTTP 500 for a
// classification variable that does not parse.
//
// What workerd hands a Worker for a failed dial is one message for every cause (sockets.c++
// Socket::handleProxyStatus; the kernel's errno is only logged), so the classifier's patterns for
// "network is unreachable", "no route" and "timed out" are reached only in test/unit/connect-error.test.ts.
//
// Every tunnel here runs with the DoH stub (test/dns/doh-stub.ts) as its resolver: a refused name
// is classified on loopback, never by asking a resolver on the internet.

import { afterEach, describe, expect, inject, it } from "vitest";
import type { EdgeEnv } from "../../worker/config.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS } from "../../worker/config.ts";
import { CLOUDFLARE_REFUSAL_MESSAGE, FETCH_HINT, isDialRefusal } from "../../worker/dial/emulation.ts";
import { AddressType, DEFAULT_WINDOW_BYTES, FrameType, OPEN_HEADER, StreamStatus, encodeHeaderOpen, encodeOpen } from "../../worker/protocol/index.ts";
import { TEST_TOKEN, closeAllTunnels, loopback, openTunnel, requestWithEnv, tunnelHeaders } from "./tunnel-client.ts";

/** The stand-in for production's resolver: answers from its table, NXDOMAIN for any other name. */
const stubEnv = (extra: Partial<EdgeEnv> = {}): EdgeEnv => ({
  EDGESOCKS_TOKEN: TEST_TOKEN,
  EDGESOCKS_DOH_URL: `http://127.0.0.1:${inject("dohStubPort")}/dns-query`,
  ...extra,
});

/**
 * The loopback broadcast address: Linux refuses a TCP connect to it with ENETUNREACH
 * (tcp_v4_connect refuses RTCF_BROADCAST routes), so it is a network-unreachable dial that stays on this machine.
 */
const LOOPBACK_BROADCAST = "127.255.255.255";

/** Slack for timers in a busy test run: the edge must not give up before its timeout. */
const EARLY_TOLERANCE_MS = 250;

afterEach(() => closeAllTunnels());

describe("classifying a failed dial", () => {
  it("answers OPENED HostUnreachable (0x04) for a name under .invalid, which the resolver says does not exist", async () => {
    // With the emulation on, as in every local run that names a domain that does not resolve: the
    // edge refuses such a name as production does without dialing it, so workerd does not ask
    // this machine's own DNS (a packet off loopback).
    const tunnel = await openTunnel(stubEnv({ EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: "127.0.0.2/32" }));
    const opened = await tunnel.open({ type: AddressType.Domain, host: "nothing.invalid", port: 9 });
    expect(opened).toEqual({ type: FrameType.Opened, status: StreamStatus.HostUnreachable, windowBytes: 0, reason: "nothing.invalid does not resolve (no A or AAAA record)" });
  });

  it("answers OPENED ConnectionRefused (0x05), not NetworkUnreachable, for a dial the kernel refuses with ENETUNREACH", async () => {
    // workerd reports the failure with production's one message; the edge can tell it no better.
    const tunnel = await openTunnel(stubEnv());
    const opened = await tunnel.open(loopback(inject("closedPort")));
    const broadcast = await (await openTunnel(stubEnv())).open({ type: AddressType.IPv4, host: LOOPBACK_BROADCAST, port: inject("closedPort") });
    expect(opened).toEqual({ type: FrameType.Opened, status: StreamStatus.ConnectionRefused, windowBytes: 0, reason: CLOUDFLARE_REFUSAL_MESSAGE });
    expect(broadcast).toEqual(opened);
  });

  it("appends workerd's fetch hint to the reason on port 80, and still answers 0x05", async () => {
    const tunnel = await openTunnel(stubEnv());
    const opened = await tunnel.open({ type: AddressType.IPv4, host: LOOPBACK_BROADCAST, port: 80 });
    expect(opened).toEqual({ type: FrameType.Opened, status: StreamStatus.ConnectionRefused, windowBytes: 0, reason: `${CLOUDFLARE_REFUSAL_MESSAGE}${FETCH_HINT}` });
  });

  it(
    "answers OPENED Timeout (0x06) when the dial has not finished within the edge's connect timeout",
    { timeout: DEFAULT_CONNECT_TIMEOUT_MS + 10_000 },
    async () => {
      // The dial goes to an upstream SOCKS5 proxy that accepts and never answers the greeting
      // (countThenReply answers only after a FIN): a blackhole on loopback, whose wait only the
      // edge's own timer can end.
      const silentUpstream = `socks5://127.0.0.1:${inject("countThenReplyPort")}`;
      const tunnel = await openTunnel(stubEnv({ EDGESOCKS_UPSTREAM: silentUpstream, EDGESOCKS_UPSTREAM_FOR: "all" }));
      const destination = loopback(inject("echoPort"));
      const startedAt = Date.now();
      tunnel.send(encodeOpen(destination, DEFAULT_WINDOW_BYTES));
      const opened = await tunnel.expectFrame(FrameType.Opened, DEFAULT_CONNECT_TIMEOUT_MS + 5_000);
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(DEFAULT_CONNECT_TIMEOUT_MS - EARLY_TOLERANCE_MS);
      expect(opened).toEqual({
        type: FrameType.Opened,
        status: StreamStatus.Timeout,
        windowBytes: 0,
        reason: `no connection to 127.0.0.1:${inject("echoPort")} within ${DEFAULT_CONNECT_TIMEOUT_MS} ms`,
      });
    },
  );
});

describe("isDialRefusal: the failures the edge classifies further (docs/protocol.md §10)", () => {
  it.each([
    { message: CLOUDFLARE_REFUSAL_MESSAGE, refusal: true },
    { message: `${CLOUDFLARE_REFUSAL_MESSAGE}${FETCH_HINT}`, refusal: true },
    // Local workerd's wording of a failed lookup (kj-rs, as logged: "failed to lookup address information: ...").
    { message: "Socket proxy disconnected abruptly: failed to lookup address information: Name or service not known", refusal: true },
    // sockets.c++, a connect whose result itself failed: nothing to classify.
    { message: "connection attempt failed", refusal: false },
    { message: "connect ECONNREFUSED 127.0.0.1:9", refusal: false },
  ])("is $refusal for $message", ({ message, refusal }) => {
    expect(isDialRefusal(new Error(message))).toBe(refusal);
  });

  it("refuses with the runtime's own wording (workerd sockets.c++ Socket::handleProxyStatus)", () => {
    expect(CLOUDFLARE_REFUSAL_MESSAGE).toBe("proxy request failed, cannot connect to the specified address");
    expect(FETCH_HINT).toBe(". It looks like you might be trying to connect to a HTTP-based service — consider using fetch instead");
  });
});

describe("a classification variable that does not parse", () => {
  it("answers a cold open with HTTP 500 naming EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS, and opens no tunnel", async () => {
    const open = encodeHeaderOpen(encodeOpen(loopback(inject("echoPort")), DEFAULT_WINDOW_BYTES));
    const response = await requestWithEnv(stubEnv({ EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: "127.0.0.2/33" }), "/tunnel", { headers: tunnelHeaders({ [OPEN_HEADER]: open }) });
    expect(response.status).toBe(500);
    expect(response.headers.get("Content-Type")).toBe("text/plain; charset=utf-8");
    expect(await response.text()).toMatch(/^edgesocks is misconfigured: EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS entry 1 .*\n$/);
    expect(response.webSocket).toBeNull();
  });

  it("answers HTTP 500 naming EDGESOCKS_UPSTREAM_FOR=all without EDGESOCKS_UPSTREAM", async () => {
    const response = await requestWithEnv(stubEnv({ EDGESOCKS_UPSTREAM_FOR: "all" }));
    expect(response.status).toBe(500);
    expect(await response.text()).toBe("edgesocks is misconfigured: EDGESOCKS_UPSTREAM_FOR=all needs EDGESOCKS_UPSTREAM\n");
  });
});
