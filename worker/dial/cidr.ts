// Address blocks (CIDR, RFC 4632 for IPv4 and RFC 4291 section 2.3 for IPv6), shared by the
// agent's routing rules and the Worker's dial checks so both read a block the same way.
//
// Pure: text in, a Cidr or a CidrError out. No sockets, no Workers or Node APIs.

import { parseIPv4, parseIPv6 } from "../protocol/index.ts";

/** An address block: the network's bytes (4 or 16) and how many leading bits must match. */
export type Cidr = { bytes: number[]; prefixBits: number };

/** A block that does not parse; the message quotes the text and says what is wrong. */
export class CidrError extends Error {
  override readonly name = "CidrError";
}

/**
 * Parses `ADDR/BITS` (or a bare address, meaning one host) for IPv4 and IPv6. An IPv4-mapped
 * block (::ffff:a.b.c.d/BITS) counts its prefix over all 128 bits and is stored as the IPv4
 * block it is, since ipToBytes reads mapped addresses as IPv4.
 */
export function parseCidr(text: string): Cidr {
  const [address = "", bitsText, extra] = text.trim().split("/");
  if (extra !== undefined) throw new CidrError(`"${text}" is not ADDRESS/BITS`);
  const bytes = ipToBytes(address.toLowerCase());
  if (!bytes) throw new CidrError(`"${address}" is not an IPv4 or IPv6 address`);
  const mappedBits = bytes.length === 4 && address.includes(":") ? 96 : 0;
  const maxBits = mappedBits + bytes.length * 8;
  const writtenBits = bitsText === undefined ? maxBits : Number(bitsText);
  if (bitsText !== undefined && (!/^\d{1,3}$/.test(bitsText) || writtenBits < mappedBits || writtenBits > maxBits)) {
    throw new CidrError(`"${text}": prefix length must be ${mappedBits}..${maxBits}`);
  }
  return { bytes, prefixBits: writtenBits - mappedBits };
}

/**
 * Parses a comma-separated list of blocks, as a var holds them: whitespace around entries and
 * empty entries are ignored, so "" is the empty list. A bad entry fails the whole list with a
 * CidrError naming `label` and the entry's number among the non-empty ones (as EDGESOCKS_TOKEN
 * numbers its entries).
 */
export function parseCidrList(text: string, label: string): Cidr[] {
  const entries = text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);
  return entries.map((entry, index) => {
    try {
      return parseCidr(entry);
    } catch (error) {
      if (error instanceof CidrError) throw new CidrError(`${label} entry ${index + 1} ${error.message}`);
      throw error;
    }
  });
}

/** Whether `address` (4 or 16 bytes, as ipToBytes gives) lies inside `cidr`; never across families. */
export function cidrContains(cidr: Cidr, address: number[]): boolean {
  if (cidr.bytes.length !== address.length) return false;
  let bits = cidr.prefixBits;
  for (let index = 0; bits > 0; index += 1, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((cidr.bytes[index] ?? 0) & mask) !== ((address[index] ?? 0) & mask)) return false;
  }
  return true;
}

/**
 * IPv4 as 4 bytes, IPv6 (brackets allowed) as 16; an IPv4-mapped IPv6 address (::ffff:a.b.c.d,
 * RFC 4291 section 2.5.5.2) as its IPv4 bytes, since a socket to it reaches that IPv4 host.
 * Undefined for anything else, host names included.
 */
export function ipToBytes(host: string): number[] | undefined {
  const v4 = parseIPv4(host);
  if (v4) return v4;
  const bytes = parseIPv6(host);
  if (!bytes) return undefined;
  const mapped = bytes.slice(0, 10).every((byte) => byte === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? bytes.slice(12) : bytes;
}
