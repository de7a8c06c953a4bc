// SOCKS4 and SOCKS4a request codec for the agent: pure, bytes in and typed values out.
// SOCKS4: https://www.openssh.com/txt/socks4.protocol; 4a: https://www.openssh.com/txt/socks4a.protocol

import { AddressType, MAX_DOMAIN_BYTES, formatIPv6, isPlausibleHostname, parseIPv4, parseIPv6, type Destination } from "../../worker/protocol/index.ts";
import type { ParseResult } from "./socks5.ts";

export const SOCKS4_VERSION = 0x04;

export const Socks4Command = {
  Connect: 0x01,
  Bind: 0x02,
} as const;

/** Reply codes; the reply's version byte is 0, not 4. */
export const Socks4Reply = {
  Granted: 0x5a,
  RejectedOrFailed: 0x5b,
  /** The protocol's identd checks: never sent, since the agent does not use identd. */
  IdentdUnreachable: 0x5c,
  IdentdMismatch: 0x5d,
} as const;
export type Socks4Reply = (typeof Socks4Reply)[keyof typeof Socks4Reply];

/** Longest USERID the agent reads; the protocol sets none, so this only bounds the buffer. */
export const MAX_USERID_BYTES = 255;
/** Longest request: header, USERID and its NUL, a 4a domain and its NUL. */
export const MAX_SOCKS4_REQUEST_BYTES = 8 + MAX_USERID_BYTES + 1 + MAX_DOMAIN_BYTES + 1;

export type Socks4Request = { command: number; destination: Destination; userId: string };

/** A request the agent cannot serve: `reply` is sent (when defined) and the connection closed. */
export class Socks4Error extends Error {
  readonly reply: Socks4Reply | undefined;
  constructor(reply: Socks4Reply | undefined, message: string) {
    super(message);
    this.name = "Socks4Error";
    this.reply = reply;
  }
}

/**
 * Parses a SOCKS4 or SOCKS4a request. DSTIP 0.0.0.x with x nonzero means 4a: a domain name
 * follows the USERID (an IP literal there is read as the address it is, as SOCKS5 does).
 * Returns "incomplete" until the terminating NUL bytes have arrived.
 */
export function parseSocks4Request(input: Uint8Array): ParseResult<Socks4Request> {
  if (input.byteLength < 1) return "incomplete";
  if (input[0] !== SOCKS4_VERSION) throw new Socks4Error(undefined, `not SOCKS4: version byte is 0x${(input[0] ?? 0).toString(16)}`);
  if (input.byteLength < 8) return "incomplete";
  const command = input[1] ?? 0;
  const port = ((input[2] ?? 0) << 8) | (input[3] ?? 0);
  const ip = Array.from(input.subarray(4, 8));
  const userIdEnd = input.indexOf(0, 8);
  // The bound holds however the request was split into reads: NUL seen or not.
  if ((userIdEnd < 0 ? input.byteLength : userIdEnd) - 8 > MAX_USERID_BYTES) throw new Socks4Error(Socks4Reply.RejectedOrFailed, "USERID is longer than 255 bytes");
  if (userIdEnd < 0) return "incomplete";
  // ignoreBOM: a default TextDecoder would drop a leading U+FEFF from the USERID (found by test/unit/fuzz).
  const userId = new TextDecoder("utf-8", { ignoreBOM: true }).decode(input.subarray(8, userIdEnd));
  let destination: Destination;
  let bytesUsed = userIdEnd + 1;
  const isSocks4a = ip[0] === 0 && ip[1] === 0 && ip[2] === 0 && ip[3] !== 0;
  if (isSocks4a) {
    const domainEnd = input.indexOf(0, bytesUsed);
    // A longer name could not be carried to the edge (its OPEN frame has one length byte).
    if ((domainEnd < 0 ? input.byteLength : domainEnd) - bytesUsed > MAX_DOMAIN_BYTES) {
      throw new Socks4Error(Socks4Reply.RejectedOrFailed, "SOCKS4a domain name is longer than 255 bytes");
    }
    if (domainEnd < 0) return "incomplete";
    let host: string;
    try {
      host = new TextDecoder("utf-8", { fatal: true }).decode(input.subarray(bytesUsed, domainEnd));
    } catch {
      throw new Socks4Error(Socks4Reply.RejectedOrFailed, "SOCKS4a domain name is not valid UTF-8");
    }
    if (host === "") throw new Socks4Error(Socks4Reply.RejectedOrFailed, "SOCKS4a domain name is empty");
    bytesUsed = domainEnd + 1;
    const ipv6 = parseIPv6(host);
    // "10.0.0.1." is that address too: as a name it would slip past every cidr rule (found by test/unit/fuzz).
    const literal = host.endsWith(".") ? host.slice(0, -1) : host;
    if (parseIPv4(literal)) destination = { type: AddressType.IPv4, host: literal, port };
    else if (ipv6) destination = { type: AddressType.IPv6, host: formatIPv6(Uint8Array.from(ipv6)), port };
    else if (isPlausibleHostname(host)) destination = { type: AddressType.Domain, host, port };
    else throw new Socks4Error(Socks4Reply.RejectedOrFailed, `"${host.replace(/[^\x20-\x7e]/g, "?").slice(0, 64)}" is not a host name`);
  } else {
    destination = { type: AddressType.IPv4, host: ip.join("."), port };
  }
  return { value: { command, destination, userId }, bytesUsed };
}

/** The 8-byte reply; DSTPORT and DSTIP are zero, since the edge's socket is not ours to name. */
export function encodeSocks4Reply(reply: Socks4Reply): Uint8Array {
  return Uint8Array.of(0x00, reply, 0, 0, 0, 0, 0, 0);
}
