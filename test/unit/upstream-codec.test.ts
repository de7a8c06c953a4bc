// The upstream-proxy message codec (worker/dial/upstream-codec.ts): SOCKS5 greeting, RFC 1929
// and CONNECT messages, their replies with every short and malformed form, the reply-to-status
// table, and HTTP CONNECT requests and response heads.

import { describe, expect, it } from "vitest";
import {
  AuthMethod,
  MAX_HTTP_HEAD_BYTES,
  Reply,
  STATUS_FOR_REPLY,
  UpstreamError,
  classifyConnectResponse,
  encodeConnectRequest,
  encodeGreeting,
  encodeHttpConnect,
  encodeUserPass,
  offeredMethod,
  parseConnectReply,
  parseHttpResponseHead,
  parseMethodSelection,
  parseUserPassStatus,
  type HttpResponseHead,
} from "../../worker/dial/upstream-codec.ts";
import { parseUpstreamUrl } from "../../worker/dial/upstream-url.ts";
import { AddressType, StreamStatus, type Destination } from "../../worker/protocol/index.ts";

const SOCKS_LABEL = "socks5://127.0.0.1:1080";
const HTTP_LABEL = "http://127.0.0.1:8888";
const utf8 = new TextEncoder();
const text = new TextDecoder();

/** The UpstreamError `parse` throws; fails the test if it returns. */
function upstreamError(parse: () => unknown): UpstreamError {
  try {
    parse();
  } catch (error) {
    expect(error).toBeInstanceOf(UpstreamError);
    return error as UpstreamError;
  }
  throw new Error("the parser accepted the input");
}

function hexByte(byte: number): string {
  return `0x${byte.toString(16).padStart(2, "0")}`;
}

/** Every proper prefix of `message` parses as "incomplete". */
function expectIncompleteForEveryPrefix(message: Uint8Array, parse: (bytes: Uint8Array) => unknown): void {
  for (let length = 0; length < message.byteLength; length++) {
    expect(parse(message.subarray(0, length)), `prefix of ${length} bytes`).toBe("incomplete");
  }
}

describe("SOCKS5 method selection", () => {
  it("offers username/password only when the proxy has credentials, and no authentication only when it has none", () => {
    const withCredentials = parseUpstreamUrl("socks5://alice:pw@127.0.0.1:1080");
    const without = parseUpstreamUrl("socks5://127.0.0.1:1080");
    expect(offeredMethod(withCredentials)).toBe(AuthMethod.UsernamePassword);
    expect(offeredMethod(without)).toBe(AuthMethod.NoAuthentication);
    expect(Array.from(encodeGreeting(offeredMethod(withCredentials)))).toEqual([0x05, 0x01, 0x02]);
    expect(Array.from(encodeGreeting(offeredMethod(without)))).toEqual([0x05, 0x01, 0x00]);
  });

  it("reports incomplete for every prefix, then the chosen method, leaving later bytes unused", () => {
    const parse = (bytes: Uint8Array) => parseMethodSelection(bytes, AuthMethod.UsernamePassword, SOCKS_LABEL);
    expectIncompleteForEveryPrefix(Uint8Array.of(0x05, 0x02), parse);
    expect(parse(Uint8Array.of(0x05, 0x02, 0x01, 0x00))).toEqual({ value: AuthMethod.UsernamePassword, bytesUsed: 2 });
  });

  it("refuses 0xFF saying the upstream accepts none of the offered methods", () => {
    const error = upstreamError(() => parseMethodSelection(Uint8Array.of(0x05, 0xff), AuthMethod.NoAuthentication, SOCKS_LABEL));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe("upstream socks5://127.0.0.1:1080 accepts none of the offered methods (offered 0x00 no authentication)");
  });

  it("refuses a method that was not offered", () => {
    const error = upstreamError(() => parseMethodSelection(Uint8Array.of(0x05, 0x00), AuthMethod.UsernamePassword, SOCKS_LABEL));
    expect(error.message).toBe("upstream socks5://127.0.0.1:1080 chose method 0x00, which was not offered (offered 0x02 username/password)");
  });

  it("refuses a first byte that is not version 5, before the second byte arrives", () => {
    const error = upstreamError(() => parseMethodSelection(Uint8Array.of(0x48), AuthMethod.NoAuthentication, SOCKS_LABEL));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe("upstream socks5://127.0.0.1:1080 did not answer as SOCKS5: version byte 0x48, not 0x05");
  });
});

describe("RFC 1929 username/password", () => {
  it("encodes version 1, length-prefixed UTF-8 name and password", () => {
    expect(Array.from(encodeUserPass("al", "pé"))).toEqual([0x01, 2, 0x61, 0x6c, 3, 0x70, 0xc3, 0xa9]);
  });

  it("encodes fields of exactly 255 bytes and refuses 0 or 256", () => {
    expect(encodeUserPass("u".repeat(255), "p".repeat(255)).byteLength).toBe(3 + 255 + 255);
    expect(() => encodeUserPass("", "pw")).toThrow(new RangeError("RFC 1929 user name is 0 bytes; 1 to 255 allowed"));
    expect(() => encodeUserPass("alice", "")).toThrow(new RangeError("RFC 1929 password is 0 bytes; 1 to 255 allowed"));
    expect(() => encodeUserPass("alice", "é".repeat(128))).toThrow(new RangeError("RFC 1929 password is 256 bytes; 1 to 255 allowed"));
  });

  it("reports incomplete for every prefix of the status, then accepts status 0", () => {
    const parse = (bytes: Uint8Array) => parseUserPassStatus(bytes, SOCKS_LABEL);
    expectIncompleteForEveryPrefix(Uint8Array.of(0x01, 0x00), parse);
    expect(parse(Uint8Array.of(0x01, 0x00, 0x05))).toEqual({ value: null, bytesUsed: 2 });
  });

  it("accepts a status whose version byte is the SOCKS version, as some servers send", () => {
    expect(parseUserPassStatus(Uint8Array.of(0x05, 0x00), SOCKS_LABEL)).toEqual({ value: null, bytesUsed: 2 });
  });

  it.each([0x01, 0x02, 0xff].map((status) => [hexByte(status), status] as const))("refuses status %s with the fixed message that names no credential", (_hex, status) => {
    const error = upstreamError(() => parseUserPassStatus(Uint8Array.of(0x01, status), SOCKS_LABEL));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe("upstream socks5://127.0.0.1:1080 refused the user name or password");
  });

  it("refuses a status reply with another version byte", () => {
    const error = upstreamError(() => parseUserPassStatus(Uint8Array.of(0x04), SOCKS_LABEL));
    expect(error.message).toBe("upstream socks5://127.0.0.1:1080 did not answer as RFC 1929: version byte 0x04, not 0x01");
  });
});

describe("SOCKS5 CONNECT request", () => {
  it("lays out VER CMD RSV, the address as encodeAddress does, and the port", () => {
    expect(Array.from(encodeConnectRequest({ type: AddressType.IPv4, host: "192.0.2.1", port: 443 }))).toEqual([5, 1, 0, 1, 192, 0, 2, 1, 0x01, 0xbb]);
    expect(Array.from(encodeConnectRequest({ type: AddressType.Domain, host: "ex.org", port: 80 }))).toEqual([5, 1, 0, 3, 6, ...utf8.encode("ex.org"), 0, 80]);
    expect(Array.from(encodeConnectRequest({ type: AddressType.IPv6, host: "::1", port: 8443 }))).toEqual([5, 1, 0, 4, ...new Array(15).fill(0), 1, 0x20, 0xfb]);
  });

  it("refuses a destination outside the protocol with a RangeError", () => {
    expect(() => encodeConnectRequest({ type: AddressType.IPv4, host: "192.0.2.1", port: 0 })).toThrow(RangeError);
    expect(() => encodeConnectRequest({ type: AddressType.Domain, host: "x".repeat(256), port: 80 })).toThrow(RangeError);
  });
});

describe("SOCKS5 CONNECT reply", () => {
  const parse = (bytes: Uint8Array) => parseConnectReply(bytes, SOCKS_LABEL);
  const ipv4Reply = Uint8Array.of(5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90);
  const ipv6Reply = Uint8Array.of(5, 0, 0, 4, 0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1, 0, 80);
  const domainReply = Uint8Array.of(5, 0, 0, 3, 7, ...utf8.encode("a.b.cde"), 0x04, 0x38);

  it.each([
    ["IPv4", ipv4Reply, { type: AddressType.IPv4, host: "10.0.0.1", port: 8080 }],
    ["IPv6", ipv6Reply, { type: AddressType.IPv6, host: "2001:db8::1", port: 80 }],
    ["domain", domainReply, { type: AddressType.Domain, host: "a.b.cde", port: 1080 }],
  ])("reports incomplete for every prefix of a %s-bound reply, then the bound address", (_name, reply, bound) => {
    expectIncompleteForEveryPrefix(reply, parse);
    expect(parse(reply)).toEqual({ value: bound, bytesUsed: reply.byteLength });
  });

  it("uses only the reply and leaves the bytes that follow it", () => {
    const input = Uint8Array.from([...ipv4Reply, 0x16, 0x03, 0x01]);
    expect(parse(input)).toEqual({ value: { type: AddressType.IPv4, host: "10.0.0.1", port: 8080 }, bytesUsed: 10 });
  });

  it("accepts an empty bound domain name and ignores a non-zero RSV", () => {
    expect(parse(Uint8Array.of(5, 0, 0x7f, 3, 0, 0, 0))).toEqual({ value: { type: AddressType.Domain, host: "", port: 0 }, bytesUsed: 7 });
  });

  const failureReplies: Array<[code: number, status: StreamStatus, message: string]> = [
    [Reply.GeneralFailure, StreamStatus.GeneralFailure, "upstream socks5://127.0.0.1:1080 answered 0x01 (general SOCKS server failure)"],
    [Reply.NotAllowedByRuleset, StreamStatus.NotAllowed, "upstream socks5://127.0.0.1:1080 answered 0x02 (connection not allowed by ruleset)"],
    [Reply.NetworkUnreachable, StreamStatus.NetworkUnreachable, "upstream socks5://127.0.0.1:1080 answered 0x03 (network unreachable)"],
    [Reply.HostUnreachable, StreamStatus.HostUnreachable, "upstream socks5://127.0.0.1:1080 answered 0x04 (host unreachable)"],
    [Reply.ConnectionRefused, StreamStatus.ConnectionRefused, "upstream socks5://127.0.0.1:1080 answered 0x05 (connection refused)"],
    [Reply.TtlExpired, StreamStatus.Timeout, "upstream socks5://127.0.0.1:1080 answered 0x06 (TTL expired)"],
    [Reply.CommandNotSupported, StreamStatus.GeneralFailure, "upstream socks5://127.0.0.1:1080 answered 0x07 (command not supported)"],
    [Reply.AddressTypeNotSupported, StreamStatus.GeneralFailure, "upstream socks5://127.0.0.1:1080 answered 0x08 (address type not supported)"],
    [0x09, StreamStatus.GeneralFailure, "upstream socks5://127.0.0.1:1080 answered 0x09 (not a reply RFC 1928 defines)"],
    [0xff, StreamStatus.GeneralFailure, "upstream socks5://127.0.0.1:1080 answered 0xff (not a reply RFC 1928 defines)"],
  ];
  it.each(failureReplies.map(([code, status, message]) => [hexByte(code), status, code, message] as const))("maps failure reply %s to status %i, as soon as the code arrives", (_hex, status, code, message) => {
    const error = upstreamError(() => parse(Uint8Array.of(5, code)));
    expect(error.status).toBe(status);
    expect(error.message).toBe(message);
  });

  it("maps every RFC 1928 failure reply in one table", () => {
    expect(Object.keys(STATUS_FOR_REPLY).map(Number).sort()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("refuses a reply that is not version 5", () => {
    expect(upstreamError(() => parse(Uint8Array.of(0x00))).message).toBe("upstream socks5://127.0.0.1:1080 did not answer as SOCKS5: version byte 0x00, not 0x05");
  });

  it.each([0x00, 0x02, 0x05, 0xff].map((addressType) => [hexByte(addressType), addressType] as const))("refuses bound address type %s, which RFC 1928 does not define", (hex, addressType) => {
    const error = upstreamError(() => parse(Uint8Array.of(5, 0, 0, addressType)));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream socks5://127.0.0.1:1080 answered with address type ${hex}, which RFC 1928 does not define`);
  });
});

describe("HTTP CONNECT request", () => {
  const ipv4: Destination = { type: AddressType.IPv4, host: "192.0.2.1", port: 443 };

  it("names the authority in the request target and Host, without Proxy-Authorization when there are no credentials", () => {
    expect(text.decode(encodeHttpConnect(parseUpstreamUrl("http://127.0.0.1:8888"), ipv4))).toBe("CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\n\r\n");
  });

  it("brackets IPv6 and passes a domain as written", () => {
    const proxy = parseUpstreamUrl("http://127.0.0.1:8888");
    expect(text.decode(encodeHttpConnect(proxy, { type: AddressType.IPv6, host: "2001:db8::1", port: 443 }))).toBe(
      "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n",
    );
    expect(text.decode(encodeHttpConnect(proxy, { type: AddressType.Domain, host: "Example.ORG", port: 80 }))).toBe(
      "CONNECT Example.ORG:80 HTTP/1.1\r\nHost: Example.ORG:80\r\n\r\n",
    );
  });

  it("sends Proxy-Authorization: Basic of user:password in UTF-8", () => {
    const request = text.decode(encodeHttpConnect(parseUpstreamUrl("http://j%C3%BCrgen:p%C3%A4ss@127.0.0.1:8888"), ipv4));
    expect(request).toBe(`CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\nProxy-Authorization: Basic ${Buffer.from("jürgen:päss").toString("base64")}\r\n\r\n`);
  });

  it("sends user: for a user name with an empty password", () => {
    const request = text.decode(encodeHttpConnect(parseUpstreamUrl("http://alice@127.0.0.1:8888"), ipv4));
    expect(request).toContain(`Proxy-Authorization: Basic ${Buffer.from("alice:").toString("base64")}\r\n`);
  });

  it("refuses a destination that could inject a header line", () => {
    const proxy = parseUpstreamUrl("http://127.0.0.1:8888");
    expect(() => encodeHttpConnect(proxy, { type: AddressType.Domain, host: "a.example\r\nX-Evil: 1", port: 80 })).toThrow(
      new RangeError("destination is not a host name an HTTP request target can carry"),
    );
    expect(() => encodeHttpConnect(proxy, { type: AddressType.IPv6, host: "::1]\r\n", port: 80 })).toThrow(RangeError);
    expect(() => encodeHttpConnect(proxy, { ...ipv4, port: 70000 })).toThrow(RangeError);
  });
});

describe("HTTP response head", () => {
  const parse = (input: string | Uint8Array, interimBytes?: number) => parseHttpResponseHead(typeof input === "string" ? utf8.encode(input) : input, HTTP_LABEL, interimBytes);

  it("reports incomplete for every prefix of a head, then the status, using only the head", () => {
    const head = "HTTP/1.1 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n";
    expectIncompleteForEveryPrefix(utf8.encode(head), (bytes) => parse(bytes));
    expect(parse(`${head}\x16\x03\x01`)).toEqual({ value: { statusCode: 200, reasonPhrase: "Connection established" }, bytesUsed: head.length });
  });

  it("ends lines at a bare LF too (RFC 9112 section 2.2)", () => {
    expect(parse("HTTP/1.0 200 OK\nVia: x\n\nrest")).toEqual({ value: { statusCode: 200, reasonPhrase: "OK" }, bytesUsed: 24 });
  });

  it("accepts a status line without a reason phrase, with or without its space", () => {
    expect(parse("HTTP/1.1 200\r\n\r\n")).toEqual({ value: { statusCode: 200, reasonPhrase: "" }, bytesUsed: 16 });
    expect(parse("HTTP/1.1 204 \r\n\r\n")).toEqual({ value: { statusCode: 204, reasonPhrase: "" }, bytesUsed: 17 });
  });

  it("sanitizes the reason phrase to printable ASCII and caps it at 64 characters", () => {
    const phrase = `Bad\tGateway ${"x".repeat(100)}`;
    const result = parse(`HTTP/1.1 502 ${phrase}\r\n\r\n`);
    expect(result).not.toBe("incomplete");
    if (result === "incomplete") return;
    expect(result.value.reasonPhrase).toBe(`Bad?Gateway ${"x".repeat(52)}`);
    const latin = parse(Uint8Array.from([...utf8.encode("HTTP/1.1 502 Bad "), 0xe9, 0x00, ...utf8.encode("\r\n\r\n")]));
    expect(latin !== "incomplete" && latin.value.reasonPhrase).toBe("Bad ??");
  });

  it.each([
    ["SSH-2.0-OpenSSH_9.2\r\n", 'upstream http://127.0.0.1:8888 did not answer as an HTTP proxy: its answer starts "SSH-2.0-OpenSSH_9.2??"'],
    ["\x05\x00", 'upstream http://127.0.0.1:8888 did not answer as an HTTP proxy: its answer starts "??"'],
    ["http/1.1 200 OK\r\n\r\n", 'upstream http://127.0.0.1:8888 did not answer as an HTTP proxy: its answer starts "http/1.1 200 OK????"'],
  ])("refuses %j as not HTTP from its first bytes", (answer, message) => {
    const error = upstreamError(() => parse(answer));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(message);
  });

  it("refuses a non-HTTP first byte before the rest of the head arrives", () => {
    expect(upstreamError(() => parse("S")).message).toBe('upstream http://127.0.0.1:8888 did not answer as an HTTP proxy: its answer starts "S"');
  });

  it.each([
    ["HTTP/2 200\r\n\r\n", "HTTP/2 200"],
    ["HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 20 OK"],
    ["HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 2000 OK"],
    ["HTTP/1.1  200 OK\r\n\r\n", "HTTP/1.1  200 OK"],
    ["HTTP/1.1\r\n\r\n", "HTTP/1.1"],
  ])("refuses the malformed status line %j", (answer, shown) => {
    expect(upstreamError(() => parse(answer)).message).toBe(`upstream http://127.0.0.1:8888 did not answer as an HTTP proxy: its status line is "${shown}"`);
  });

  it("refuses a head that has not ended within the bound, and accepts one that ends exactly at it", () => {
    const filler = `HTTP/1.1 200 OK\r\nX-Pad: ${"a".repeat(MAX_HTTP_HEAD_BYTES)}`;
    const error = upstreamError(() => parse(filler.slice(0, MAX_HTTP_HEAD_BYTES)));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream http://127.0.0.1:8888 sent a response head longer than ${MAX_HTTP_HEAD_BYTES} bytes`);
    expect(parse(filler.slice(0, MAX_HTTP_HEAD_BYTES - 1))).toBe("incomplete");
    const exact = `HTTP/1.1 200 OK\r\nX-Pad: ${"a".repeat(MAX_HTTP_HEAD_BYTES - 28)}\r\n\r\n`;
    expect(exact.length).toBe(MAX_HTTP_HEAD_BYTES);
    expect(parse(`${exact}more`)).toMatchObject({ bytesUsed: MAX_HTTP_HEAD_BYTES });
  });

  it("counts interim heads already read against the same bound", () => {
    const exact = `HTTP/1.1 200 OK\r\nX-Pad: ${"a".repeat(MAX_HTTP_HEAD_BYTES - 28)}\r\n\r\n`;
    expect(parse(exact, 0)).toMatchObject({ bytesUsed: MAX_HTTP_HEAD_BYTES });
    expect(upstreamError(() => parse(exact, 1)).message).toBe(
      `upstream http://127.0.0.1:8888 sent response heads (interim 1xx included) longer than ${MAX_HTTP_HEAD_BYTES} bytes`,
    );
    expect(upstreamError(() => parse("H", MAX_HTTP_HEAD_BYTES)).message).toContain("longer than");
  });
});

describe("classifyConnectResponse", () => {
  const head = (statusCode: number, reasonPhrase = ""): HttpResponseHead => ({ statusCode, reasonPhrase });

  it.each([200, 201, 204, 299])("opens the tunnel on %i", (code) => {
    expect(classifyConnectResponse(head(code), HTTP_LABEL, false)).toBe("open");
  });

  it.each([100, 102, 103, 199])("skips interim %i", (code) => {
    expect(classifyConnectResponse(head(code), HTTP_LABEL, false)).toBe("interim");
  });

  it.each([
    [403, "Forbidden", false, StreamStatus.NotAllowed, "upstream http://127.0.0.1:8888 answered 403 Forbidden"],
    [407, "Proxy Authentication Required", true, StreamStatus.GeneralFailure, "upstream http://127.0.0.1:8888 refused the credentials (407 Proxy Authentication Required)"],
    [407, "Proxy Authentication Required", false, StreamStatus.GeneralFailure, "upstream http://127.0.0.1:8888 wants credentials (407 Proxy Authentication Required)"],
    [401, "Unauthorized", true, StreamStatus.GeneralFailure, "upstream http://127.0.0.1:8888 refused the credentials (401 Unauthorized)"],
    [504, "Gateway Timeout", false, StreamStatus.Timeout, "upstream http://127.0.0.1:8888 answered 504 Gateway Timeout"],
    [502, "Bad Gateway", false, StreamStatus.GeneralFailure, "upstream http://127.0.0.1:8888 answered 502 Bad Gateway"],
    [503, "Service Unavailable", false, StreamStatus.GeneralFailure, "upstream http://127.0.0.1:8888 answered 503 Service Unavailable"],
    [500, "Unable to connect", false, StreamStatus.GeneralFailure, "upstream http://127.0.0.1:8888 answered 500 Unable to connect"],
    [101, "Switching Protocols", false, StreamStatus.GeneralFailure, "upstream http://127.0.0.1:8888 answered 101 Switching Protocols"],
    [302, "", false, StreamStatus.GeneralFailure, "upstream http://127.0.0.1:8888 answered 302"],
  ])("maps %i %s (credentials sent: %s) to status %i", (code, phrase, sentCredentials, status, message) => {
    const outcome = classifyConnectResponse(head(code, phrase), HTTP_LABEL, sentCredentials);
    expect(outcome).toBeInstanceOf(UpstreamError);
    expect(outcome).toMatchObject({ status, message });
  });
});
