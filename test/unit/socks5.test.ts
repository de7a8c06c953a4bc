// The agent's SOCKS5 codec (local-agent/front/socks5.ts, RFC 1928): greeting and request parsing,
// the reply each refusal carries, reply encoding and the status-to-reply mapping.

import { describe, expect, it } from "vitest";
import {
  AuthMethod,
  Command,
  MAX_GREETING_BYTES,
  MAX_REQUEST_BYTES,
  REPLY_FOR_STATUS,
  Reply,
  SOCKS_VERSION,
  Socks5Error,
  encodeMethodSelection,
  encodeReply,
  parseGreeting,
  parseRequest,
} from "../../local-agent/front/socks5.ts";
import { AddressType, StreamStatus } from "../../worker/protocol/index.ts";

const utf8 = new TextEncoder();

function request(command: number, addressType: number, address: ArrayLike<number>, port: number): Uint8Array {
  return Uint8Array.from([SOCKS_VERSION, command, 0x00, addressType, ...Array.from(address), port >>> 8, port & 0xff]);
}
function domainRequest(host: string | Uint8Array, port = 443, command: number = Command.Connect): Uint8Array {
  const name = typeof host === "string" ? utf8.encode(host) : host;
  return request(command, AddressType.Domain, [name.byteLength, ...name], port);
}
const ipv4Request = request(Command.Connect, AddressType.IPv4, [192, 0, 2, 1], 443);
const ipv6Request = request(Command.Connect, AddressType.IPv6, [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1], 8443);

/** The Socks5Error `parse` throws; fails the test if it returns. */
function socksError(parse: () => unknown): Socks5Error {
  try {
    parse();
  } catch (error) {
    expect(error).toBeInstanceOf(Socks5Error);
    return error as Socks5Error;
  }
  throw new Error("the parser accepted the input");
}

describe("parseGreeting", () => {
  it("reports incomplete for every prefix of a greeting", () => {
    const greeting = Uint8Array.of(SOCKS_VERSION, 2, AuthMethod.NoAuthentication, 0x02);
    for (let length = 0; length < greeting.byteLength; length++) {
      expect(parseGreeting(greeting.subarray(0, length))).toBe("incomplete");
    }
  });

  it("returns the offered methods and leaves pipelined bytes unconsumed", () => {
    const input = Uint8Array.from([SOCKS_VERSION, 2, 0x00, 0x02, ...ipv4Request]);
    expect(parseGreeting(input)).toEqual({ value: { methods: [0x00, 0x02] }, bytesUsed: 4 });
  });

  it("parses the longest greeting, 255 methods", () => {
    const methods = Array.from({ length: 255 }, (_, index) => index);
    const input = Uint8Array.from([SOCKS_VERSION, 255, ...methods]);
    expect(input.byteLength).toBe(MAX_GREETING_BYTES);
    expect(parseGreeting(input)).toEqual({ value: { methods }, bytesUsed: MAX_GREETING_BYTES });
  });

  it.each([0x04, 0x00, 0x16, 0x47])("refuses version byte %i with no reply, from the first byte", (version) => {
    const error = socksError(() => parseGreeting(Uint8Array.of(version)));
    expect(error.reply).toBeUndefined();
    expect(error.message).toMatch(/not SOCKS5/);
  });

  it("refuses a greeting that offers no methods, with no reply", () => {
    const error = socksError(() => parseGreeting(Uint8Array.of(SOCKS_VERSION, 0)));
    expect(error.reply).toBeUndefined();
    expect(error.name).toBe("Socks5Error");
  });
});

describe("encodeMethodSelection", () => {
  it("answers with the chosen method, or 0xFF when none is acceptable", () => {
    expect(Array.from(encodeMethodSelection(AuthMethod.NoAuthentication))).toEqual([0x05, 0x00]);
    expect(Array.from(encodeMethodSelection(AuthMethod.NoAcceptableMethods))).toEqual([0x05, 0xff]);
  });
});

describe("parseRequest", () => {
  it.each([
    ["IPv4", ipv4Request],
    ["IPv6", ipv6Request],
    ["domain", domainRequest("example.com")],
  ])("reports incomplete for every prefix of a %s request", (_kind, complete) => {
    for (let length = 0; length < complete.byteLength; length++) {
      expect(parseRequest(complete.subarray(0, length))).toBe("incomplete");
    }
  });

  it("parses an IPv4 CONNECT", () => {
    expect(parseRequest(ipv4Request)).toEqual({
      value: { command: Command.Connect, destination: { type: AddressType.IPv4, host: "192.0.2.1", port: 443 } },
      bytesUsed: 10,
    });
  });

  it("parses an IPv6 CONNECT into RFC 5952 text", () => {
    expect(parseRequest(ipv6Request)).toEqual({
      value: { command: Command.Connect, destination: { type: AddressType.IPv6, host: "2001:db8::1", port: 8443 } },
      bytesUsed: 22,
    });
  });

  it("parses a domain CONNECT and leaves pipelined client bytes unconsumed", () => {
    const complete = domainRequest("example.com", 80);
    const input = Uint8Array.from([...complete, ...utf8.encode("GET / HTTP/1.1\r\n")]);
    expect(parseRequest(input)).toEqual({
      value: { command: Command.Connect, destination: { type: AddressType.Domain, host: "example.com", port: 80 } },
      bytesUsed: complete.byteLength,
    });
  });

  it("parses the longest request, a 255-byte domain", () => {
    const host = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(63)}`;
    const input = domainRequest(host, 65535);
    expect(input.byteLength).toBe(MAX_REQUEST_BYTES);
    expect(parseRequest(input)).toMatchObject({ value: { destination: { type: AddressType.Domain, host, port: 65535 } }, bytesUsed: MAX_REQUEST_BYTES });
  });

  describe("maps IP literals sent as domain names to address types", () => {
    it.each([
      ["192.0.2.1", AddressType.IPv4, "192.0.2.1"],
      ["2001:DB8:0:0::1", AddressType.IPv6, "2001:db8::1"],
      ["[2001:db8::1]", AddressType.IPv6, "2001:db8::1"],
      ["::1", AddressType.IPv6, "::1"],
      ["::ffff:192.0.2.1", AddressType.IPv6, "::ffff:c000:201"],
    ])("%s", (host, type, expectedHost) => {
      expect(parseRequest(domainRequest(host))).toMatchObject({ value: { destination: { type, host: expectedHost, port: 443 } } });
    });

    it("keeps a name that only looks like an address (leading zero) as a domain", () => {
      expect(parseRequest(domainRequest("01.2.3.4"))).toMatchObject({ value: { destination: { type: AddressType.Domain, host: "01.2.3.4" } } });
    });
  });

  it.each([
    ["BIND", Command.Bind],
    ["UDP ASSOCIATE", Command.UdpAssociate],
  ])("returns %s as parsed, for the session to refuse with 0x07", (_name, command) => {
    expect(parseRequest(request(command, AddressType.IPv4, [192, 0, 2, 1], 53))).toMatchObject({ value: { command } });
  });

  it("returns port 0 as parsed, for the session to refuse with 0x01", () => {
    expect(parseRequest(request(Command.Connect, AddressType.IPv4, [192, 0, 2, 1], 0))).toMatchObject({ value: { destination: { port: 0 } } });
  });

  it.each([0x00, 0x04, 0xff])("refuses command %i with 0x07 once the request is complete", (command) => {
    const complete = request(command, AddressType.IPv4, [192, 0, 2, 1], 443);
    expect(parseRequest(complete.subarray(0, complete.byteLength - 1))).toBe("incomplete");
    expect(socksError(() => parseRequest(complete)).reply).toBe(Reply.CommandNotSupported);
  });

  it.each([0x04, 0x00])("refuses version byte %i with no reply, from the first byte", (version) => {
    const error = socksError(() => parseRequest(Uint8Array.of(version)));
    expect(error.reply).toBeUndefined();
  });

  it("refuses a non-zero reserved byte with 0x01", () => {
    const input = Uint8Array.from(ipv4Request);
    input[2] = 0x01;
    expect(socksError(() => parseRequest(input)).reply).toBe(Reply.GeneralFailure);
    expect(socksError(() => parseRequest(input.subarray(0, 4))).reply).toBe(Reply.GeneralFailure);
  });

  it.each([0x00, 0x02, 0x05, 0xff])("refuses address type %i with 0x08 as soon as the header is in", (addressType) => {
    const error = socksError(() => parseRequest(Uint8Array.of(SOCKS_VERSION, Command.Connect, 0x00, addressType)));
    expect(error.reply).toBe(Reply.AddressTypeNotSupported);
  });

  it("refuses an empty domain name with 0x01", () => {
    expect(socksError(() => parseRequest(Uint8Array.of(SOCKS_VERSION, Command.Connect, 0x00, AddressType.Domain, 0))).reply).toBe(
      Reply.GeneralFailure,
    );
  });

  it("refuses a domain name that is not UTF-8 with 0x01", () => {
    expect(socksError(() => parseRequest(domainRequest(Uint8Array.of(0x61, 0xff, 0x62)))).reply).toBe(Reply.GeneralFailure);
  });

  it.each(["exa mple.com", "a/b", "a..b", "-example.com", "fe80::1%eth0", "host:80", "bad\r\nname"])(
    "refuses %j, which no DNS could hold, with 0x04",
    (host) => {
      expect(socksError(() => parseRequest(domainRequest(host))).reply).toBe(Reply.HostUnreachable);
    },
  );
});

describe("encodeReply", () => {
  it.each(Object.values(Reply))("encodes reply %i with bound address 0.0.0.0:0", (reply) => {
    expect(Array.from(encodeReply(reply))).toEqual([0x05, reply, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
  });
});

describe("REPLY_FOR_STATUS", () => {
  it("maps every stream status to its RFC 1928 reply", () => {
    expect(REPLY_FOR_STATUS).toEqual({
      [StreamStatus.Ok]: 0x00,
      [StreamStatus.GeneralFailure]: 0x01,
      [StreamStatus.NotAllowed]: 0x02,
      [StreamStatus.NetworkUnreachable]: 0x03,
      [StreamStatus.HostUnreachable]: 0x04,
      [StreamStatus.ConnectionRefused]: 0x05,
      [StreamStatus.Timeout]: 0x06,
      [StreamStatus.OnCloudflare]: 0x02,
    });
    expect(Object.keys(REPLY_FOR_STATUS).map(Number).sort()).toEqual(Object.values(StreamStatus).sort());
  });

  it("uses the named reply constants of RFC 1928 section 6", () => {
    expect(Reply).toEqual({
      Succeeded: 0x00,
      GeneralFailure: 0x01,
      NotAllowedByRuleset: 0x02,
      NetworkUnreachable: 0x03,
      HostUnreachable: 0x04,
      ConnectionRefused: 0x05,
      TtlExpired: 0x06,
      CommandNotSupported: 0x07,
      AddressTypeNotSupported: 0x08,
    });
  });
});
