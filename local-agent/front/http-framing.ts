// How a proxied request's body is framed (RFC 9112 section 6), and the requests whose framing
// the agent refuses before any route sees them: 501 for a transfer coding it does not implement,
// 400 where the framing is invalid or ambiguous (the shapes request smuggling is made of). Pure:
// header values in, a framing or an HttpProxyError out; node:http's llhttp has already refused
// most malformed heads by the time this runs, and this names the rest.

import { HttpProxyError } from "./http-proxy.ts";

/** How the request's body ends: no body, after `bytes`, or at chunked's last chunk. */
export type RequestFraming = { kind: "none" } | { kind: "length"; bytes: number } | { kind: "chunked" };

export type RequestHead = {
  method: string;
  /** As node:http gives it: "1.1", "1.0". */
  httpVersion: string;
  /** Values by lower-case name, one entry per field line (node:http's `headersDistinct`). */
  headers: Readonly<Record<string, readonly string[] | undefined>>;
};

/** The one transfer coding the agent decodes (node:http does); its name is case-insensitive (RFC 9112 section 7). */
const CHUNKED = "chunked";

const NOT_IMPLEMENTED = 501;
const BAD_REQUEST = 400;

/**
 * The framing of a request the agent may forward, or an HttpProxyError: 501 for a transfer
 * coding other than chunked, 400 for framing that is invalid or ambiguous. Either way the
 * connection must be closed after the answer: where this body ends cannot be known.
 */
export function parseRequestFraming(head: RequestHead): RequestFraming {
  const transferEncoding = head.headers["transfer-encoding"];
  const contentLength = head.headers["content-length"];
  const isConnect = head.method.toUpperCase() === "CONNECT";
  if (transferEncoding !== undefined) {
    // Section 6.3: "ought to be handled as an error"; a sender MUST NOT send both (section 6.2).
    if (contentLength !== undefined) throw new HttpProxyError(BAD_REQUEST, "both Transfer-Encoding and Content-Length: the body's length is ambiguous (RFC 9112 section 6.3)");
    // Section 6.1: an HTTP/1.0 message with Transfer-Encoding MUST be treated as faulty framing.
    if (isHttp10OrOlder(head.httpVersion)) throw new HttpProxyError(BAD_REQUEST, `Transfer-Encoding in an HTTP/${head.httpVersion} request (RFC 9112 section 6.1)`);
    const codings = listElements(transferEncoding).map((coding) => coding.toLowerCase());
    if (codings.length === 0) throw new HttpProxyError(BAD_REQUEST, "Transfer-Encoding names no transfer coding (RFC 9112 section 6.1)");
    const chunkedCount = codings.filter((coding) => coding === CHUNKED).length;
    if (chunkedCount > 1) throw new HttpProxyError(BAD_REQUEST, "chunked is applied more than once (RFC 9112 section 7)");
    // Section 6.3: in a request, chunked not last leaves the body's length unknowable: MUST be 400.
    if (chunkedCount === 1 && codings.at(-1) !== CHUNKED) throw new HttpProxyError(BAD_REQUEST, "chunked is not the final transfer coding (RFC 9112 section 6.3)");
    // Section 6.1: a coding the server does not understand SHOULD get 501. The agent passes
    // bodies on and would have to decode (and re-encode) any coding but chunked to do so.
    const unknown = codings.find((coding) => coding !== CHUNKED);
    if (unknown !== undefined) {
      throw new HttpProxyError(NOT_IMPLEMENTED, `transfer coding "${printable(unknown)}" is not implemented: the proxy decodes chunked only (RFC 9112 section 6.1)`);
    }
    if (isConnect) throw new HttpProxyError(BAD_REQUEST, "a CONNECT request has no content, so no Transfer-Encoding (RFC 9110 section 9.3.6)");
    return { kind: CHUNKED };
  }
  if (contentLength !== undefined) {
    const values = listElements(contentLength);
    const invalid = values.find((value) => !/^\d+$/.test(value));
    if (values.length === 0 || invalid !== undefined) {
      throw new HttpProxyError(BAD_REQUEST, `Content-Length "${printable(invalid ?? "")}" is not a number of bytes (RFC 9112 section 6.3)`);
    }
    // Section 6.3: a list is accepted only when every value in it is the same.
    const distinct = new Set(values.map((value) => BigInt(value)));
    if (distinct.size > 1) throw new HttpProxyError(BAD_REQUEST, `conflicting Content-Length values ${[...distinct].join(", ")} (RFC 9112 section 6.3)`);
    const bytes = Number(values[0]);
    if (!Number.isSafeInteger(bytes)) throw new HttpProxyError(BAD_REQUEST, `Content-Length ${printable(values[0] ?? "")} is too large (RFC 9112 section 6.3)`);
    if (isConnect && bytes > 0) throw new HttpProxyError(BAD_REQUEST, "a CONNECT request has no content, so no Content-Length but 0 (RFC 9110 section 9.3.6)");
    return { kind: "length", bytes };
  }
  return { kind: "none" };
}

/** The elements of a list-valued field across its lines, empty ones dropped (RFC 9110 section 5.6.1). */
function listElements(lines: readonly string[]): string[] {
  return lines
    .flatMap((line) => line.split(","))
    .map((element) => element.trim())
    .filter((element) => element !== "");
}

function isHttp10OrOlder(httpVersion: string): boolean {
  const [major = 0, minor = 0] = httpVersion.split(".").map(Number);
  return major < 1 || (major === 1 && minor < 1);
}

function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, 64);
}
