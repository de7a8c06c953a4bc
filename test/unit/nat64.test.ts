// worker/dial/nat64.ts: EDGESOCKS_NAT64_PREFIX's /96 prefix and the addresses synthesized in it,
// checked against RFC 6052's own examples (section 2.4).

import { describe, expect, it } from "vitest";
import { Nat64Error, parseNat64Prefix, synthesizeNat64 } from "../../worker/dial/nat64.ts";
import { formatIPv6, parseIPv6 } from "../../worker/protocol/index.ts";

/** The RFC's text form (dotted IPv4 tail) in the RFC 5952 form synthesizeNat64 writes. */
function canonical(text: string): string {
  const bytes = parseIPv6(text);
  if (!bytes) throw new Error(`test address ${text} does not parse`);
  return formatIPv6(Uint8Array.from(bytes));
}

describe("parseNat64Prefix", () => {
  it("reads the Well-Known Prefix and a network-specific /96", () => {
    expect(parseNat64Prefix("64:ff9b::/96")).toEqual({ bytes: [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0], text: "64:ff9b::/96" });
    expect(parseNat64Prefix("2001:db8:64::/96")).toEqual({ bytes: [0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0], text: "2001:db8:64::/96" });
  });

  it("normalizes the text it was given to RFC 5952", () => {
    expect(parseNat64Prefix(" 0064:FF9B:0:0:0:0:0:0/96 ").text).toBe("64:ff9b::/96");
    expect(parseNat64Prefix("2001:db8:122:344::/96").text).toBe("2001:db8:122:344::/96");
  });

  it.each(["64:ff9b::", "2001:db8::/32", "2001:db8:100::/40", "2001:db8:122::/48", "2001:db8:122:300::/56", "2001:db8:122:344::/64", "64:ff9b::/128", "64:ff9b::/"])(
    "refuses %j: only the /96 form is supported",
    (text) => {
      expect(() => parseNat64Prefix(text)).toThrow(Nat64Error);
      expect(() => parseNat64Prefix(text)).toThrow(/only the \/96 form is supported/);
    },
  );

  it("refuses a prefix with bits set in the last 32, where the IPv4 address goes", () => {
    expect(() => parseNat64Prefix("64:ff9b::1/96")).toThrow(/last 32 bits of a \/96 prefix must be zero/);
    expect(() => parseNat64Prefix("64:ff9b::c000:221/96")).toThrow(Nat64Error);
  });

  it("refuses a prefix with the reserved bits 64 to 71 set (RFC 6052 section 2.2)", () => {
    expect(() => parseNat64Prefix("2001:db8:0:0:100::/96")).toThrow(/bits 64 to 71 must be zero/);
    expect(parseNat64Prefix("2001:db8:0:0:1::/96").text).toBe("2001:db8:0:0:1::/96");
  });

  it.each(["10.0.0.0/96", "example.com/96", "/96", "64:ff9b::%eth0/96"])("refuses %j: not an IPv6 address", (text) => {
    expect(() => parseNat64Prefix(text)).toThrow(/is not an IPv6 address/);
  });
});

describe("synthesizeNat64", () => {
  it("embeds 192.0.2.33 as RFC 6052 section 2.4's examples do", () => {
    expect(synthesizeNat64(parseNat64Prefix("64:ff9b::/96"), "192.0.2.33")).toBe("64:ff9b::c000:221");
    expect(synthesizeNat64(parseNat64Prefix("64:ff9b::/96"), "192.0.2.33")).toBe(canonical("64:ff9b::192.0.2.33"));
    expect(synthesizeNat64(parseNat64Prefix("2001:db8:122:344::/96"), "192.0.2.33")).toBe(canonical("2001:db8:122:344::192.0.2.33"));
    expect(synthesizeNat64(parseNat64Prefix("2001:db8:122:344::/96"), "192.0.2.33")).toBe("2001:db8:122:344::c000:221");
  });

  it("writes the address without brackets and shortens the longest zero run", () => {
    expect(synthesizeNat64(parseNat64Prefix("64:ff9b::/96"), "0.0.0.1")).toBe("64:ff9b::1");
    expect(synthesizeNat64(parseNat64Prefix("2001:db8:64::/96"), "255.255.255.255")).toBe("2001:db8:64::ffff:ffff");
  });

  it("synthesizes under the IPv4-mapped prefix ::ffff:0:0/96, which the end-to-end tests dial on loopback", () => {
    // test/e2e/cloudflare-hosted.test.ts's NAT64 stand-in: the address is IPv4-mapped (RFC 4291
    // section 2.5.5.2), so local workerd reaches the IPv4 origin it embeds.
    const mapped = parseNat64Prefix("::ffff:0:0/96");
    expect(mapped).toEqual({ bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff], text: "::ffff:0:0/96" });
    expect(synthesizeNat64(mapped, "127.0.0.2")).toBe(canonical("::ffff:127.0.0.2"));
    expect(parseIPv6(synthesizeNat64(mapped, "127.0.0.2"))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 2]);
  });

  it.each(["example.com", "192.0.2", "::1", "192.0.2.256", ""])("refuses %j: not an IPv4 address", (ipv4) => {
    expect(() => synthesizeNat64(parseNat64Prefix("64:ff9b::/96"), ipv4)).toThrow(Nat64Error);
  });

  it("refuses a prefix that is not 12 bytes", () => {
    expect(() => synthesizeNat64({ bytes: [0, 0x64], text: "64::/96" }, "192.0.2.33")).toThrow(/has 2 bytes, not 12/);
  });
});
