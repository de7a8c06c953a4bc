// worker/dial/cidr.ts: the address blocks the agent's routing rules and the Worker's dial checks
// share. parseCidr keeps the semantics routing.ts had before the move.

import { describe, expect, it } from "vitest";
import { CidrError, cidrContains, ipToBytes, parseCidr, parseCidrList } from "../../worker/dial/cidr.ts";

describe("parseCidr", () => {
  it("reads ADDRESS/BITS for both families", () => {
    expect(parseCidr("10.0.0.0/8")).toEqual({ bytes: [10, 0, 0, 0], prefixBits: 8 });
    expect(parseCidr("2001:db8::/32")).toEqual({ bytes: [0x20, 0x01, 0x0d, 0xb8, ...new Array<number>(12).fill(0)], prefixBits: 32 });
    expect(parseCidr("0.0.0.0/0")).toEqual({ bytes: [0, 0, 0, 0], prefixBits: 0 });
  });

  it("reads a bare address as one host", () => {
    expect(parseCidr("192.0.2.1")).toEqual({ bytes: [192, 0, 2, 1], prefixBits: 32 });
    expect(parseCidr("::1").prefixBits).toBe(128);
  });

  it("ignores whitespace around the block and the case of hex digits", () => {
    expect(parseCidr("  2001:DB8::/32 ")).toEqual(parseCidr("2001:db8::/32"));
  });

  it("accepts an IPv6 address in brackets", () => {
    expect(parseCidr("[2001:db8::1]/128")).toEqual(parseCidr("2001:db8::1/128"));
  });

  it("counts an IPv4-mapped block's prefix over 128 bits and stores it as the IPv4 block", () => {
    expect(parseCidr("::ffff:10.0.0.0/104")).toEqual({ bytes: [10, 0, 0, 0], prefixBits: 8 });
    expect(parseCidr("::ffff:0:0/96")).toEqual({ bytes: [0, 0, 0, 0], prefixBits: 0 });
    expect(parseCidr("::ffff:10.0.0.1")).toEqual({ bytes: [10, 0, 0, 1], prefixBits: 32 });
  });

  it.each([
    ["10.0.0.0/33", '"10.0.0.0/33": prefix length must be 0..32'],
    ["fe80::/129", '"fe80::/129": prefix length must be 0..128'],
    ["::ffff:10.0.0.0/95", '"::ffff:10.0.0.0/95": prefix length must be 96..128'],
    ["10.0.0.0/", '"10.0.0.0/": prefix length must be 0..32'],
    ["10.0.0.0/+8", '"10.0.0.0/+8": prefix length must be 0..32'],
    ["10.0.0.0/0x8", '"10.0.0.0/0x8": prefix length must be 0..32'],
    ["example.com/8", '"example.com" is not an IPv4 or IPv6 address'],
    ["", '"" is not an IPv4 or IPv6 address'],
    ["fe80::1%eth0/64", '"fe80::1%eth0" is not an IPv4 or IPv6 address'],
    ["1.2.3.4/8/8", '"1.2.3.4/8/8" is not ADDRESS/BITS'],
  ])("refuses %j with a CidrError saying %s", (text, message) => {
    expect(() => parseCidr(text)).toThrow(CidrError);
    expect(() => parseCidr(text)).toThrow(message);
  });
});

describe("parseCidrList", () => {
  it("reads comma-separated blocks, ignoring whitespace and empty entries", () => {
    expect(parseCidrList(" 10.0.0.0/8 ,, 2001:db8::/32 ,", "LIST")).toEqual([parseCidr("10.0.0.0/8"), parseCidr("2001:db8::/32")]);
  });

  it("reads an empty or blank text as the empty list", () => {
    expect(parseCidrList("", "LIST")).toEqual([]);
    expect(parseCidrList("  ,  ", "LIST")).toEqual([]);
  });

  it("names the label, the entry's number and the entry when one is bad", () => {
    const read = (): unknown => parseCidrList("192.0.2.0/24, 10.0.0.0/33", "EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS");
    expect(read).toThrow(CidrError);
    expect(read).toThrow('EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS entry 2 "10.0.0.0/33": prefix length must be 0..32');
    expect(() => parseCidrList("nope", "LIST")).toThrow('LIST entry 1 "nope" is not an IPv4 or IPv6 address');
  });

  it("numbers entries among the non-empty ones", () => {
    expect(() => parseCidrList(",,10.0.0.0/8,,bad", "LIST")).toThrow(/^LIST entry 2 "bad"/);
  });
});

describe("cidrContains", () => {
  const inside = (block: string, host: string): boolean => {
    const bytes = ipToBytes(host);
    if (!bytes) throw new Error(`test address ${host} does not parse`);
    return cidrContains(parseCidr(block), bytes);
  };

  it("matches the first and last address of a block and neither neighbour", () => {
    expect(inside("192.0.2.0/24", "192.0.2.0")).toBe(true);
    expect(inside("192.0.2.0/24", "192.0.2.255")).toBe(true);
    expect(inside("192.0.2.0/24", "192.0.1.255")).toBe(false);
    expect(inside("192.0.2.0/24", "192.0.3.0")).toBe(false);
  });

  it("compares prefixes that end inside a byte bit by bit", () => {
    expect(inside("198.51.100.64/26", "198.51.100.127")).toBe(true);
    expect(inside("198.51.100.64/26", "198.51.100.128")).toBe(false);
    expect(inside("198.51.100.64/26", "198.51.100.63")).toBe(false);
    expect(inside("2a06:98c0::/29", "2a06:98c7:ffff::1")).toBe(true);
    expect(inside("2a06:98c0::/29", "2a06:98c8::")).toBe(false);
  });

  it("ignores host bits written in the block", () => {
    expect(inside("10.1.2.3/8", "10.200.0.1")).toBe(true);
  });

  it("lets /0 match every address of its family only", () => {
    expect(inside("0.0.0.0/0", "203.0.113.9")).toBe(true);
    expect(inside("::/0", "2001:db8::1")).toBe(true);
    expect(inside("::/0", "203.0.113.9")).toBe(false);
    expect(inside("0.0.0.0/0", "2001:db8::1")).toBe(false);
  });

  it("matches an IPv4-mapped address against an IPv4 block", () => {
    expect(inside("10.0.0.0/8", "::ffff:10.9.9.9")).toBe(true);
    expect(inside("::ffff:10.0.0.0/104", "10.9.9.9")).toBe(true);
  });
});

describe("ipToBytes", () => {
  it("gives 4 bytes for IPv4 and 16 for IPv6, brackets allowed", () => {
    expect(ipToBytes("203.0.113.9")).toEqual([203, 0, 113, 9]);
    expect(ipToBytes("::1")).toEqual([...new Array<number>(15).fill(0), 1]);
    expect(ipToBytes("[::1]")).toEqual(ipToBytes("::1"));
  });

  it("gives an IPv4-mapped address's IPv4 bytes, in either text form", () => {
    expect(ipToBytes("::ffff:192.0.2.1")).toEqual([192, 0, 2, 1]);
    expect(ipToBytes("::ffff:c000:201")).toEqual([192, 0, 2, 1]);
  });

  it("keeps an IPv4-compatible or NAT64 address as IPv6", () => {
    expect(ipToBytes("::192.0.2.1")).toHaveLength(16);
    expect(ipToBytes("64:ff9b::192.0.2.1")).toHaveLength(16);
  });

  it.each(["example.com", "", "1.2.3", "01.2.3.4", "256.1.1.1", "fe80::1%eth0", "1::2::3", "[::1"])("gives undefined for %j", (host) => {
    expect(ipToBytes(host)).toBeUndefined();
  });
});
