// The wire protocol's numbers: versions, paths, frame types, statuses, close codes and limits.
// Agent and Worker both import them from here (through ./index.ts); nothing re-declares one.

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
/**
 * Path of the token check on the Worker: GET with the bearer token answers 204 when the edge
 * accepts it and opens nothing, so the agent proves its token at start (one Worker request).
 */
export const CHECK_PATH = "/check";
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
   * Auto-tuning (worker/protocol/flow-control.ts): windows grow while the path needs more.
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

/** The frame types version 4 added: a peer of an older version closes the tunnel on them, so they are sent and accepted on v4 tunnels only. */
export function speaksWindowGrowth(version: ProtocolVersion): boolean {
  return version >= 4;
}

