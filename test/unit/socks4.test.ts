import { describe, expect, it } from "vitest";
import { MAX_SOCKS4_REQUEST_BYTES, Socks4Error, Socks4Reply, encodeSocks4Reply, parseSocks4Request } from "../../local-agent/socks4.ts";
import { AddressType } from "../../worker/protocol.ts";

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

  it("leaves bytes after the request for the stream", () => {
    expect(parse([...CONNECT_IP, 0x47, 0x45])).toMatchObject({ bytesUsed: CONNECT_IP.length });
  });

  it.each([{ request: CONNECT_IP }, { request: CONNECT_4A }])("asks for more bytes at every prefix of a request", ({ request }) => {
    for (let length = 0; length < request.length; length++) expect(parse(request.slice(0, length))).toBe("incomplete");
  });

  it.each([
    ["a version other than 4", [0x05, 0x01, 0, 80, 1, 2, 3, 4, 0], undefined, /not SOCKS4/],
    ["a USERID over 255 bytes", [0x04, 0x01, 0, 80, 1, 2, 3, 4, ...new Array(256).fill(0x61)], Socks4Reply.RejectedOrFailed, /USERID is longer/],
    ["a 4a domain over 255 bytes", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, ...new Array(256).fill(0x61)], Socks4Reply.RejectedOrFailed, /longer than 255/],
    ["an empty 4a domain", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, 0], Socks4Reply.RejectedOrFailed, /empty/],
    ["a 4a domain that is not UTF-8", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, 0xff, 0xfe, 0], Socks4Reply.RejectedOrFailed, /not valid UTF-8/],
    ["a 4a domain no DNS could hold", [0x04, 0x01, 0, 80, 0, 0, 0, 1, 0, ...Buffer.from("bad name"), 0], Socks4Reply.RejectedOrFailed, /is not a host name/],
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
