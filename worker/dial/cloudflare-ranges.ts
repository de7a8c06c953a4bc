// Cloudflare's own address ranges, which a Worker's connect() cannot reach. Cloudflare's docs
// (developers.cloudflare.com/workers/runtime-apis/tcp-sockets/, "Considerations") state that
// outbound TCP sockets to Cloudflare IP ranges are blocked; the edge uses the list to tell that
// refusal from an unreachable destination.
//
// Source: https://www.cloudflare.com/ips-v4 and https://www.cloudflare.com/ips-v6, as
// published; list last checked 2026-12-02 from the copy in this file's history. Refresh with
// `npm run ranges:refresh` (test/tools/refresh-cloudflare-ranges.ts), which rewrites only the
// two arrays and the date below.
//
// Pure: no sockets, no Workers or Node APIs.

import { cidrContains, parseCidr, type Cidr } from "./cidr.ts";

/** The day the two lists below were last compared with Cloudflare's published ones (YYYY-MM-DD). */
export const CLOUDFLARE_RANGES_CHECKED_ON = "2026-12-02";

/** https://www.cloudflare.com/ips-v4, one block per entry, in Cloudflare's order. */
export const CLOUDFLARE_IPV4_RANGES: readonly string[] = [
  "173.245.48.0/20",
  "103.21.244.0/22",
  "103.22.200.0/22",
  "103.31.4.0/22",
  "141.101.64.0/18",
  "108.162.192.0/18",
  "190.93.240.0/20",
  "188.114.96.0/20",
  "197.234.240.0/22",
  "198.41.128.0/17",
  "162.158.0.0/15",
  "104.16.0.0/13",
  "104.24.0.0/14",
  "172.64.0.0/13",
  "131.0.72.0/22",
];

/** https://www.cloudflare.com/ips-v6, one block per entry, in Cloudflare's order. */
export const CLOUDFLARE_IPV6_RANGES: readonly string[] = [
  "2400:cb00::/32",
  "2606:4700::/32",
  "2803:f800::/32",
  "2405:b500::/32",
  "2405:8100::/32",
  "2a06:98c0::/29",
  "2c0f:f248::/32",
];

// Parsed once, at module load: a bad entry fails the import, not a connection.
const CLOUDFLARE_CIDRS: readonly Cidr[] = [...CLOUDFLARE_IPV4_RANGES, ...CLOUDFLARE_IPV6_RANGES].map((block) => parseCidr(block));

/**
 * Whether `address` (4 or 16 bytes, as ipToBytes gives; it has already turned an IPv4-mapped
 * address into IPv4) lies in one of Cloudflare's ranges or in one of the `extra` blocks.
 */
export function isCloudflareAddress(address: number[], extra: readonly Cidr[] = []): boolean {
  return CLOUDFLARE_CIDRS.some((cidr) => cidrContains(cidr, address)) || extra.some((cidr) => cidrContains(cidr, address));
}
