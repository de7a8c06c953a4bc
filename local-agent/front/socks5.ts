// SOCKS5 (RFC 1928) message codec for the agent: pure, bytes in and typed values out.

import { AddressType, MAX_DOMAIN_BYTES, StreamStatus, encodeAddress, formatIPv6, isPlausibleHostname, parseIPv4, parseIPv6, type Destination } from "../../worker/protocol/index.ts";

import { AuthMethod, Command, Reply, SOCKS_VERSION } from "../../worker/socks5-numbers.ts";

export { AuthMethod, Command, Reply, SOCKS_VERSION };

/** The SOCKS reply for each edge stream status: the one place that mapping lives. */
export const REPLY_FOR_STATUS: Readonly<Record<StreamStatus, Reply>> = {
  [StreamStatus.Ok]: Reply.Succeeded,
  [StreamStatus.GeneralFailure]: Reply.GeneralFailure,
  [StreamStatus.NotAllowed]: Reply.NotAllowedByRuleset,
  [StreamStatus.NetworkUnreachable]: Reply.NetworkUnreachable,
  [StreamStatus.HostUnreachable]: Reply.HostUnreachable,
  [StreamStatus.ConnectionRefused]: Reply.ConnectionRefused,
  // RFC 1928 has no "timed out"; 0x06 "TTL expired" is what clients (curl among them) report as one.
  [StreamStatus.Timeout]: Reply.TtlExpired,
  // The edge cannot reach a Cloudflare-hosted destination and no fallback applies: a policy of
  // the platform, which is what "not allowed by ruleset" tells a client.
  [StreamStatus.OnCloudflare]: Reply.NotAllowedByRuleset,
};

/**
 * A request the agent cannot serve. `reply` is the code to answer with before closing, or
 * undefined where the input is not SOCKS5 at all and the only answer is to close.
 */
export class Socks5Error extends Error {
  readonly reply: Reply | undefined;
  constructor(reply: Reply | undefined, message: string) {
    super(message);
    this.name = "Socks5Error";
    this.reply = reply;
  }
}

/** A parsed message and how many input bytes it used; or "incomplete" when more bytes are needed. */
export type ParseResult<T> = { value: T; bytesUsed: number } | "incomplete";

export type Greeting = { methods: number[] };
export type Request = { command: Command; destination: Destination };

/** Longest greeting: version, count, and up to 255 methods. Input past this is not SOCKS5. */
export const MAX_GREETING_BYTES = 2 + 255;
/** Longest request: header, a 255-byte domain with its length byte, and the port. */
export const MAX_REQUEST_BYTES = 4 + 1 + MAX_DOMAIN_BYTES + 2;

/** Parses the method-selection message (RFC 1928 section 3). */
export function parseGreeting(input: Uint8Array): ParseResult<Greeting> {
  if (input.byteLength < 1) return "incomplete";
  if (input[0] !== SOCKS_VERSION) throw new Socks5Error(undefined, `not SOCKS5: version byte is 0x${hex(input[0])}`);
  if (input.byteLength < 2) return "incomplete";
  const methodCount = input[1] ?? 0;
  if (methodCount === 0) throw new Socks5Error(undefined, "greeting offers no authentication methods");
  if (input.byteLength < 2 + methodCount) return "incomplete";
  return { value: { methods: Array.from(input.subarray(2, 2 + methodCount)) }, bytesUsed: 2 + methodCount };
}

/** The method reply: the chosen method, or 0xFF when none offered is acceptable. */
export function encodeMethodSelection(method: AuthMethod): Uint8Array {
  return Uint8Array.of(SOCKS_VERSION, method);
}

/**
 * Parses a request (RFC 1928 section 4). Throws Socks5Error carrying the reply code for a
 * command or address type the agent does not serve, or for a malformed address.
 */
export function parseRequest(input: Uint8Array): ParseResult<Request> {
  if (input.byteLength < 1) return "incomplete";
  if (input[0] !== SOCKS_VERSION) throw new Socks5Error(undefined, `not SOCKS5: request version byte is 0x${hex(input[0])}`);
  if (input.byteLength < 4) return "incomplete";
  const command = input[1] ?? 0;
  if (input[2] !== 0x00) throw new Socks5Error(Reply.GeneralFailure, `reserved byte is 0x${hex(input[2])}, not 0x00`);
  const address = parseAddress(input, 3);
  if (address === "incomplete") return "incomplete";
  if (command !== Command.Connect && command !== Command.Bind && command !== Command.UdpAssociate) {
    throw new Socks5Error(Reply.CommandNotSupported, `command 0x${hex(command)} is not one RFC 1928 defines`);
  }
  return { value: { command, destination: address.value }, bytesUsed: address.bytesUsed };
}

/**
 * Parses ATYP, DST.ADDR and DST.PORT starting at `offset` (RFC 1928 sections 4 and 7 share the
 * layout); bytesUsed counts from the start of `input`. Throws Socks5Error for an address type
 * RFC 1928 does not define, an empty domain, or a name no DNS could hold.
 */
export function parseAddress(input: Uint8Array, offset: number): ParseResult<Destination> {
  if (input.byteLength < offset + 1) return "incomplete";
  const addressType = input[offset] ?? 0;
  let position = offset + 1;
  let destination: Destination;
  switch (addressType) {
    case AddressType.IPv4: {
      if (input.byteLength < position + 4 + 2) return "incomplete";
      destination = { type: AddressType.IPv4, host: Array.from(input.subarray(position, position + 4)).join("."), port: 0 };
      position += 4;
      break;
    }
    case AddressType.IPv6: {
      if (input.byteLength < position + 16 + 2) return "incomplete";
      destination = { type: AddressType.IPv6, host: formatIPv6(input.subarray(position, position + 16)), port: 0 };
      position += 16;
      break;
    }
    case AddressType.Domain: {
      if (input.byteLength < position + 1) return "incomplete";
      const length = input[position] ?? 0;
      if (length === 0) throw new Socks5Error(Reply.GeneralFailure, "domain name is empty");
      if (input.byteLength < position + 1 + length + 2) return "incomplete";
      const host = decodeDomain(input.subarray(position + 1, position + 1 + length));
      destination = domainDestination(host);
      position += 1 + length;
      break;
    }
    default:
      throw new Socks5Error(Reply.AddressTypeNotSupported, `address type 0x${hex(addressType)} is not one RFC 1928 defines`);
  }
  const port = ((input[position] ?? 0) << 8) | (input[position + 1] ?? 0);
  return { value: { ...destination, port }, bytesUsed: position + 2 };
}

/** Version byte of the username/password subnegotiation (RFC 1929), not the SOCKS version. */
export const USER_PASS_VERSION = 0x01;
/** Longest RFC 1929 request: version, two lengths, and up to 255 bytes each. */
export const MAX_USER_PASS_BYTES = 3 + 255 + 255;

export type UserPass = { name: string; password: string };

/** Parses the username/password request (RFC 1929 section 2). */
export function parseUserPass(input: Uint8Array): ParseResult<UserPass> {
  if (input.byteLength < 1) return "incomplete";
  if (input[0] !== USER_PASS_VERSION) throw new Socks5Error(undefined, `not an RFC 1929 request: version byte is 0x${hex(input[0])}`);
  if (input.byteLength < 2) return "incomplete";
  const nameBytes = input[1] ?? 0;
  if (input.byteLength < 2 + nameBytes + 1) return "incomplete";
  const passwordBytes = input[2 + nameBytes] ?? 0;
  const end = 3 + nameBytes + passwordBytes;
  if (input.byteLength < end) return "incomplete";
  // ignoreBOM: a default TextDecoder drops a leading U+FEFF, so "\uFEFFalice" would log in as
  // "alice" and a user configured with that name never could (found by test/unit/fuzz).
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  return {
    value: { name: decoder.decode(input.subarray(2, 2 + nameBytes)), password: decoder.decode(input.subarray(3 + nameBytes, end)) },
    bytesUsed: end,
  };
}

/** The RFC 1929 status reply: 0x00 success; any other value is failure and the connection closes. */
export function encodeUserPassStatus(accepted: boolean): Uint8Array {
  return Uint8Array.of(USER_PASS_VERSION, accepted ? 0x00 : 0x01);
}

/** A reply (RFC 1928 section 6). The bound address is 0.0.0.0:0: the edge's socket is not ours to name. */
export function encodeReply(reply: Reply): Uint8Array {
  return Uint8Array.of(SOCKS_VERSION, reply, 0x00, AddressType.IPv4, 0, 0, 0, 0, 0, 0);
}

/**
 * A success reply naming the address and port the agent bound for the client: UDP ASSOCIATE's
 * relay (RFC 1928 section 7), where the client must learn where to send its datagrams.
 */
export function encodeBoundReply(bound: Destination): Uint8Array {
  const address = encodeAddress(bound);
  return Uint8Array.of(SOCKS_VERSION, Reply.Succeeded, 0x00, ...address, bound.port >>> 8, bound.port & 0xff);
}

function decodeDomain(bytes: Uint8Array): string {
  let host: string;
  try {
    host = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Socks5Error(Reply.GeneralFailure, "domain name is not valid UTF-8");
  }
  return host;
}

/**
 * Clients often send IP literals as domain names (ATYP 0x03); treat those as the addresses they
 * are, and refuse names no DNS could hold, before they ever reach the edge.
 */
function domainDestination(host: string): Destination {
  // With its root dot, "10.0.0.1." is still that address to a resolver; as a name it would slip
  // past every cidr rule, which matches addresses only (found by test/unit/fuzz).
  const literal = host.endsWith(".") ? host.slice(0, -1) : host;
  if (parseIPv4(literal)) return { type: AddressType.IPv4, host: literal, port: 0 };
  const ipv6 = parseIPv6(host);
  if (ipv6) return { type: AddressType.IPv6, host: formatIPv6(Uint8Array.from(ipv6)), port: 0 };
  if (!isPlausibleHostname(host)) throw new Socks5Error(Reply.HostUnreachable, `"${printable(host)}" is not a host name`);
  return { type: AddressType.Domain, host, port: 0 };
}

function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, 64);
}

function hex(byte: number | undefined): string {
  return (byte ?? 0).toString(16).padStart(2, "0");
}
