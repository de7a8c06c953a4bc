// worker/dial/cloudflare-ranges.ts: which addresses are Cloudflare's own, the ones a Worker's
// connect() cannot reach.

import { describe, expect, it } from "vitest";
import { ipToBytes, parseCidr, parseCidrList } from "../../worker/dial/cidr.ts";
import { CLOUDFLARE_IPV4_RANGES, CLOUDFLARE_IPV6_RANGES, CLOUDFLARE_RANGES_CHECKED_ON, isCloudflareAddress } from "../../worker/dial/cloudflare-ranges.ts";

function bytesOf(host: string): number[] {
  const bytes = ipToBytes(host);
  if (!bytes) throw new Error(`test address ${host} does not parse`);
  return bytes;
}
const isCloudflare = (host: string, extra: string = ""): boolean => isCloudflareAddress(bytesOf(host), parseCidrList(extra, "extra"));

describe("Cloudflare's published ranges", () => {
  it("hold Cloudflare's 15 IPv4 and 7 IPv6 blocks, each of its own family", () => {
    expect(CLOUDFLARE_IPV4_RANGES).toHaveLength(15);
    expect(CLOUDFLARE_IPV6_RANGES).toHaveLength(7);
    for (const block of CLOUDFLARE_IPV4_RANGES) expect(parseCidr(block).bytes).toHaveLength(4);
    for (const block of CLOUDFLARE_IPV6_RANGES) expect(parseCidr(block).bytes).toHaveLength(16);
  });

  it("write every block as its network address, with no host bits set", () => {
    for (const block of [...CLOUDFLARE_IPV4_RANGES, ...CLOUDFLARE_IPV6_RANGES]) {
      const { bytes, prefixBits } = parseCidr(block);
      const hostBits = bytes.some((byte, index) => {
        const kept = Math.max(0, Math.min(8, prefixBits - index * 8));
        return (byte & (0xff >> kept)) !== 0;
      });
      expect(hostBits, block).toBe(false);
    }
  });

  it("say the day they were last checked", () => {
    expect(CLOUDFLARE_RANGES_CHECKED_ON).toMatch(/^\d{4}-\d{2}-\d{2}$/);
  });
});

describe("isCloudflareAddress", () => {
  it.each(["104.16.132.229", "172.67.1.1", "162.159.255.255", "188.114.96.0", "131.0.75.255"])("is true for the IPv4 address %s", (host) => {
    expect(isCloudflare(host)).toBe(true);
  });

  it.each(["2606:4700::6810:84e5", "2400:cb00:2049::1", "2a06:98c7:ffff:ffff:ffff:ffff:ffff:ffff", "2c0f:f248::"])("is true for the IPv6 address %s", (host) => {
    expect(isCloudflare(host)).toBe(true);
  });

  it.each(["8.8.8.8", "192.0.2.1", "127.0.0.1", "2001:db8::1", "2a06:98c8::", "2606:4701::1", "::1"])("is false for %s", (host) => {
    expect(isCloudflare(host)).toBe(false);
  });

  it("follows the edges of a range to the bit: first and last in, neighbours out", () => {
    // 104.16.0.0/13 is 104.16.0.0 to 104.23.255.255; 198.41.128.0/17 is 198.41.128.0 to 198.41.255.255.
    expect(isCloudflare("104.16.0.0")).toBe(true);
    expect(isCloudflare("104.23.255.255")).toBe(true);
    expect(isCloudflare("104.15.255.255")).toBe(false);
    expect(isCloudflare("198.41.128.0")).toBe(true);
    expect(isCloudflare("198.41.127.255")).toBe(false);
    expect(isCloudflare("173.245.63.255")).toBe(true);
    expect(isCloudflare("173.245.64.0")).toBe(false);
    // 2a06:98c0::/29 ends at 2a06:98c7:ffff:...; 2405:8100::/32 at 2405:8100:ffff:...
    expect(isCloudflare("2a06:98bf:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(false);
    expect(isCloudflare("2405:8100:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(true);
    expect(isCloudflare("2405:8101::")).toBe(false);
  });

  it("is true for an IPv4-mapped Cloudflare address once ipToBytes has read it as IPv4", () => {
    expect(isCloudflare("::ffff:104.16.0.1")).toBe(true);
  });

  it("also counts the extra blocks it is given, of either family", () => {
    expect(isCloudflare("127.0.0.2")).toBe(false);
    expect(isCloudflare("127.0.0.2", "127.0.0.2/32")).toBe(true);
    expect(isCloudflare("127.0.0.3", "127.0.0.2/32")).toBe(false);
    expect(isCloudflare("::1", "127.0.0.2, ::1/128")).toBe(true);
    expect(isCloudflare("104.16.0.1", "127.0.0.2/32")).toBe(true);
  });
});
