// The edgesocks wire protocol between the local agent and the Worker: the one definition of
// every frame layout, status and close code. The agent imports this module; nothing else may
// re-declare a number from it. docs/protocol.md describes the same protocol in prose.
//
// Pure: bytes in, typed values or a typed ProtocolError out. No sockets, no Workers APIs, so it
// runs unchanged in workerd and in Node.

/** Newest protocol version this build speaks. It travels in the WebSocket handshake as the subprotocol. */
export const PROTOCOL_VERSION = 4;
/**
 * Every version this build speaks, newest first: the agent offers them all and the edge picks
 * the newest one offered, so an edge keeps serving the previous version's agents and an agent
 * keeps working with the previous version's edge (users update the two halves at different times).
 */
export const PROTOCOL_VERSIONS = [4, 3, 2] as const;
export type ProtocolVersion = (typeof PROTOCOL_VERSIONS)[number];
/** The Sec-WebSocket-Protocol value that names `version`. */
export function subprotocolFor(version: ProtocolVersion): string {
  return `edgesocks.v${version}`;
}
/** The Sec-WebSocket-Protocol value that names PROTOCOL_VERSION. */
export const SUBPROTOCOL = subprotocolFor(PROTOCOL_VERSION);
/** Every subprotocol this build speaks, newest first: what the agent offers. */
export const SUBPROTOCOLS: readonly string[] = PROTOCOL_VERSIONS.map(subprotocolFor);

/** The newest version among the offered subprotocol names that this build speaks, or undefined. */
export function chooseVersion(offered: readonly string[]): ProtocolVersion | undefined {
  return PROTOCOL_VERSIONS.find((version) => offered.includes(subprotocolFor(version)));
}

/** The version a subprotocol name stands for, when this build speaks it. */
export function versionOfSubprotocol(name: string): ProtocolVersion | undefined {
  return chooseVersion([name]);
}
/** Path of the tunnel endpoint on the Worker. */
export const TUNNEL_PATH = "/tunnel";
/**
 * Upgrade request header that may carry the tunnel's first OPEN frame, base64url-encoded: the
 * edge starts connect() before it answers 101, so a cold open costs one round trip less.
 */
export const OPEN_HEADER = "Edgesocks-Open";
/**
 * Largest OPEN frame OPEN_HEADER may carry, before encoding. Cloudflare limits request headers
 * to 128 KB in all; 8 KiB holds a destination and a TLS ClientHello. Early data beyond it
 * follows as EARLY frames.
 */
export const MAX_HEADER_OPEN_BYTES = 8 * 1024;
/**
 * Upgrade request header (value "1") marking a warm spare: a tunnel the agent opens before it
 * has a stream for it. The edge waits POOLED_OPEN_TIMEOUT_MS for its first OPEN instead of the
 * open timeout.
 */
export const POOLED_HEADER = "Edgesocks-Pooled";
/** How long the edge keeps a pooled tunnel that has not carried an OPEN yet. */
export const POOLED_OPEN_TIMEOUT_MS = 300_000;
/**
 * The agent retires an unused pooled tunnel after this long (and opens its replacement first),
 * so the edge's POOLED_OPEN_TIMEOUT_MS never closes one under a stream that is being opened.
 */
export const POOLED_MAX_IDLE_MS = 240_000;
/**
 * How long the edge waits for the next OPEN after a stream on a tunnel has finished (it closes
 * the tunnel with 4408 after that): worker/config.ts's open timeout, which no var changes.
 */
export const NEXT_OPEN_TIMEOUT_MS = 10_000;
/**
 * The agent closes a tunnel it took back after a stream once it has waited this long for the
 * next one, well before NEXT_OPEN_TIMEOUT_MS: the edge's timer started when its side of the
 * stream finished, up to a round trip before the agent's.
 */
export const REUSED_MAX_IDLE_MS = 7_000;
/**
 * Path of the DNS endpoint on the Worker: the agent POSTs each DNS query a SOCKS5 client sends
 * over UDP ASSOCIATE, and the edge answers it through a DNS-over-HTTPS resolver (RFC 8484).
 */
export const DNS_PATH = "/dns";
/** Media type of a DNS message in an HTTP body, both ways (RFC 8484 section 6). */
export const DNS_MESSAGE_TYPE = "application/dns-message";
/** Largest DNS message: TCP frames one with a 16-bit length (RFC 1035 section 4.2.2), and DoH keeps that bound. */
export const MAX_DNS_MESSAGE_BYTES = 65535;
/** The fixed DNS header (RFC 1035 section 4.1.1): anything shorter is not a DNS message. */
export const DNS_HEADER_BYTES = 12;
/**
 * Shortest bearer token the edge accepts: shorter secrets are guessable, and an edge relay is
 * worth guessing. The agent checks it at start so a short token is not a 401 on every connection.
 */
export const MIN_TOKEN_LENGTH = 16;

/** First byte of every binary WebSocket message. */
export const FrameType = {
  /** agent -> edge: destination, the agent's receive window, optional early data. */
  Open: 0x01,
  /** edge -> agent: outcome of the open, the edge's receive window, a reason on failure. */
  Opened: 0x02,
  /** both ways: stream bytes, counted against the receiver's window. */
  Data: 0x03,
  /** both ways: the receiver has delivered N more bytes; the sender may send N more. */
  Window: 0x04,
  /** both ways: the sender's direction is finished (TCP FIN); the other direction goes on. */
  End: 0x05,
  /** both ways: abort the stream at once; the WebSocket itself may carry the next OPEN. */
  Reset: 0x06,
  /**
   * agent -> edge: client bytes the agent sent before it had seen OPENED (a 0-RTT open). Outside
   * every window, so it may reach the edge before or after OPENED left it; with the OPEN's own
   * early data, at most MAX_EARLY_DATA_BYTES, and never after the first DATA.
   */
  Early: 0x07,
  /**
   * Since v4, both ways: the receiver of a direction raises its window for the stream to the
   * carried size (larger than before, at most MAX_WINDOW_BYTES); the difference is new credit.
   * Auto-tuning (worker/flow-control.ts): windows grow while the path needs more.
   */
  Grow: 0x08,
  /** Since v4, both ways, tunnel-wide: asks for a PONG with the same id (the round trip the windows are sized to). */
  Ping: 0x09,
  /** Since v4, both ways: the answer to a PING, its id echoed. */
  Pong: 0x0a,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Destination address kinds, numbered as in RFC 1928 section 5 so the agent can pass them on. */
export const AddressType = {
  IPv4: 0x01,
  Domain: 0x03,
  IPv6: 0x04,
} as const;
export type AddressType = (typeof AddressType)[keyof typeof AddressType];

/** Outcome of an OPEN, and the cause carried by a RESET. The agent maps each to a SOCKS reply. */
export const StreamStatus = {
  Ok: 0x00,
  GeneralFailure: 0x01,
  NotAllowed: 0x02,
  NetworkUnreachable: 0x03,
  HostUnreachable: 0x04,
  ConnectionRefused: 0x05,
  Timeout: 0x06,
  /**
   * Since v3, OPENED only: the destination is on Cloudflare's network, which a Worker's connect()
   * cannot reach, and no fallback at the edge applies. The OPENED's window field then carries
   * how many seconds the verdict holds (the DNS answer's TTL), so the agent can remember it.
   */
  OnCloudflare: 0x07,
} as const;
export type StreamStatus = (typeof StreamStatus)[keyof typeof StreamStatus];

/**
 * The status to send a peer of `version`: a v2 peer closes the tunnel on a status it does not
 * know, so OnCloudflare reaches it as NotAllowed (the SOCKS reply the agent gives for both).
 */
export function statusForVersion(status: StreamStatus, version: ProtocolVersion): StreamStatus {
  return version < 3 && status === StreamStatus.OnCloudflare ? StreamStatus.NotAllowed : status;
}

/**
 * WebSocket close codes (RFC 6455 section 7.4.2 leaves 4000-4999 to applications). The last
 * three digits echo the HTTP status of the same meaning, so a log line reads on its own.
 */
export const CloseCode = {
  /**
   * The agent is done with the tunnel: its stream finished, failed to open or was reset (the
   * cause travelled in OPENED or RESET). The edge also answers an agent's close with it.
   */
  Normal: 1000,
  /** A frame that does not parse: unknown type, short fields, bad address, text message. */
  MalformedFrame: 4400,
  /**
   * No OPEN arrived within the edge's open timeout. (An agent whose pings go unanswered drops
   * the connection without a close frame: the edge sees 1006.)
   */
  Timeout: 4408,
  /** A well-formed frame in the wrong state, such as DATA before OPENED. */
  UnexpectedFrame: 4409,
  /**
   * A frame larger than MAX_FRAME_BYTES, or early data over MAX_EARLY_DATA_BYTES. (Workers and
   * the agent's ws library may refuse an oversized message first, with 1009.)
   */
  FrameTooLarge: 4413,
  /** The peer sent more DATA than the window it was granted. */
  WindowExceeded: 4429,
  /** A bug or a runtime failure on the closing side. */
  InternalError: 4500,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * Largest WebSocket message either side sends or accepts. Workers limits a received WebSocket
 * message to 1 MiB; staying at that limit keeps every frame deliverable on the real platform.
 */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Largest DATA payload: a frame is one type byte plus the payload. */
export const MAX_DATA_BYTES = MAX_FRAME_BYTES - 1;
/**
 * Bytes of client data the agent may send before it has seen OPENED, outside any window: in the
 * OPEN frame and in EARLY frames that follow it. The edge holds them while it dials, and writes
 * them first.
 */
export const MAX_EARLY_DATA_BYTES = 64 * 1024;
/** Smallest receive window a peer may announce: below this a stream crawls. */
export const MIN_WINDOW_BYTES = 16 * 1024;
/** Largest receive window a peer may announce: the bound on what the other side may buffer. */
export const MAX_WINDOW_BYTES = 64 * 1024 * 1024;
/**
 * Default receive window per stream and direction, chosen by measurement (docs/benchmarks.md):
 * ~46 MB/s per stream at 20 ms agent-edge RTT, while 60 busy streams queue at most 60 MiB at the
 * edge, inside a Worker isolate's 128 MB. Larger windows are faster on long links; see there.
 */
export const DEFAULT_WINDOW_BYTES = 1024 * 1024;
/** Longest domain name a destination may carry (RFC 1035: 255 octets). */
export const MAX_DOMAIN_BYTES = 255;

/** A destination as the agent names it and the edge dials it. */
export type Destination =
  | { type: typeof AddressType.IPv4; host: string; port: number }
  | { type: typeof AddressType.IPv6; host: string; port: number }
  | { type: typeof AddressType.Domain; host: string; port: number };

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

/** The frame types version 4 added: a peer of an older version closes the tunnel on them, so they are sent and accepted on v4 tunnels only. */
export function speaksWindowGrowth(version: ProtocolVersion): boolean {
  return version >= 4;
}

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

// ---- addresses ------------------------------------------------------------------------------

/** Host names are LDH labels in practice; this refuses control characters, spaces and '/'. */
export function isPlausibleHostname(host: string): boolean {
  return /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/.test(host) && !host.includes("..");
}

/** Four octets of a dotted-quad IPv4 address, or undefined. */
export function parseIPv4(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const octets: number[] = [];
  for (const part of parts) {
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    octets.push(value);
  }
  return octets;
}

/** Sixteen bytes of an IPv6 address (RFC 4291 text forms, including embedded IPv4), or undefined. */
export function parseIPv6(text: string): number[] | undefined {
  let input = text;
  if (input.startsWith("[") && input.endsWith("]")) input = input.slice(1, -1);
  if (input.includes("%")) return undefined; // zone ids name a local interface; no meaning at the edge
  const halves = input.split("::");
  if (halves.length > 2) return undefined;
  // An embedded IPv4 address fills the low 32 bits (RFC 4291 section 2.2), so only the part of
  // the text that ends the address may end in one: "::1.2.3.4" yes, "1.2.3.4::" no.
  const parseGroups = (part: string, endsAddress: boolean): number[] | undefined => {
    if (part === "") return [];
    const groups = part.split(":");
    const words: number[] = [];
    for (let index = 0; index < groups.length; index++) {
      const group = groups[index] ?? "";
      if (endsAddress && index === groups.length - 1 && group.includes(".")) {
        const octets = parseIPv4(group);
        if (!octets) return undefined;
        words.push(((octets[0] ?? 0) << 8) | (octets[1] ?? 0), ((octets[2] ?? 0) << 8) | (octets[3] ?? 0));
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return undefined;
      words.push(parseInt(group, 16));
    }
    return words;
  };
  const head = parseGroups(halves[0] ?? "", halves.length === 1);
  const tail = halves.length === 2 ? parseGroups(halves[1] ?? "", true) : [];
  if (!head || !tail) return undefined;
  let words: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    words = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    words = head;
  }
  if (words.length !== 8) return undefined;
  return words.flatMap((word) => [word >> 8, word & 0xff]);
}

/** RFC 5952 text of a 16-byte IPv6 address: lower case, longest zero run shortened to "::". */
export function formatIPv6(bytes: Uint8Array): string {
  const words: number[] = [];
  for (let index = 0; index < 16; index += 2) words.push(((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0));
  let bestStart = -1;
  let bestLength = 0;
  for (let index = 0; index < 8; ) {
    if (words[index] !== 0) {
      index++;
      continue;
    }
    let end = index;
    while (end < 8 && words[end] === 0) end++;
    if (end - index > bestLength && end - index > 1) {
      bestStart = index;
      bestLength = end - index;
    }
    index = end;
  }
  const hex = (list: number[]): string => list.map((word) => word.toString(16)).join(":");
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLength))}`;
}

/** host:port for logs and dialing, with IPv6 in brackets. */
export function formatDestination(destination: Destination): string {
  return destination.type === AddressType.IPv6 ? `[${destination.host}]:${destination.port}` : `${destination.host}:${destination.port}`;
}
