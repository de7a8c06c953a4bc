// Messages of the Worker's upstream-proxy clients: SOCKS5 (RFC 1928) with username/password
// authentication (RFC 1929), and HTTP CONNECT (RFC 9110 section 9.3.6). Pure, bytes in and typed
// values or a typed UpstreamError out, like local-agent/front/socks5.ts, the agent's SOCKS5 server side;
// upstream-handshake.ts does the reading and writing.
//
// Every parser takes the proxy's label ("socks5://host:port") only to name it in its errors; no
// message here carries a credential.

import { AddressType, StreamStatus, encodeAddress, formatDestination, formatIPv6, isPlausibleHostname, type Destination } from "../protocol/index.ts";
import type { UpstreamProxy } from "./upstream-url.ts";
import { AuthMethod, Command, Reply, SOCKS_VERSION } from "../socks5-numbers.ts";

/** A failure of the upstream or reported by it; `status` is the StreamStatus the agent hears; message safe for logs (no credentials). */
export class UpstreamError extends Error {
  readonly status: StreamStatus;
  constructor(status: StreamStatus, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UpstreamError";
    this.status = status;
  }
}

/** A parsed message and how many input bytes it used; or "incomplete" when more bytes are needed. */
export type ParseResult<T> = { value: T; bytesUsed: number } | "incomplete";

// ---- SOCKS5 ---------------------------------------------------------------------------------

export { AuthMethod, Command, Reply, SOCKS_VERSION };

/**
 * The stream status for each failure reply: the one place that mapping lives. 0x06 "TTL expired"
 * is what servers send for a connect() that timed out (microsocks maps ETIMEDOUT to it); 0x07 and
 * 0x08 mean this client asked for something the upstream lacks, which is no fault of the destination.
 */
export const STATUS_FOR_REPLY: Readonly<Record<Exclude<Reply, typeof Reply.Succeeded>, StreamStatus>> = {
  [Reply.GeneralFailure]: StreamStatus.GeneralFailure,
  [Reply.NotAllowedByRuleset]: StreamStatus.NotAllowed,
  [Reply.NetworkUnreachable]: StreamStatus.NetworkUnreachable,
  [Reply.HostUnreachable]: StreamStatus.HostUnreachable,
  [Reply.ConnectionRefused]: StreamStatus.ConnectionRefused,
  [Reply.TtlExpired]: StreamStatus.Timeout,
  [Reply.CommandNotSupported]: StreamStatus.GeneralFailure,
  [Reply.AddressTypeNotSupported]: StreamStatus.GeneralFailure,
};

/** RFC 1928 section 6's words for each failure reply, for reasons. */
const REPLY_TEXT: Readonly<Record<Exclude<Reply, typeof Reply.Succeeded>, string>> = {
  [Reply.GeneralFailure]: "general SOCKS server failure",
  [Reply.NotAllowedByRuleset]: "connection not allowed by ruleset",
  [Reply.NetworkUnreachable]: "network unreachable",
  [Reply.HostUnreachable]: "host unreachable",
  [Reply.ConnectionRefused]: "connection refused",
  [Reply.TtlExpired]: "TTL expired",
  [Reply.CommandNotSupported]: "command not supported",
  [Reply.AddressTypeNotSupported]: "address type not supported",
};

/** Version byte of the username/password subnegotiation (RFC 1929), not the SOCKS version. */
export const USER_PASS_VERSION = 0x01;
/** RFC 1929 section 2: STATUS 0x00 is success, any other value failure. */
export const USER_PASS_SUCCEEDED = 0x00;
/** RFC 1929 section 2: ULEN and PLEN are one byte each, and neither may be zero. */
export const MAX_USER_PASS_FIELD_BYTES = 255;

const utf8 = new TextEncoder();

/** The one method the Worker offers: username/password when it has credentials, else none (RFC 1928 section 3). */
export function offeredMethod(proxy: UpstreamProxy): typeof AuthMethod.NoAuthentication | typeof AuthMethod.UsernamePassword {
  return proxy.username === undefined ? AuthMethod.NoAuthentication : AuthMethod.UsernamePassword;
}

/** The version identifier/method selection message offering exactly `method`. */
export function encodeGreeting(method: AuthMethod): Uint8Array {
  return Uint8Array.of(SOCKS_VERSION, 1, method);
}

/**
 * Parses the METHOD selection message (RFC 1928 section 3). Throws UpstreamError when the
 * upstream is not SOCKS5, accepts none of the methods (0xFF), or chose one that was not offered.
 */
export function parseMethodSelection(input: Uint8Array, offered: AuthMethod, label: string): ParseResult<AuthMethod> {
  if (input.byteLength < 1) return "incomplete";
  if (input[0] !== SOCKS_VERSION) throw notSocks5(label, input[0]);
  if (input.byteLength < 2) return "incomplete";
  const method = input[1] ?? 0;
  if (method === AuthMethod.NoAcceptableMethods) {
    throw new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} accepts none of the offered methods (offered 0x${hex(offered)} ${methodName(offered)})`);
  }
  if (method !== offered) {
    throw new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} chose method 0x${hex(method)}, which was not offered (offered 0x${hex(offered)} ${methodName(offered)})`);
  }
  return { value: offered, bytesUsed: 2 };
}

/** The username/password request (RFC 1929 section 2). Throws RangeError for a field outside 1..255 bytes of UTF-8. */
export function encodeUserPass(username: string, password: string): Uint8Array {
  const name = utf8.encode(username);
  const secret = utf8.encode(password);
  for (const [what, bytes] of [["user name", name], ["password", secret]] as const) {
    if (bytes.byteLength < 1 || bytes.byteLength > MAX_USER_PASS_FIELD_BYTES) {
      throw new RangeError(`RFC 1929 ${what} is ${bytes.byteLength} bytes; 1 to ${MAX_USER_PASS_FIELD_BYTES} allowed`);
    }
  }
  const message = new Uint8Array(3 + name.byteLength + secret.byteLength);
  message[0] = USER_PASS_VERSION;
  message[1] = name.byteLength;
  message.set(name, 2);
  message[2 + name.byteLength] = secret.byteLength;
  message.set(secret, 3 + name.byteLength);
  return message;
}

/**
 * Parses the RFC 1929 status reply. Throws UpstreamError when the upstream refused the
 * credentials, or when the reply is not RFC 1929. The version byte may also be 0x05: some servers
 * answer with the SOCKS version there, and clients (curl among them) accept it.
 */
export function parseUserPassStatus(input: Uint8Array, label: string): ParseResult<null> {
  if (input.byteLength < 1) return "incomplete";
  const version = input[0];
  if (version !== USER_PASS_VERSION && version !== SOCKS_VERSION) {
    throw new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} did not answer as RFC 1929: version byte 0x${hex(version)}, not 0x${hex(USER_PASS_VERSION)}`);
  }
  if (input.byteLength < 2) return "incomplete";
  if (input[1] !== USER_PASS_SUCCEEDED) throw new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} refused the user name or password`);
  return { value: null, bytesUsed: 2 };
}

/** The CONNECT request (RFC 1928 section 4) for `destination`. Throws RangeError for a destination outside the protocol. */
export function encodeConnectRequest(destination: Destination): Uint8Array {
  const address = encodeAddress(destination);
  return Uint8Array.of(SOCKS_VERSION, Command.Connect, 0x00, ...address, destination.port >>> 8, destination.port & 0xff);
}

/** The address and port the upstream bound for the tunnel (BND.ADDR, BND.PORT); servers often send 0.0.0.0:0. */
export type BoundAddress = { type: AddressType; host: string; port: number };

/**
 * Parses the reply to CONNECT (RFC 1928 section 6), whose bound address has a variable length.
 * Throws UpstreamError carrying the mapped status for a failure reply, as soon as its code has
 * arrived; and for a reply that is not SOCKS5 or names an address type RFC 1928 does not define.
 * RSV is not checked: RFC 1928 only names it reserved, and clients (curl among them) ignore it.
 */
export function parseConnectReply(input: Uint8Array, label: string): ParseResult<BoundAddress> {
  if (input.byteLength < 1) return "incomplete";
  if (input[0] !== SOCKS_VERSION) throw notSocks5(label, input[0]);
  if (input.byteLength < 2) return "incomplete";
  const code = input[1] ?? 0;
  if (code !== Reply.Succeeded) throw socksReplyError(label, code);
  const addressAt = 3;
  if (input.byteLength < addressAt + 1) return "incomplete";
  const addressType = input[addressAt] ?? 0;
  let position = addressAt + 1;
  let host: string;
  switch (addressType) {
    case AddressType.IPv4:
      if (input.byteLength < position + 4 + 2) return "incomplete";
      host = Array.from(input.subarray(position, position + 4)).join(".");
      position += 4;
      break;
    case AddressType.IPv6:
      if (input.byteLength < position + 16 + 2) return "incomplete";
      host = formatIPv6(input.subarray(position, position + 16));
      position += 16;
      break;
    case AddressType.Domain: {
      if (input.byteLength < position + 1) return "incomplete";
      const length = input[position] ?? 0;
      if (input.byteLength < position + 1 + length + 2) return "incomplete";
      // Only ever logged: decoded leniently, and a name that is not one is shown as received.
      host = new TextDecoder().decode(input.subarray(position + 1, position + 1 + length));
      position += 1 + length;
      break;
    }
    default:
      throw new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} answered with address type 0x${hex(addressType)}, which RFC 1928 does not define`);
  }
  const port = ((input[position] ?? 0) << 8) | (input[position + 1] ?? 0);
  return { value: { type: addressType, host, port }, bytesUsed: position + 2 };
}

/** The error for a failure reply `code`: its mapped status, and the code with RFC 1928's words for it. */
export function socksReplyError(label: string, code: number): UpstreamError {
  const known = code in STATUS_FOR_REPLY ? (code as keyof typeof STATUS_FOR_REPLY) : undefined;
  const status = known === undefined ? StreamStatus.GeneralFailure : STATUS_FOR_REPLY[known];
  const text = known === undefined ? "not a reply RFC 1928 defines" : REPLY_TEXT[known];
  return new UpstreamError(status, `upstream ${label} answered 0x${hex(code)} (${text})`);
}

function notSocks5(label: string, version: number | undefined): UpstreamError {
  return new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} did not answer as SOCKS5: version byte 0x${hex(version)}, not 0x${hex(SOCKS_VERSION)}`);
}

function methodName(method: AuthMethod): string {
  return method === AuthMethod.UsernamePassword ? "username/password" : "no authentication";
}

// ---- HTTP CONNECT ---------------------------------------------------------------------------

/**
 * Longest response head (status line and header fields) the Worker reads from an HTTP upstream,
 * all 1xx heads before the final one included: a CONNECT answer is a few hundred bytes, so more
 * is not a proxy worth waiting for.
 */
export const MAX_HTTP_HEAD_BYTES = 16 * 1024;
/** Longest reason phrase a message quotes. */
const MAX_REASON_PHRASE_CHARS = 64;
/** Longest piece of a non-HTTP answer a message quotes. */
const MAX_QUOTED_CHARS = 32;
const HTTP_PREFIX = utf8.encode("HTTP/");
const LF = 0x0a;
const CR = 0x0d;

/**
 * The CONNECT request (RFC 9110 section 9.3.6) for `destination`: the authority in the request
 * target and in Host (IPv6 in brackets, RFC 9112 section 3.2.3), and Proxy-Authorization: Basic
 * (RFC 7617) when the proxy has credentials. Throws RangeError for a destination no header could
 * carry safely, so a name with CR or LF never reaches the proxy.
 */
export function encodeHttpConnect(proxy: UpstreamProxy, destination: Destination): Uint8Array {
  encodeAddress(destination); // validates addresses and the port
  if (destination.type === AddressType.Domain && !isPlausibleHostname(destination.host)) {
    throw new RangeError("destination is not a host name an HTTP request target can carry");
  }
  const authority = formatDestination(destination);
  const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`];
  if (proxy.username !== undefined) lines.push(`Proxy-Authorization: Basic ${basicCredentials(proxy.username, proxy.password ?? "")}`);
  return utf8.encode(`${lines.join("\r\n")}\r\n\r\n`);
}

/** RFC 7617 section 2: base64 of user-id ":" password, in UTF-8 (section 2.1's charset). */
function basicCredentials(username: string, password: string): string {
  let binary = "";
  for (const byte of utf8.encode(`${username}:${password}`)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

export type HttpResponseHead = {
  statusCode: number;
  /** Printable ASCII, capped: safe to put in a reason. */
  reasonPhrase: string;
};

/**
 * Parses a response head up to its empty line; bytesUsed ends after it. Only the status line is
 * read: RFC 9110 section 9.3.6 has a client ignore Content-Length and Transfer-Encoding in a 2xx
 * to CONNECT, and a non-2xx ends the handshake. A bare LF ends lines too (RFC 9112 section 2.2).
 * Throws UpstreamError when the answer is not HTTP/1.x, or when the head does not end within
 * MAX_HTTP_HEAD_BYTES counted from the first interim head (`interimBytes` already read).
 */
export function parseHttpResponseHead(input: Uint8Array, label: string, interimBytes = 0): ParseResult<HttpResponseHead> {
  const maxHeadBytes = Math.max(0, MAX_HTTP_HEAD_BYTES - interimBytes);
  // Something else than HTTP shows in its first bytes: say so then, not 16 KiB later.
  const prefixBytes = Math.min(input.byteLength, HTTP_PREFIX.byteLength);
  for (let index = 0; index < prefixBytes; index++) {
    if (input[index] !== HTTP_PREFIX[index]) throw notHttp(label, `its answer starts "${quote(input.subarray(0, MAX_QUOTED_CHARS))}"`);
  }
  const headEnd = findHeadEnd(input, maxHeadBytes);
  if (headEnd === undefined) {
    if (input.byteLength >= maxHeadBytes) {
      const what = interimBytes === 0 ? "a response head" : "response heads (interim 1xx included)";
      throw new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} sent ${what} longer than ${MAX_HTTP_HEAD_BYTES} bytes`);
    }
    return "incomplete";
  }
  const lineEnd = input.indexOf(LF);
  const statusLine = latin1(input.subarray(0, lineEnd)).replace(/\r$/, "");
  // RFC 9112 section 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]; the last SP
  // is often missing when the phrase is.
  const match = /^HTTP\/1\.[0-9] ([0-9]{3})(?: (.*))?$/.exec(statusLine);
  if (!match) throw notHttp(label, `its status line is "${sanitize(statusLine, MAX_QUOTED_CHARS)}"`);
  const reasonPhrase = sanitize(match[2] ?? "", MAX_REASON_PHRASE_CHARS).trim();
  return { value: { statusCode: Number(match[1]), reasonPhrase }, bytesUsed: headEnd };
}

/** What a response head to CONNECT means: the tunnel is open, an interim 1xx to skip, or the failure. */
export function classifyConnectResponse(head: HttpResponseHead, label: string, sentCredentials: boolean): "open" | "interim" | UpstreamError {
  const { statusCode } = head;
  if (statusCode >= 200 && statusCode <= 299) return "open";
  // RFC 9110 section 15.2: a client must parse 1xx responses it did not expect; the final one
  // follows. 101 is no interim answer: it would switch the connection to another protocol.
  if (statusCode >= 100 && statusCode <= 199 && statusCode !== 101) return "interim";
  const answer = head.reasonPhrase === "" ? `${statusCode}` : `${statusCode} ${head.reasonPhrase}`;
  // tinyproxy 1.11 answers a wrong Proxy-Authorization with 401, not 407 (measured with 1.11.1).
  if (statusCode === 407 || statusCode === 401) {
    return new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} ${sentCredentials ? "refused the credentials" : "wants credentials"} (${answer})`);
  }
  const status = statusCode === 403 ? StreamStatus.NotAllowed : statusCode === 504 ? StreamStatus.Timeout : StreamStatus.GeneralFailure;
  return new UpstreamError(status, `upstream ${label} answered ${answer}`);
}

/** The offset just past the empty line that ends a head (CRLF CRLF or bare LFs), searched within maxBytes. */
function findHeadEnd(input: Uint8Array, maxBytes: number): number | undefined {
  const limit = Math.min(input.byteLength, maxBytes);
  for (let index = input.indexOf(LF); index >= 0 && index < limit; index = input.indexOf(LF, index + 1)) {
    if (input[index + 1] === LF && index + 2 <= limit) return index + 2;
    if (input[index + 1] === CR && input[index + 2] === LF && index + 3 <= limit) return index + 3;
  }
  return undefined;
}

function notHttp(label: string, detail: string): UpstreamError {
  return new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} did not answer as an HTTP proxy: ${detail}`);
}

function latin1(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return text;
}

/** Bytes from the upstream as printable ASCII, capped: an answer may hold anything. */
function quote(bytes: Uint8Array): string {
  return sanitize(latin1(bytes.subarray(0, MAX_QUOTED_CHARS)), MAX_QUOTED_CHARS);
}

function sanitize(text: string, maxChars: number): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, maxChars);
}

function hex(byte: number | undefined): string {
  return (byte ?? 0).toString(16).padStart(2, "0");
}
