// The edge's classifier of connect() failures (worker/connect-error.ts, docs/protocol.md §6), fed
// the exact messages the Workers runtime gives. (isDialRefusal, in worker/dial/emulation.ts,
// imports cloudflare:sockets and is tested inside workerd: test/worker/connect-classification.test.ts.)
//
// Where the messages come from: workerd src/workerd/api/sockets.c++ (connectImplNoOutputLock's
// TypeErrors; Socket::handleProxyStatus, which turns every failed dial into one Error and logs
// the kernel's reason only as "Socket proxy disconnected abruptly"), each also present as a
// string in the workerd binary the tests run (@cloudflare/workerd-linux-64, workerd 2026-11-02).
// The runtime never hands a Worker ENETUNREACH, EHOSTUNREACH or a timeout as text: a TCP dial the
// kernel refuses with ENETUNREACH (127.255.255.255, the loopback broadcast) reaches the edge as
// production's refusal (test/worker/connect-classification.test.ts). The classifier's patterns
// for those statuses are therefore tested here, with the errno-style texts they are written for.

import { describe, expect, it } from "vitest";
import { BLOCKED_PORTS, errorMessage, statusForConnectError } from "../../worker/connect-error.ts";
import { StreamStatus } from "../../worker/protocol/index.ts";

/** sockets.c++ Socket::handleProxyStatus: the one message for a refused port, a failed lookup and a Cloudflare address. */
const PROXY_REFUSAL = "proxy request failed, cannot connect to the specified address";
/** The same, on ports 80 and 443 (isDefaultFetchPort). */
const PROXY_REFUSAL_WITH_HINT = `${PROXY_REFUSAL}. It looks like you might be trying to connect to a HTTP-based service — consider using fetch instead`;
/** sockets.c++ Socket::handleProxyStatus(Promise<Maybe<Exception>>): a connect whose result itself failed. */
const CONNECTION_ATTEMPT_FAILED = "connection attempt failed";

describe("statusForConnectError with the runtime's own messages", () => {
  it.each([
    { message: PROXY_REFUSAL, status: StreamStatus.ConnectionRefused },
    { message: PROXY_REFUSAL_WITH_HINT, status: StreamStatus.ConnectionRefused },
    // Nothing in it says why: a general failure, never a guess.
    { message: CONNECTION_ATTEMPT_FAILED, status: StreamStatus.GeneralFailure },
    // connectImplNoOutputLock's TypeErrors, thrown by connect() itself.
    { message: "Specified address could not be parsed.", status: StreamStatus.GeneralFailure },
    { message: "Specified address is missing hostname.", status: StreamStatus.GeneralFailure },
    { message: "Specified address is empty string, contains unsupported characters or is too long.", status: StreamStatus.GeneralFailure },
    // A socket lost after it opened (workerd's legacy read and write error), should one reach the classifier.
    { message: "Network connection lost.", status: StreamStatus.GeneralFailure },
  ])("maps $message to status $status", ({ message, status }) => {
    expect(statusForConnectError(new Error(message))).toBe(status);
  });
});

describe("statusForConnectError with the errno-style texts its patterns are written for", () => {
  it.each([
    // 0x03: nothing in workerd says this today; an ENETUNREACH dial is PROXY_REFUSAL there.
    { message: "connect ENETUNREACH 10.0.0.1:443 - Local (0.0.0.0:0)", status: StreamStatus.NetworkUnreachable },
    { message: "Network is unreachable", status: StreamStatus.NetworkUnreachable },
    // 0x04, by route and by name.
    { message: "connect EHOSTUNREACH 10.0.0.1:443", status: StreamStatus.HostUnreachable },
    { message: "No route to host", status: StreamStatus.HostUnreachable },
    { message: "Host is unreachable", status: StreamStatus.HostUnreachable },
    { message: "getaddrinfo ENOTFOUND nothing.invalid", status: StreamStatus.HostUnreachable },
    { message: "DNS lookup failed", status: StreamStatus.HostUnreachable },
    { message: "could not resolve host", status: StreamStatus.HostUnreachable },
    { message: "no such host", status: StreamStatus.HostUnreachable },
    // 0x06 by message (the edge's own connect timeout is tested in workerd).
    { message: "Connection timed out", status: StreamStatus.Timeout },
    { message: "connect timeout", status: StreamStatus.Timeout },
    // 0x05 and 0x02.
    { message: "connect ECONNREFUSED 127.0.0.1:9", status: StreamStatus.ConnectionRefused },
    { message: "Connection refused", status: StreamStatus.ConnectionRefused },
    { message: "connections to this address are prohibited", status: StreamStatus.NotAllowed },
    { message: "port not allowed", status: StreamStatus.NotAllowed },
    { message: "destination blocked", status: StreamStatus.NotAllowed },
    { message: "Loop detected", status: StreamStatus.NotAllowed },
    { message: "something nobody expected", status: StreamStatus.GeneralFailure },
  ])("maps $message to status $status", ({ message, status }) => {
    expect(statusForConnectError(new Error(message))).toBe(status);
  });

  it("tries the statuses in the documented order: NotAllowed, Timeout, DNS, network, route, refused", () => {
    expect(statusForConnectError(new Error("blocked: connection timed out"))).toBe(StreamStatus.NotAllowed);
    expect(statusForConnectError(new Error("DNS lookup timed out"))).toBe(StreamStatus.Timeout);
    expect(statusForConnectError(new Error("dns: network is unreachable"))).toBe(StreamStatus.HostUnreachable);
    expect(statusForConnectError(new Error("network is unreachable: no route to host"))).toBe(StreamStatus.NetworkUnreachable);
    expect(statusForConnectError(new Error("no route to host, connection refused"))).toBe(StreamStatus.HostUnreachable);
  });

  it("classifies thrown values that are not Errors by their text, and nothing as a general failure", () => {
    expect(statusForConnectError("ECONNREFUSED")).toBe(StreamStatus.ConnectionRefused);
    expect(statusForConnectError(undefined)).toBe(StreamStatus.GeneralFailure);
    expect(errorMessage("plain text")).toBe("plain text");
    expect(errorMessage(new TypeError("typed"))).toBe("typed");
  });

  it("refuses port 25 before any dial", () => {
    expect(BLOCKED_PORTS.has(25)).toBe(true);
    expect(BLOCKED_PORTS.has(587)).toBe(false);
  });
});
