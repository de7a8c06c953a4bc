// NAT64 address synthesis (RFC 6052): an IPv4 destination written as an IPv6 address inside a
// translator's prefix, so a dial over IPv6 reaches it through that translator. This is what
// EDGESOCKS_NAT64_PREFIX configures.
//
// Only the /96 form (RFC 6052 section 2.2): the IPv4 address is the last 32 bits, so no
// suffix and no "u" octet split it. Pure: text in, text or a Nat64Error out.

import { formatIPv6, parseIPv4, parseIPv6 } from "../protocol/index.ts";

/** Bits of a /96 prefix, and so the bytes that come before the IPv4 address. */
const PREFIX_BYTES = 12;
/**
 * Byte of the address holding bits 64 to 71, which RFC 6052 section 2.2 reserves (they must
 * be zero, for compatibility with the RFC 4291 interface identifier); in a /96 prefix it falls
 * inside the prefix itself.
 */
const U_OCTET_INDEX = 8;

/** A prefix that does not parse or is not a usable /96; the message quotes the text. */
export class Nat64Error extends Error {
  override readonly name = "Nat64Error";
}

/** A NAT64 /96 prefix: its 12 bytes, and its normalized text (RFC 5952 with "/96", e.g. "64:ff9b::/96"). */
export type Nat64Prefix = { bytes: number[]; text: string };

/**
 * Parses a /96 NAT64 prefix such as the Well-Known Prefix "64:ff9b::/96" (RFC 6052 section
 * 2.1) or a network-specific one like "2001:db8:64::/96". Throws Nat64Error for another
 * length or none, for an address that is not IPv6, for non-zero bits in the last 32, and for
 * non-zero reserved bits 64 to 71.
 */
export function parseNat64Prefix(text: string): Nat64Prefix {
  const trimmed = text.trim();
  const slash = trimmed.indexOf("/");
  const addressText = slash < 0 ? trimmed : trimmed.slice(0, slash);
  const lengthText = slash < 0 ? undefined : trimmed.slice(slash + 1);
  if (lengthText !== "96") {
    const written = lengthText === undefined ? "has no prefix length" : `has prefix length "${lengthText}"`;
    throw new Nat64Error(`"${text}" ${written}: only the /96 form is supported (RFC 6052 section 2.2), as in 64:ff9b::/96`);
  }
  const bytes = parseIPv6(addressText);
  if (!bytes) throw new Nat64Error(`"${text}": "${addressText}" is not an IPv6 address`);
  if (bytes.slice(PREFIX_BYTES).some((byte) => byte !== 0)) {
    throw new Nat64Error(`"${text}": the last 32 bits of a /96 prefix must be zero; they hold the IPv4 address`);
  }
  if (bytes[U_OCTET_INDEX] !== 0) {
    throw new Nat64Error(`"${text}": bits 64 to 71 must be zero (RFC 6052 section 2.2)`);
  }
  return { bytes: bytes.slice(0, PREFIX_BYTES), text: `${formatIPv6(Uint8Array.from(bytes))}/96` };
}

/**
 * The IPv4-embedded IPv6 address of `ipv4` under `prefix` (RFC 6052 section 2.2), as RFC 5952
 * text without brackets: 64:ff9b::/96 and 192.0.2.33 give 64:ff9b::c000:221. Throws Nat64Error
 * when `ipv4` is not a dotted-quad IPv4 address or `prefix` is not 12 bytes.
 *
 * It does not refuse non-global IPv4 addresses under the Well-Known Prefix (RFC 6052 section
 * 3.1 forbids translating them); the translator does, and the caller decides what to dial.
 */
export function synthesizeNat64(prefix: Nat64Prefix, ipv4: string): string {
  const octets = parseIPv4(ipv4);
  if (!octets) throw new Nat64Error(`"${ipv4}" is not an IPv4 address`);
  if (prefix.bytes.length !== PREFIX_BYTES) throw new Nat64Error(`prefix ${prefix.text} has ${prefix.bytes.length} bytes, not ${PREFIX_BYTES}`);
  return formatIPv6(Uint8Array.from([...prefix.bytes, ...octets]));
}
