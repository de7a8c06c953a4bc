// The HTTP proxy's pure parts (RFC 9110, RFC 9112): request targets, Basic proxy credentials,
// hop-by-hop headers, and the status each failed open is answered with. No sockets here.

import { AddressType, StreamStatus, formatIPv6, isPlausibleHostname, parseIPv4, parseIPv6, type Destination } from "../../worker/protocol/index.ts";

/** A request the proxy refuses before any route sees it; `statusCode` is the answer. */
export class HttpProxyError extends Error {
  override readonly name = "HttpProxyError";
  readonly statusCode: number;
  constructor(statusCode: number, message: string) {
    super(message);
    this.statusCode = statusCode;
  }
}

/** Longest host name a destination can carry (one length byte on the wire, RFC 1035 limit). */
const MAX_HOST_NAME_BYTES = 255;
const HTTP_DEFAULT_PORT = 80;

/**
 * Parses an authority `host:port` (RFC 9112 section 3.2.3, the CONNECT target): IPv4, [IPv6]
 * or a domain name, port 1..65535. Without `defaultPort` the port is required.
 */
export function parseAuthority(text: string, defaultPort?: number): Destination {
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*))(?::(\d*))?$/.exec(text);
  if (!match) throw new HttpProxyError(400, `"${printable(text)}" is not host:port`);
  const bracketed = match[1];
  const host = (bracketed ?? match[2] ?? "").toLowerCase();
  const portText = match[3];
  let port: number;
  if (portText === undefined || portText === "") {
    if (defaultPort === undefined) throw new HttpProxyError(400, `"${printable(text)}" names no port`);
    port = defaultPort;
  } else {
    port = Number(portText);
    if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) throw new HttpProxyError(400, `port "${printable(portText)}" is outside 1..65535`);
  }
  if (bracketed !== undefined) {
    const bytes = parseIPv6(host);
    if (!bytes) throw new HttpProxyError(400, `"[${printable(host)}]" is not an IPv6 address`);
    return { type: AddressType.IPv6, host: formatIPv6(Uint8Array.from(bytes)), port };
  }
  const name = host.replace(/\.$/, "");
  // The root dot stripped first: "10.0.0.1." as a name would slip past every cidr rule, which
  // matches addresses only (found by test/unit/fuzz).
  if (parseIPv4(name)) return { type: AddressType.IPv4, host: name, port };
  // A dot still at the end was an empty label ("10.0.0.1..", "a.."), not a root dot: refused,
  // or "10.0.0.1.." would become the name "10.0.0.1." (found by test/unit/fuzz).
  if (name === "" || name.endsWith(".") || Buffer.byteLength(name) > MAX_HOST_NAME_BYTES || !isPlausibleHostname(name)) {
    throw new HttpProxyError(400, `"${printable(host)}" is not a host name`);
  }
  return { type: AddressType.Domain, host: name, port };
}

export type ProxyTarget = {
  destination: Destination;
  /** The origin-form target the origin is sent: path and query. */
  path: string;
  /** The URL's authority as written, for the Host header. */
  hostHeader: string;
};

/**
 * Parses an absolute-form request target (RFC 9112 section 3.2.2) the proxy forwards itself:
 * http:// only, since https:// must come as CONNECT so that TLS stays end to end.
 */
export function parseProxyTarget(target: string): ProxyTarget {
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)(?:#.*)?$/.exec(target);
  if (!match) throw new HttpProxyError(400, "the request target is not an absolute http:// URL");
  const scheme = (match[1] ?? "").toLowerCase();
  if (scheme === "https") throw new HttpProxyError(400, "https:// URLs go through CONNECT: configure this proxy for HTTPS too");
  if (scheme !== "http") throw new HttpProxyError(400, `the proxy forwards http:// URLs, not ${printable(scheme)}://`);
  const authority = match[2] ?? "";
  if (authority.includes("@")) throw new HttpProxyError(400, "URLs with credentials in them are not forwarded");
  const rest = match[3] ?? "";
  const path = rest === "" ? "/" : rest.startsWith("?") ? `/${rest}` : rest;
  return { destination: parseAuthority(authority, HTTP_DEFAULT_PORT), path, hostHeader: authority };
}

/** User name and password from a `Proxy-Authorization: Basic ...` value (RFC 7617); undefined when absent or not Basic. */
export function parseBasicCredentials(header: string | undefined): { name: string; password: string } | undefined {
  const match = /^basic[ \t]+([A-Za-z0-9+/=_-]+)[ \t]*$/i.exec(header ?? "");
  if (!match) return undefined;
  const decoded = Buffer.from(match[1] ?? "", "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return { name: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus
 * Proxy-Authorization (meant for this proxy alone) and Expect (the agent answers 100-continue
 * itself). Transfer-Encoding is redone by Node on each side.
 */
const HOP_BY_HOP = new Set([
  "connection",
  "expect",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** The end-to-end headers of a message: every hop-by-hop one removed, and those its Connection header names. */
export function endToEndHeaders(headers: Readonly<Record<string, string[] | undefined>>): Record<string, string[]> {
  const named = new Set(
    (headers.connection ?? [])
      .flatMap((value) => value.split(","))
      .map((token) => token.trim().toLowerCase())
      .filter((token) => token !== ""),
  );
  const kept: Record<string, string[]> = {};
  for (const [name, values] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (values === undefined || HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    kept[lower] = values;
  }
  return kept;
}

/** The HTTP status a failed open is answered with: 403 refused by a rule, 504 timed out, 502 otherwise. */
export function httpStatusForFailure(status: StreamStatus): number {
  if (status === StreamStatus.NotAllowed) return 403;
  if (status === StreamStatus.Timeout) return 504;
  return 502;
}

const REASON_PHRASES: Readonly<Record<number, string>> = {
  400: "Bad Request",
  403: "Forbidden",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** Realm clients show when asking for proxy credentials. */
export const PROXY_REALM = "edgesocks";

/**
 * A complete short response closing the connection, for where no HTTP server object answers
 * (CONNECT replies, unparseable requests): status line, plain-text one-line body.
 */
export function encodeClosingResponse(statusCode: number, message: string, extraHeaders: Readonly<Record<string, string>> = {}): Buffer {
  const body = `${oneLine(message)}\n`;
  const headers = {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": String(Buffer.byteLength(body)),
    Connection: "close",
    ...extraHeaders,
  };
  const head = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("");
  return Buffer.from(`HTTP/1.1 ${statusCode} ${REASON_PHRASES[statusCode] ?? "Error"}\r\n${head}\r\n${body}`, "utf8");
}

/** The message on one printable line, for bodies and log lines. */
export function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ").trim();
}

function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, 64);
}
