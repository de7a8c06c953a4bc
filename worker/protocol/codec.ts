// The frame codec: every frame's layout, encoded and decoded, and the typed ProtocolError a
// malformed frame raises with the close code it maps to. docs/protocol.md §3 says the same in prose.
//
// Pure: bytes in, typed values or a typed ProtocolError out. No sockets, no Workers APIs, so it
// runs unchanged in workerd and in Node.

import {
  type Destination,
  isPlausibleHostname,
  parseIPv4,
  parseIPv6,
  formatIPv6,
} from "./addresses.ts";
import {
  AddressType,
  CloseCode,
  FrameType,
  MAX_DATA_BYTES,
  MAX_DOMAIN_BYTES,
  MAX_EARLY_DATA_BYTES,
  MAX_FRAME_BYTES,
  MAX_HEADER_OPEN_BYTES,
  MAX_WINDOW_BYTES,
  MIN_WINDOW_BYTES,
  OPEN_HEADER,
  PROTOCOL_VERSION,
  type ProtocolVersion,
  StreamStatus,
  speaksWindowGrowth,
} from "./constants.ts";

export type OpenFrame = {
  type: typeof FrameType.Open;
  destination: Destination;
  windowBytes: number;
  earlyData: Uint8Array;
};
export type OpenedFrame = {
  type: typeof FrameType.Opened;
  status: StreamStatus;
  windowBytes: number;
  reason: string;
};
export type DataFrame = { type: typeof FrameType.Data; payload: Uint8Array };
export type EarlyFrame = { type: typeof FrameType.Early; payload: Uint8Array };
export type WindowFrame = { type: typeof FrameType.Window; bytes: number };
export type EndFrame = { type: typeof FrameType.End };
export type GrowFrame = { type: typeof FrameType.Grow; windowBytes: number };
export type PingFrame = { type: typeof FrameType.Ping; id: number };
export type PongFrame = { type: typeof FrameType.Pong; id: number };
export type ResetFrame = { type: typeof FrameType.Reset; status: StreamStatus; reason: string };
export type Frame = OpenFrame | OpenedFrame | DataFrame | EarlyFrame | WindowFrame | EndFrame | ResetFrame | GrowFrame | PingFrame | PongFrame;

/** A protocol violation, carrying the close code the receiving side closes the WebSocket with. */
export class ProtocolError extends Error {
  readonly closeCode: CloseCode;
  constructor(closeCode: CloseCode, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.closeCode = closeCode;
  }
}

/** Longest close reason RFC 6455 allows: a close frame body is at most 125 bytes, 2 of them the code. */
const MAX_CLOSE_REASON_BYTES = 123;
/** Longest reason text a RESET or OPENED carries; a reason is for logs, not for transport. */
const MAX_REASON_BYTES = 256;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const STREAM_STATUSES = new Set<number>(Object.values(StreamStatus));

/** Cuts a UTF-8 string to at most maxBytes without splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = textEncoder.encode(text);
  if (bytes.byteLength <= maxBytes) return text;
  let end = maxBytes;
  // Step back over continuation bytes (10xxxxxx) so the cut lands on a character boundary.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(bytes.subarray(0, end));
}

/** A close reason that fits in a WebSocket close frame. */
export function closeReason(text: string): string {
  return truncateUtf8(text, MAX_CLOSE_REASON_BYTES);
}

// ---- encoding -------------------------------------------------------------------------------

/** Encodes an OPEN frame. Throws RangeError for a destination or window outside the protocol. */
export function encodeOpen(destination: Destination, windowBytes: number, earlyData?: Uint8Array): Uint8Array {
  checkWindow(windowBytes, RangeError);
  const early = earlyData ?? new Uint8Array(0);
  if (early.byteLength > MAX_EARLY_DATA_BYTES) {
    throw new RangeError(`early data is ${early.byteLength} bytes; at most ${MAX_EARLY_DATA_BYTES}`);
  }
  const address = encodeAddress(destination);
  const frame = new Uint8Array(1 + address.byteLength + 2 + 4 + early.byteLength);
  const view = new DataView(frame.buffer);
  frame[0] = FrameType.Open;
  frame.set(address, 1);
  let offset = 1 + address.byteLength;
  view.setUint16(offset, destination.port);
  offset += 2;
  view.setUint32(offset, windowBytes);
  offset += 4;
  frame.set(early, offset);
  return frame;
}

/** Encodes an OPENED frame. */
export function encodeOpened(status: StreamStatus, windowBytes: number, reason = ""): Uint8Array {
  const text = textEncoder.encode(truncateUtf8(reason, MAX_REASON_BYTES));
  const frame = new Uint8Array(1 + 1 + 4 + text.byteLength);
  frame[0] = FrameType.Opened;
  frame[1] = status;
  new DataView(frame.buffer).setUint32(2, windowBytes);
  frame.set(text, 6);
  return frame;
}

/**
 * Encodes a DATA frame by copying the payload behind a type byte. The payload may come in
 * pieces, which are joined in the same copy: the agent packs several socket reads into one frame.
 */
export function encodeData(payload: Uint8Array | readonly Uint8Array[]): Uint8Array {
  return encodePayloadFrame(FrameType.Data, "DATA", payload);
}

/** Encodes an EARLY frame (DATA's layout) by copying the payload, whole or in pieces, behind a type byte. */
export function encodeEarly(payload: Uint8Array | readonly Uint8Array[]): Uint8Array {
  return encodePayloadFrame(FrameType.Early, "EARLY", payload);
}

function encodePayloadFrame(type: typeof FrameType.Data | typeof FrameType.Early, name: string, payload: Uint8Array | readonly Uint8Array[]): Uint8Array {
  const pieces = payload instanceof Uint8Array ? [payload] : payload;
  const payloadBytes = pieces.reduce((total, piece) => total + piece.byteLength, 0);
  if (payloadBytes === 0 || payloadBytes > MAX_DATA_BYTES) {
    throw new RangeError(`${name} payload is ${payloadBytes} bytes; 1 to ${MAX_DATA_BYTES} allowed`);
  }
  const frame = new Uint8Array(1 + payloadBytes);
  frame[0] = type;
  let offset = 1;
  for (const piece of pieces) {
    frame.set(piece, offset);
    offset += piece.byteLength;
  }
  return frame;
}

/**
 * Offset at which a reader should place payload bytes so that dataFrameAround() can frame them
 * without a copy: read into `new Uint8Array(buffer, DATA_HEADER_BYTES, n)`.
 */
export const DATA_HEADER_BYTES = 1;

/**
 * Turns payload bytes that sit DATA_HEADER_BYTES into their ArrayBuffer into a DATA frame over
 * the same memory (no copy): the hot path of the edge's download relay.
 */
export function dataFrameAround(payload: Uint8Array): Uint8Array {
  if (payload.byteOffset < DATA_HEADER_BYTES) throw new RangeError("payload has no room for a header");
  if (payload.byteLength === 0 || payload.byteLength > MAX_DATA_BYTES) {
    throw new RangeError(`DATA payload is ${payload.byteLength} bytes; 1 to ${MAX_DATA_BYTES} allowed`);
  }
  const frame = new Uint8Array(payload.buffer, payload.byteOffset - DATA_HEADER_BYTES, payload.byteLength + DATA_HEADER_BYTES);
  frame[0] = FrameType.Data;
  return frame;
}

/** Encodes a WINDOW frame granting `bytes` more. */
export function encodeWindow(bytes: number): Uint8Array {
  if (!Number.isInteger(bytes) || bytes < 1 || bytes > 0xffffffff) {
    throw new RangeError(`WINDOW grant ${bytes} is outside 1..2^32-1`);
  }
  const frame = new Uint8Array(5);
  frame[0] = FrameType.Window;
  new DataView(frame.buffer).setUint32(1, bytes);
  return frame;
}

/** Encodes a GROW frame: the sender's receive window is now `windowBytes`. */
export function encodeGrow(windowBytes: number): Uint8Array {
  checkWindow(windowBytes, RangeError);
  return encodeU32Frame(FrameType.Grow, windowBytes);
}

/** Encodes a PING frame with a 32-bit id. */
export function encodePing(id: number): Uint8Array {
  return encodeU32Frame(FrameType.Ping, id);
}

/** Encodes a PONG frame answering the PING with this id. */
export function encodePong(id: number): Uint8Array {
  return encodeU32Frame(FrameType.Pong, id);
}

function encodeU32Frame(type: FrameType, value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`frame field ${value} is outside 0..2^32-1`);
  const frame = new Uint8Array(5);
  frame[0] = type;
  new DataView(frame.buffer).setUint32(1, value);
  return frame;
}

/** Encodes an END frame. */
export function encodeEnd(): Uint8Array {
  return Uint8Array.of(FrameType.End);
}

/** Encodes a RESET frame. */
export function encodeReset(status: StreamStatus, reason = ""): Uint8Array {
  if (status === StreamStatus.Ok) throw new RangeError("a RESET carries a failure status, not Ok");
  const text = textEncoder.encode(truncateUtf8(reason, MAX_REASON_BYTES));
  const frame = new Uint8Array(2 + text.byteLength);
  frame[0] = FrameType.Reset;
  frame[1] = status;
  frame.set(text, 2);
  return frame;
}

/**
 * ATYP and address bytes of a destination, laid out as in RFC 1928 section 5 (the port is the
 * caller's). Throws RangeError for an address or port outside the protocol.
 */
export function encodeAddress(destination: Destination): Uint8Array {
  if (!Number.isInteger(destination.port) || destination.port < 1 || destination.port > 65535) {
    throw new RangeError(`port ${destination.port} is outside 1..65535`);
  }
  switch (destination.type) {
    case AddressType.IPv4: {
      const octets = parseIPv4(destination.host);
      if (!octets) throw new RangeError(`not an IPv4 address: ${destination.host}`);
      return Uint8Array.of(AddressType.IPv4, ...octets);
    }
    case AddressType.IPv6: {
      const bytes = parseIPv6(destination.host);
      if (!bytes) throw new RangeError(`not an IPv6 address: ${destination.host}`);
      return Uint8Array.of(AddressType.IPv6, ...bytes);
    }
    case AddressType.Domain: {
      const name = textEncoder.encode(destination.host);
      if (name.byteLength === 0 || name.byteLength > MAX_DOMAIN_BYTES) {
        throw new RangeError(`domain name is ${name.byteLength} bytes; 1 to ${MAX_DOMAIN_BYTES} allowed`);
      }
      return Uint8Array.of(AddressType.Domain, name.byteLength, ...name);
    }
  }
}

/** OPEN_HEADER's value for an OPEN frame: base64url without padding (RFC 4648 section 5). */
export function encodeHeaderOpen(openFrame: Uint8Array): string {
  if (openFrame.byteLength > MAX_HEADER_OPEN_BYTES) {
    throw new RangeError(`an OPEN in the upgrade is at most ${MAX_HEADER_OPEN_BYTES} bytes, not ${openFrame.byteLength}`);
  }
  let binary = "";
  for (const byte of openFrame) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The OPEN frame an OPEN_HEADER value carries, or ProtocolError(MalformedFrame) saying what is wrong. */
export function decodeHeaderOpen(value: string): OpenFrame {
  if (!/^[A-Za-z0-9_-]*$/.test(value) || value.length % 4 === 1) throw malformed(`${OPEN_HEADER} is not base64url`);
  if (Math.floor((value.length * 3) / 4) > MAX_HEADER_OPEN_BYTES) {
    throw new ProtocolError(CloseCode.FrameTooLarge, `${OPEN_HEADER} carries more than ${MAX_HEADER_OPEN_BYTES} bytes`);
  }
  const binary = atob(value.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index++) bytes[index] = binary.charCodeAt(index);
  const frame = decodeFrame(bytes);
  if (frame.type !== FrameType.Open) throw malformed(`${OPEN_HEADER} carries frame type ${frame.type}, not OPEN`);
  return frame;
}

// ---- decoding -------------------------------------------------------------------------------

/**
 * Decodes one WebSocket binary message into a frame, or throws ProtocolError with its close code.
 * `version` is the tunnel's: a frame type added after it is unknown there (4400), as in a peer of that version.
 */
export function decodeFrame(message: Uint8Array, version: ProtocolVersion = PROTOCOL_VERSION): Frame {
  if (message.byteLength > MAX_FRAME_BYTES) {
    throw new ProtocolError(CloseCode.FrameTooLarge, `frame is ${message.byteLength} bytes; at most ${MAX_FRAME_BYTES}`);
  }
  if (message.byteLength === 0) throw malformed("empty message");
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const type = message[0];
  switch (type) {
    case FrameType.Open:
      return decodeOpen(message, view);
    case FrameType.Opened: {
      if (message.byteLength < 6) throw malformed("OPENED shorter than 6 bytes");
      const status = decodeStatus(message[1], "OPENED");
      const windowBytes = view.getUint32(2);
      if (status === StreamStatus.Ok) checkWindow(windowBytes, malformedError);
      return { type, status, windowBytes, reason: decodeText(message.subarray(6), "OPENED reason") };
    }
    case FrameType.Data:
      if (message.byteLength < 2) throw malformed("DATA with no payload");
      return { type, payload: message.subarray(1) };
    case FrameType.Early:
      if (message.byteLength < 2) throw malformed("EARLY with no payload");
      return { type, payload: message.subarray(1) };
    case FrameType.Window: {
      if (message.byteLength !== 5) throw malformed("WINDOW must be exactly 5 bytes");
      const bytes = view.getUint32(1);
      if (bytes === 0) throw malformed("WINDOW grants 0 bytes");
      return { type, bytes };
    }
    case FrameType.End:
      if (message.byteLength !== 1) throw malformed("END carries no payload");
      return { type };
    case FrameType.Reset: {
      if (message.byteLength < 2) throw malformed("RESET shorter than 2 bytes");
      const status = decodeStatus(message[1], "RESET");
      if (status === StreamStatus.Ok) throw malformed("RESET with status 0 (Ok): a reset is a failure");
      return { type, status, reason: decodeText(message.subarray(2), "RESET reason") };
    }
    case FrameType.Grow:
    case FrameType.Ping:
    case FrameType.Pong: {
      if (!speaksWindowGrowth(version)) break;
      if (message.byteLength !== 5) throw malformed(`${type === FrameType.Grow ? "GROW" : type === FrameType.Ping ? "PING" : "PONG"} must be exactly 5 bytes`);
      const value = view.getUint32(1);
      if (type === FrameType.Ping) return { type, id: value };
      if (type === FrameType.Pong) return { type, id: value };
      checkWindow(value, malformedError);
      return { type, windowBytes: value };
    }
  }
  throw malformed(`unknown frame type 0x${(type ?? 0).toString(16).padStart(2, "0")}`);
}

function decodeOpen(message: Uint8Array, view: DataView): OpenFrame {
  if (message.byteLength < 2) throw malformed("OPEN has no address");
  const addressType = message[1];
  let offset = 2;
  let destinationHost: string;
  let destinationType: AddressType;
  switch (addressType) {
    case AddressType.IPv4:
      need(message, offset + 4, "OPEN IPv4 address");
      destinationHost = Array.from(message.subarray(offset, offset + 4)).join(".");
      destinationType = AddressType.IPv4;
      offset += 4;
      break;
    case AddressType.IPv6:
      need(message, offset + 16, "OPEN IPv6 address");
      destinationHost = formatIPv6(message.subarray(offset, offset + 16));
      destinationType = AddressType.IPv6;
      offset += 16;
      break;
    case AddressType.Domain: {
      need(message, offset + 1, "OPEN domain length");
      const length = message[offset] ?? 0;
      offset += 1;
      if (length === 0) throw malformed("OPEN domain name is empty");
      need(message, offset + length, "OPEN domain name");
      destinationHost = decodeText(message.subarray(offset, offset + length), "OPEN domain name");
      if (!isPlausibleHostname(destinationHost)) throw malformed("OPEN domain name has characters a host name cannot have");
      destinationType = AddressType.Domain;
      offset += length;
      break;
    }
    default:
      throw malformed(`OPEN address type 0x${(addressType ?? 0).toString(16).padStart(2, "0")} is unknown`);
  }
  need(message, offset + 6, "OPEN port and window");
  const port = view.getUint16(offset);
  if (port === 0) throw malformed("OPEN port is 0");
  const windowBytes = view.getUint32(offset + 2);
  checkWindow(windowBytes, malformedError);
  const earlyData = message.subarray(offset + 6);
  if (earlyData.byteLength > MAX_EARLY_DATA_BYTES) {
    throw new ProtocolError(CloseCode.FrameTooLarge, `OPEN early data is ${earlyData.byteLength} bytes; at most ${MAX_EARLY_DATA_BYTES}`);
  }
  return {
    type: FrameType.Open,
    destination: { type: destinationType, host: destinationHost, port } as Destination,
    windowBytes,
    earlyData,
  };
}

function decodeStatus(byte: number | undefined, frameName: string): StreamStatus {
  if (byte === undefined || !STREAM_STATUSES.has(byte)) throw malformed(`${frameName} status ${byte} is unknown`);
  return byte as StreamStatus;
}

function decodeText(bytes: Uint8Array, what: string): string {
  try {
    return textDecoder.decode(bytes);
  } catch {
    throw malformed(`${what} is not UTF-8`);
  }
}

function need(message: Uint8Array, length: number, what: string): void {
  if (message.byteLength < length) throw malformed(`${what} is truncated`);
}

function checkWindow(windowBytes: number, makeError: (message: string) => Error): void {
  if (!Number.isInteger(windowBytes) || windowBytes < MIN_WINDOW_BYTES || windowBytes > MAX_WINDOW_BYTES) {
    throw makeError(`window ${windowBytes} is outside ${MIN_WINDOW_BYTES}..${MAX_WINDOW_BYTES} bytes`);
  }
}

function malformed(message: string): ProtocolError {
  return new ProtocolError(CloseCode.MalformedFrame, message);
}
const malformedError = (message: string): Error => malformed(message);
