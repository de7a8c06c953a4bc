// Parses EDGESOCKS_UPSTREAM, the upstream proxy the Worker dials through when its own connect()
// cannot reach a destination: socks5://[user:pass@]host:port (RFC 1928, RFC 1929) or
// http://[user:pass@]host:port (HTTP CONNECT, RFC 9110 section 9.3.6).
//
// Pure. Parsed by hand, not with URL: WHATWG URL drops a default port ("http://h:80" has port ""),
// so a missing port could not be told from port 80, and a port is required here.
// The user name and password are secrets: no error message quotes them, nor the whole value.

import { MAX_DOMAIN_BYTES, formatIPv6, isPlausibleHostname, parseIPv4, parseIPv6 } from "../protocol/index.ts";

export type UpstreamScheme = "socks5" | "http";

export type UpstreamProxy = {
  scheme: UpstreamScheme;
  /** DNS name, dotted-quad IPv4, or IPv6 in RFC 5952 form without brackets. */
  host: string;
  port: number;
  /** Set together with `password`; both absent when the upstream takes no credentials. */
  username?: string;
  /** Empty only for http (Basic allows it); socks5 requires 1..255 bytes (RFC 1929). */
  password?: string;
  /** "socks5://host:port" — never the credentials: the only form that may reach a log line or a reason */
  label: string;
};

/** EDGESOCKS_UPSTREAM does not name a usable proxy. The message never contains the user name or password. */
export class UpstreamConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UpstreamConfigError";
  }
}

/** The setting's name, as every message starts with it. */
const SETTING = "EDGESOCKS_UPSTREAM";
/** RFC 1929 section 2: ULEN and PLEN are one byte each, and neither may be zero. */
const MAX_SOCKS_CREDENTIAL_BYTES = 255;
/** The port each scheme's example in a message shows: the usual one for that kind of proxy. */
const EXAMPLE_PORT: Readonly<Record<UpstreamScheme, number>> = { socks5: 1080, http: 8080 };
/** Longest piece of the value (scheme, host, port) a message may echo. */
const MAX_ECHO_CHARS = 64;

const utf8 = new TextEncoder();

/** The upstream proxy `text` names, or an UpstreamConfigError saying what is wrong with it. */
export function parseUpstreamUrl(text: string): UpstreamProxy {
  // A secret pasted through `echo` often carries a trailing newline.
  const value = text.trim();
  if (value === "") throw configError("is empty; expected socks5://[user:pass@]host:port or http://[user:pass@]host:port");
  const schemeMatch = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(value);
  if (!schemeMatch) throw configError("must start with socks5:// or http:// (socks5://[user:pass@]host:port)");
  const schemeText = (schemeMatch[1] ?? "").toLowerCase();
  if (schemeText !== "socks5" && schemeText !== "http") {
    throw configError(`scheme "${echo(schemeText)}" is not supported; use socks5:// or http://`);
  }
  const scheme: UpstreamScheme = schemeText;
  const rest = value.slice(schemeMatch[0].length);

  const authorityEnd = rest.search(/[/?#]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  const tail = authorityEnd < 0 ? "" : rest.slice(authorityEnd);
  if (tail !== "" && tail !== "/") {
    // A raw '/', '?' or '#' in a password ends the authority early; the '@' left behind shows it.
    if (tail.includes("@")) throw configError("has a '/', '?' or '#' before '@': percent-encode them in the user name and password");
    throw configError("must not have a path, query or fragment; only socks5://[user:pass@]host:port");
  }

  // The last '@' ends the userinfo, as in WHATWG URL, so an unencoded '@' in a password still works.
  const at = authority.lastIndexOf("@");
  const credentials = at < 0 ? undefined : parseUserinfo(authority.slice(0, at), scheme);
  const { host, port } = parseHostPort(at < 0 ? authority : authority.slice(at + 1), scheme);
  const label = `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  return credentials ? { scheme, host, port, username: credentials.username, password: credentials.password, label } : { scheme, host, port, label };
}

function parseUserinfo(userinfo: string, scheme: UpstreamScheme): { username: string; password: string } {
  const colon = userinfo.indexOf(":");
  const rawUser = colon < 0 ? userinfo : userinfo.slice(0, colon);
  const rawPassword = colon < 0 ? undefined : userinfo.slice(colon + 1);
  if (rawUser === "") {
    throw configError(rawPassword === undefined ? "has an '@' with no user name before it" : "has a password without a user name");
  }
  const username = percentDecode(rawUser, "user name");
  const password = rawPassword === undefined ? "" : percentDecode(rawPassword, "password");
  if (scheme === "socks5") {
    checkSocksCredential(username, "user name");
    if (password === "") throw configError("socks5 needs a password with the user name (RFC 1929): socks5://user:pass@host:port");
    checkSocksCredential(password, "password");
  } else {
    // RFC 7617 section 2: the user-id cannot contain ':', and neither part may hold control characters.
    if (username.includes(":")) throw configError("user name must not contain ':' (RFC 7617 Basic)");
    if (/[\x00-\x1f\x7f]/.test(username + password)) throw configError("user name and password must not contain control characters (RFC 7617 Basic)");
  }
  return { username, password };
}

function checkSocksCredential(value: string, what: string): void {
  const bytes = utf8.encode(value).byteLength;
  if (bytes > MAX_SOCKS_CREDENTIAL_BYTES) {
    throw configError(`socks5 ${what} is ${bytes} bytes in UTF-8; RFC 1929 allows 1 to ${MAX_SOCKS_CREDENTIAL_BYTES}`);
  }
}

function percentDecode(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw configError(`${what} has a malformed percent-encoding (or one that is not UTF-8)`);
  }
}

function parseHostPort(hostPort: string, scheme: UpstreamScheme): { host: string; port: number } {
  const example = `${scheme}://host:${EXAMPLE_PORT[scheme]}`;
  let hostText: string;
  let portText: string | undefined;
  if (hostPort.startsWith("[")) {
    const close = hostPort.indexOf("]");
    if (close < 0) throw configError("has an IPv6 address with no closing ']'");
    hostText = hostPort.slice(0, close + 1);
    const after = hostPort.slice(close + 1);
    if (after !== "" && !after.startsWith(":")) throw configError(`has "${echo(after)}" after the IPv6 address; expected :port`);
    portText = after === "" ? undefined : after.slice(1);
  } else {
    const colon = hostPort.lastIndexOf(":");
    if (hostPort.indexOf(":") !== colon) throw configError(`IPv6 address must be in brackets (${scheme}://[address]:port)`);
    hostText = colon < 0 ? hostPort : hostPort.slice(0, colon);
    portText = colon < 0 ? undefined : hostPort.slice(colon + 1);
  }
  if (hostText === "" || hostText === "[]") throw configError(`names no host (${example})`);
  if (portText === undefined || portText === "") throw configError(`must name a port (${example})`);
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw configError(`port must be 1 to 65535, not "${echo(portText)}"`);
  }
  return { host: parseHost(hostText), port: Number(portText) };
}

function parseHost(hostText: string): string {
  if (hostText.startsWith("[")) {
    const bytes = parseIPv6(hostText);
    if (!bytes) throw configError(`host ${echo(hostText)} is not an IPv6 address`);
    return formatIPv6(Uint8Array.from(bytes));
  }
  if (parseIPv4(hostText)) return hostText;
  // Digits and dots only is an attempt at an IPv4 address, not a name (WHATWG URL refuses it too).
  if (/^[0-9.]+$/.test(hostText)) throw configError(`host ${echo(hostText)} is not an IPv4 address`);
  if (!isPlausibleHostname(hostText) || utf8.encode(hostText).byteLength > MAX_DOMAIN_BYTES) {
    throw configError(`host "${echo(hostText)}" is not a DNS name, an IPv4 address or an [IPv6] address`);
  }
  return hostText;
}

function configError(problem: string): UpstreamConfigError {
  return new UpstreamConfigError(`${SETTING} ${problem}`);
}

/** A piece of the value fit to quote: printable ASCII, capped. Never called on userinfo. */
function echo(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, "?");
  return printable.length > MAX_ECHO_CHARS ? `${printable.slice(0, MAX_ECHO_CHARS)}...` : printable;
}
