// The benchmark's SOCKS5 gate (test/bench/socks-gate.ts): what it lets through to a proxy and
// what it refuses before one sees it. Chromium asks for its background hosts by name; a proxy
// that resolved one would send a DNS query off this machine.

import { describe, expect, it } from "vitest";
import { parseGreeting, parseRequest } from "../bench/socks-gate.ts";

/** A SOCKS5 CONNECT for `host` (a name, as Chromium sends every URL host) and `port`. */
function connectByName(host: string, port: number): Buffer {
  const name = Buffer.from(host, "latin1");
  return Buffer.concat([Buffer.of(0x05, 0x01, 0x00, 0x03, name.byteLength), name, Buffer.of(port >> 8, port & 0xff)]);
}

describe("parseGreeting", () => {
  it("waits for the whole method list, then takes exactly it", () => {
    expect(parseGreeting(Buffer.of(0x05, 0x02, 0x00))).toEqual({ kind: "need-more" });
    expect(parseGreeting(Buffer.of(0x05, 0x02, 0x00, 0x02, 0x05))).toEqual({ kind: "greeting", greetingBytes: 4 });
  });
  it("refuses a version other than 5", () => {
    expect(parseGreeting(Buffer.of(0x04, 0x01, 0x00))).toMatchObject({ kind: "refuse" });
  });
});

describe("parseRequest", () => {
  it("allows a CONNECT to a 127.0.0.0/8 literal sent as a name, and to an IPv4 loopback address", () => {
    expect(parseRequest(connectByName("127.0.0.1", 8080))).toEqual({ kind: "allow", requestBytes: 7 + 9, destination: "127.0.0.1:8080" });
    expect(parseRequest(Buffer.of(0x05, 0x01, 0x00, 0x01, 127, 1, 2, 3, 0x00, 0x50))).toEqual({ kind: "allow", requestBytes: 10, destination: "127.1.2.3:80" });
  });
  it("refuses a name that would need a lookup, and addresses off this machine", () => {
    for (const host of ["accounts.google.com", "localhost", "127.0.0.1.example", "127.0.0.256", "10.0.0.1"]) expect(parseRequest(connectByName(host, 443))).toMatchObject({ kind: "refuse" });
    expect(parseRequest(Buffer.of(0x05, 0x01, 0x00, 0x01, 10, 255, 255, 53, 0x00, 0x35))).toMatchObject({ kind: "refuse" });
    expect(parseRequest(Buffer.concat([Buffer.of(0x05, 0x01, 0x00, 0x04), Buffer.alloc(15), Buffer.of(1, 0x00, 0x50)]))).toMatchObject({ kind: "refuse" });
  });
  it("refuses BIND and UDP ASSOCIATE", () => {
    expect(parseRequest(Buffer.of(0x05, 0x02, 0x00, 0x01, 127, 0, 0, 1, 0x00, 0x50))).toMatchObject({ kind: "refuse" });
    expect(parseRequest(Buffer.of(0x05, 0x03, 0x00, 0x01, 127, 0, 0, 1, 0x00, 0x50))).toMatchObject({ kind: "refuse" });
  });
  it("waits for the port's last byte before deciding", () => {
    const whole = connectByName("127.0.0.1", 80);
    expect(parseRequest(whole.subarray(0, whole.byteLength - 1))).toEqual({ kind: "need-more" });
  });
});
