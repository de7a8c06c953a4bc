import { describe, expect, it } from "vitest";
import { MAX_SOCKS4_REQUEST_BYTES, Socks4Error, Socks4Reply, encodeSocks4Reply, parseSocks4Request } from "../../local-agent/front/socks4.ts";
import { AddressType } from "../../worker/protocol/index.ts";

const CONNECT_IP = [0x04, 0x01, 0x01, 0xbb, 192, 0, 2, 7, ...Buffer.from("user"), 0x00];
const CONNECT_4A = [0x04, 0x01, 0x00, 0x50, 0, 0, 0, 1, 0x00, ...Buffer.from("example.com"), 0x00];

function parse(bytes: number[]) {
  return parseSocks4Request(Uint8Array.from(bytes));
}

describe("parseSocks4Request", () => {
  it("reads a SOCKS4 CONNECT to an IPv4 address with its USERID", () => {
    expect(parse(CONNECT_IP)).toEqual({ value: { command: 1, destination: { type: AddressType.IPv4, host: "192.0.2.7", port: 443 }, userId: "user" }, bytesUsed: CONNECT_IP.length });
  });

  it("reads SOCKS4a (DSTIP 0.0.0.x) with a domain after the USERID", () => {
    expect(parse(CONNECT_4A)).toEqual({ value: { command: 1, destination: { type: AddressType.Domain, host: "example.com", port: 80 }, userId: "" }, bytesUsed: CONNECT_4A.length });
  });

  it("reads a SOCKS4a IP literal as an IPv4 destination", () => {
    const bytes = [0x04, 0x01, 0x00, 0x50, 0, 0, 0, 9, 0x00, ...Buffer.from("127.0.0.1"), 0x00];
    expect(parse(bytes)).toMatchObject({ value: { destination: { type: AddressType.IPv4, host: "127.0.0.1" } } });
  });

  it("reads a SOCKS4a IPv6 literal (what curl sends for http://[::1]/) as an IPv6 destination", () => {
    const bytes = [0x04, 0x01, 0x1f, 0x90, 0, 0, 0, 1, 0x00, ...Buffer.from("0:0::1"), 0x00];
    expect(parse(bytes)).toMatchObject({ value: { destination: { type: AddressType.IPv6, host: "::1", port: 8080 } }, bytesUsed: bytes.length });
  });

  it("reads DSTIP 0.0.0.0 as plain SOCKS4: only 0.0.0.x with x nonzero announces a name", () => {
    const bytes = [0x04, 0x01, 0x00, 0x50, 0, 0, 0, 0, 0x00, ...Buffer.from("example.com"), 0x00];
    expect(parse(bytes)).toEqual({ value: { command: 1, destination: { type: AddressType.IPv4, host: "0.0.0.0", port: 80 }, userId: "" }, bytesUsed: 9 });
  });

  it("reads a 4a name with trailing dot and a UTF-8 USERID, and leaves the bytes after it", () => {
    const bytes = [0x04, 0x01, 0x01, 0xbb, 0, 0, 0, 255, ...Buffer.from("zoë"), 0x00, ...Buffer.from("example.com."), 0x00];
    expect(parse([...bytes, 0x16, 0x03])).toEqual({ value: { command: 1, destination: { type: AddressType.Domain, host: "example.com.", port: 443 }, userId: "zoë" }, bytesUsed: bytes.length });
  });

  it("accepts a USERID and a 4a name of exactly 255 bytes", () => {
    const name = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(63)}`;
    expect(name.length).toBe(255);
    const bytes = [0x04, 0x01, 0x00, 0x50, 0, 0, 0, 1, ...new Array(255).fill(0x75), 0x00, ...Buffer.from(name), 0x00];
    expect(bytes.length).toBe(MAX_SOCKS4_REQUEST_BYTES);
    expect(parse(bytes)).toMatchObject({ value: { destination: { host: name }, userId: "u".repeat(255) }, bytesUsed: bytes.length });
  });

  it("leaves bytes after the request for the stream", () => {
    expect(parse([...CONNECT_IP, 0x47, 0x45])).toMatchObject({ bytesUsed: CONNECT_IP.length });
  });

  it.each([{ request: CONNECT_IP }, { request: CONNECT_4A }, { request: [0x04, 0x02, 0x00, 0x50, 0, 0, 0, 7, ...Buffer.from("id"), 0x00, ...Buffer.from("127.0.0.1"), 0x00] }])("asks for more bytes at every prefix of a request", ({ request }) => {
    for (let length = 0; length < request.length; length++) expect(parse(request.slice(0, length))).toBe("incomplete");
  });

  it.each([
    ["a version other than 4", [0x05, 0x01, 0, 80, 1, 2, 3, 4, 0], undefined, /not SOCKS4/],
    ["a USERID over 255 bytes", [0x04, 0x01, 0, 80, 1, 2, 3, 4, ...new Array(256).fill(0x61)], Socks4Reply.RejectedOrFailed, /USERID is longer/],
    ["a USERID over 255 bytes that arrives whole, NUL included", [0x04, 0x01, 0, 80, 1, 2, 3, 4, ...new Array(256).fill(0x61), 0], Socks4Reply.RejectedOrFailed, /USERID is longer/],
    ["a 4a domain over 255 bytes", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, ...new Array(256).fill(0x61)], Socks4Reply.RejectedOrFailed, /longer than 255/],
    ["a 4a domain over 255 bytes that arrives whole, NUL included", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, ...Buffer.from(`${"a.".repeat(150)}com`), 0], Socks4Reply.RejectedOrFailed, /longer than 255/],
    ["an empty 4a domain", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, 0], Socks4Reply.RejectedOrFailed, /empty/],
    ["a 4a domain that is not UTF-8", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, 0xff, 0xfe, 0], Socks4Reply.RejectedOrFailed, /not valid UTF-8/],
    ["a 4a domain no DNS could hold", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, ...Buffer.from("bad name"), 0], Socks4Reply.RejectedOrFailed, /is not a host name/],
    ["a 4a domain with empty labels", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, ...Buffer.from("a..example"), 0], Socks4Reply.RejectedOrFailed, /"a\.\.example" is not a host name/],
    ["a 4a IPv6 literal with a zone", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, ...Buffer.from("fe80::1%eth0"), 0], Socks4Reply.RejectedOrFailed, /is not a host name/],
  ])("refuses %s", (_name, bytes, reply, message) => {
    let caught: unknown;
    try {
      parse(bytes as number[]);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(Socks4Error);
    expect((caught as Socks4Error).reply).toBe(reply);
    expect((caught as Socks4Error).message).toMatch(message as RegExp);
  });

  it.each([
    ["::1", "::1"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["2001:DB8::1", "2001:db8::1"],
  ])("reads the 4a IPv6 literal %s as an IPv6 destination (curl --socks4a sends one for http://[::1]/)", (written, canonical) => {
    const bytes = [0x04, 0x01, 0x1f, 0x90, 0, 0, 0, 1, 0x00, ...Buffer.from(written), 0x00];
    expect(parse(bytes)).toEqual({ value: { command: 1, destination: { type: AddressType.IPv6, host: canonical, port: 8080 }, userId: "" }, bytesUsed: bytes.length });
  });

  it("reads 4a for any nonzero last DSTIP byte, and plain SOCKS4 when another byte is set", () => {
    expect(parse([0x04, 0x01, 0, 80, 0, 0, 0, 255, 0x00, ...Buffer.from("example.com"), 0x00])).toMatchObject({ value: { destination: { type: AddressType.Domain, host: "example.com" } } });
    expect(parse([0x04, 0x01, 0, 80, 0, 0, 1, 1, 0x00])).toMatchObject({ value: { destination: { type: AddressType.IPv4, host: "0.0.1.1" } }, bytesUsed: 9 });
  });

  it("passes BIND and unknown commands through for the session to refuse, with the port as sent", () => {
    expect(parse([0x04, 0x02, 0xff, 0xff, 127, 0, 0, 1, 0x00])).toMatchObject({ value: { command: 2, destination: { port: 65535 } } });
    expect(parse([0x04, 0x09, 0, 0, 127, 0, 0, 1, 0x00])).toMatchObject({ value: { command: 9, destination: { port: 0 } } });
  });

  it("bounds a request to what SOCKS4a can hold", () => {
    expect(MAX_SOCKS4_REQUEST_BYTES).toBe(8 + 256 + 256);
  });
});

describe("encodeSocks4Reply", () => {
  it("answers with version byte 0, the code, and a zero address", () => {
    expect(Array.from(encodeSocks4Reply(Socks4Reply.Granted))).toEqual([0, 0x5a, 0, 0, 0, 0, 0, 0]);
    expect(Array.from(encodeSocks4Reply(Socks4Reply.RejectedOrFailed))).toEqual([0, 0x5b, 0, 0, 0, 0, 0, 0]);
  });
});
