// The SOCKS5 UDP request header (local-agent/front/socks5-udp.ts, RFC 1928 section 7): round trips
// for each address type, every malformed header, and the bound-address reply of UDP ASSOCIATE.

import { describe, expect, it } from "vitest";
import { SOCKS_VERSION, Reply, encodeBoundReply, parseRequest } from "../../local-agent/front/socks5.ts";
import { STANDALONE_FRAGMENT, UdpHeaderError, encodeUdpDatagram, parseUdpDatagram } from "../../local-agent/front/socks5-udp.ts";
import { AddressType, type Destination } from "../../worker/protocol/index.ts";

const utf8 = new TextEncoder();
const payload = Uint8Array.of(0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0);

/** The UdpHeaderError `input` raises; fails the test if it parses. */
function headerError(input: Uint8Array): UdpHeaderError {
  try {
    parseUdpDatagram(input);
  } catch (error) {
    expect(error).toBeInstanceOf(UdpHeaderError);
    return error as UdpHeaderError;
  }
  throw new Error("expected a UdpHeaderError");
}

describe("encodeUdpDatagram and parseUdpDatagram", () => {
  const destinations: Destination[] = [
    { type: AddressType.IPv4, host: "127.0.0.1", port: 53 },
    { type: AddressType.IPv6, host: "2001:db8::53", port: 53 },
    { type: AddressType.Domain, host: "resolver.example", port: 5353 },
  ];
  for (const destination of destinations) {
    it(`round-trips a datagram to ${destination.host}:${destination.port}`, () => {
      const datagram = encodeUdpDatagram(destination, payload);
      expect(parseUdpDatagram(datagram)).toEqual({ fragment: STANDALONE_FRAGMENT, destination, payload });
    });
  }

  it("lays out RSV, FRAG, ATYP, DST.ADDR, DST.PORT, DATA as RFC 1928 section 7 draws them", () => {
    const datagram = encodeUdpDatagram({ type: AddressType.IPv4, host: "192.0.2.1", port: 53 }, Uint8Array.of(0xaa, 0xbb));
    expect(Array.from(datagram)).toEqual([0, 0, 0, AddressType.IPv4, 192, 0, 2, 1, 0, 53, 0xaa, 0xbb]);
  });

  it("writes a domain with its length byte", () => {
    const datagram = encodeUdpDatagram({ type: AddressType.Domain, host: "a.example", port: 53 }, new Uint8Array(0));
    expect(Array.from(datagram.subarray(3))).toEqual([AddressType.Domain, 9, ...utf8.encode("a.example"), 0, 53]);
  });

  it("parses an empty DATA as an empty payload", () => {
    const parsed = parseUdpDatagram(Uint8Array.of(0, 0, 0, AddressType.IPv4, 127, 0, 0, 1, 0, 9));
    expect(parsed.payload.byteLength).toBe(0);
    expect(parsed.destination).toEqual({ type: AddressType.IPv4, host: "127.0.0.1", port: 9 });
  });

  it("reports a non-zero FRAG instead of refusing it, so the relay can drop and count it", () => {
    const datagram = encodeUdpDatagram({ type: AddressType.IPv4, host: "127.0.0.1", port: 53 }, payload);
    datagram[2] = 0x81;
    expect(parseUdpDatagram(datagram).fragment).toBe(0x81);
  });

  it("reads a domain that is an IP literal as the address it is", () => {
    const name = utf8.encode("127.0.0.1");
    const parsed = parseUdpDatagram(Uint8Array.of(0, 0, 0, AddressType.Domain, name.byteLength, ...name, 0, 53, ...payload));
    expect(parsed.destination).toEqual({ type: AddressType.IPv4, host: "127.0.0.1", port: 53 });
    expect(parsed.payload).toEqual(payload);
  });

  it("refuses to encode port 0 or an address that is not one", () => {
    expect(() => encodeUdpDatagram({ type: AddressType.IPv4, host: "127.0.0.1", port: 0 }, payload)).toThrow(RangeError);
    expect(() => encodeUdpDatagram({ type: AddressType.IPv4, host: "not-an-ip", port: 53 }, payload)).toThrow(RangeError);
  });
});

describe("parseUdpDatagram refuses malformed headers", () => {
  it("refuses a datagram shorter than RSV, FRAG and ATYP", () => {
    expect(headerError(Uint8Array.of(0, 0, 0)).message).toMatch(/3 bytes, shorter than any UDP request header/);
    expect(headerError(new Uint8Array(0)).message).toMatch(/0 bytes/);
  });

  it("refuses non-zero reserved bytes", () => {
    expect(headerError(Uint8Array.of(0, 1, 0, AddressType.IPv4, 127, 0, 0, 1, 0, 53)).message).toBe("reserved bytes are not 0x0000");
    expect(headerError(Uint8Array.of(5, 0, 0, AddressType.IPv4, 127, 0, 0, 1, 0, 53)).message).toBe("reserved bytes are not 0x0000");
  });

  it("refuses an unknown address type", () => {
    expect(headerError(Uint8Array.of(0, 0, 0, 0x02, 127, 0, 0, 1, 0, 53)).message).toMatch(/address type 0x02/);
  });

  it("refuses an empty domain name", () => {
    expect(headerError(Uint8Array.of(0, 0, 0, AddressType.Domain, 0, 0, 53)).message).toBe("domain name is empty");
  });

  it("refuses a domain that no DNS could hold", () => {
    const name = utf8.encode("bad name/");
    expect(headerError(Uint8Array.of(0, 0, 0, AddressType.Domain, name.byteLength, ...name, 0, 53)).message).toMatch(/is not a host name/);
  });

  const truncated: [string, number[]][] = [
    ["an IPv4 address", [0, 0, 0, AddressType.IPv4, 127, 0, 0]],
    ["an IPv4 port", [0, 0, 0, AddressType.IPv4, 127, 0, 0, 1, 0]],
    ["an IPv6 address", [0, 0, 0, AddressType.IPv6, ...new Array<number>(15).fill(0)]],
    ["a domain length byte", [0, 0, 0, AddressType.Domain]],
    ["a domain name", [0, 0, 0, AddressType.Domain, 9, 0x61, 0x62]],
    ["a domain's port", [0, 0, 0, AddressType.Domain, 1, 0x61, 0]],
  ];
  for (const [what, bytes] of truncated) {
    it(`refuses a header cut short in ${what}`, () => {
      expect(headerError(Uint8Array.from(bytes)).message).toMatch(/truncated|shorter than/);
    });
  }
});

describe("encodeBoundReply", () => {
  it("names an IPv4 relay address and port in a success reply", () => {
    const reply = encodeBoundReply({ type: AddressType.IPv4, host: "127.0.0.1", port: 0xc350 });
    expect(Array.from(reply)).toEqual([SOCKS_VERSION, Reply.Succeeded, 0, AddressType.IPv4, 127, 0, 0, 1, 0xc3, 0x50]);
  });

  it("names an IPv6 relay address, which reads back as the same address", () => {
    const reply = encodeBoundReply({ type: AddressType.IPv6, host: "::1", port: 40000 });
    expect(reply.byteLength).toBe(4 + 16 + 2);
    // A reply and a request share their layout after the second byte.
    const parsed = parseRequest(Uint8Array.of(SOCKS_VERSION, 0x03, ...reply.subarray(2)));
    expect(parsed === "incomplete" ? undefined : parsed.value.destination).toEqual({ type: AddressType.IPv6, host: "::1", port: 40000 });
  });
});
