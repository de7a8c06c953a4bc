// The SOCKS5 UDP request header (RFC 1928 section 7), which wraps every datagram between a
// client and the agent's UDP relay: pure, bytes in and typed values out.
//
//   +-----+------+------+----------+----------+----------+
//   | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//   +-----+------+------+----------+----------+----------+
//   |  2  |  1   |  1   | Variable |    2     | Variable |
//   +-----+------+------+----------+----------+----------+

import { Socks5Error, parseAddress } from "./socks5.ts";
import { encodeAddress, type Destination } from "../../worker/protocol/index.ts";

/** FRAG of a datagram that stands alone; any other value is one piece of a fragmented datagram. */
export const STANDALONE_FRAGMENT = 0x00;
/** Bytes before ATYP: RSV (2) and FRAG (1). */
const PREFIX_BYTES = 3;

export type UdpDatagram = {
  /** FRAG: 0 for a whole datagram (the only kind the agent relays). */
  fragment: number;
  /** DST.ADDR and DST.PORT: where the client wants DATA sent. */
  destination: Destination;
  /** DATA: the datagram's own bytes. */
  payload: Uint8Array;
};

/** A datagram whose header does not parse. There is no reply to carry: the agent drops it. */
export class UdpHeaderError extends Error {
  override readonly name = "UdpHeaderError";
}

/** Parses one datagram from a client; throws UdpHeaderError for a header that does not parse. */
export function parseUdpDatagram(input: Uint8Array): UdpDatagram {
  if (input.byteLength < PREFIX_BYTES + 1) throw new UdpHeaderError(`datagram is ${input.byteLength} bytes, shorter than any UDP request header`);
  if (input[0] !== 0x00 || input[1] !== 0x00) throw new UdpHeaderError("reserved bytes are not 0x0000");
  let address;
  try {
    address = parseAddress(input, PREFIX_BYTES);
  } catch (error) {
    if (error instanceof Socks5Error) throw new UdpHeaderError(error.message);
    throw error;
  }
  // A datagram arrives whole, so a header cut short can never be completed by later bytes.
  if (address === "incomplete") throw new UdpHeaderError("header is truncated");
  return { fragment: input[2] ?? 0, destination: address.value, payload: input.subarray(address.bytesUsed) };
}

/**
 * A whole datagram (FRAG 0) for a client: its header names `destination`, the address the
 * payload came from. Throws RangeError for an address or port outside RFC 1928.
 */
export function encodeUdpDatagram(destination: Destination, payload: Uint8Array): Uint8Array {
  const address = encodeAddress(destination);
  const datagram = new Uint8Array(PREFIX_BYTES + address.byteLength + 2 + payload.byteLength);
  datagram[2] = STANDALONE_FRAGMENT;
  datagram.set(address, PREFIX_BYTES);
  let offset = PREFIX_BYTES + address.byteLength;
  datagram[offset++] = destination.port >>> 8;
  datagram[offset++] = destination.port & 0xff;
  datagram.set(payload, offset);
  return datagram;
}
