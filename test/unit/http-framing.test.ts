// Request framing (local-agent/front/http-framing.ts, RFC 9112 section 6): the framing of every
// request the proxy forwards, 501 for a transfer coding it does not implement, 400 for framing
// that is invalid or ambiguous.

import { describe, expect, it } from "vitest";
import { parseRequestFraming, type RequestHead } from "../../local-agent/front/http-framing.ts";
import { HttpProxyError } from "../../local-agent/front/http-proxy.ts";

function head(headers: Record<string, string[]>, method = "POST", httpVersion = "1.1"): RequestHead {
  return { method, httpVersion, headers };
}

/** The HttpProxyError parseRequestFraming throws for `input`, or a test failure. */
function refusal(input: RequestHead): HttpProxyError {
  try {
    parseRequestFraming(input);
  } catch (error) {
    if (error instanceof HttpProxyError) return error;
    throw error;
  }
  throw new Error(`accepted ${JSON.stringify(input.headers)}`);
}

describe("parseRequestFraming", () => {
  it("reads no body, a length, and chunked (its name case-insensitive, across field lines, empty list elements ignored)", () => {
    expect(parseRequestFraming(head({}, "GET"))).toEqual({ kind: "none" });
    expect(parseRequestFraming(head({ "content-length": ["42"] }))).toEqual({ kind: "length", bytes: 42 });
    expect(parseRequestFraming(head({ "content-length": ["0"] }, "CONNECT"))).toEqual({ kind: "length", bytes: 0 });
    expect(parseRequestFraming(head({ "transfer-encoding": ["chunked"] }))).toEqual({ kind: "chunked" });
    expect(parseRequestFraming(head({ "transfer-encoding": ["CHUNKED"] }))).toEqual({ kind: "chunked" });
    expect(parseRequestFraming(head({ "transfer-encoding": [", chunked"] }))).toEqual({ kind: "chunked" });
  });

  it("accepts a Content-Length list whose values are all the same (RFC 9112 section 6.3)", () => {
    expect(parseRequestFraming(head({ "content-length": ["5, 5"] }))).toEqual({ kind: "length", bytes: 5 });
    expect(parseRequestFraming(head({ "content-length": ["5", "005"] }))).toEqual({ kind: "length", bytes: 5 });
  });

  it.each([["xchunked"], ["gzip"], ["identity"], ["gzip, chunked"], ["gzip", "chunked"], ["chunked;ext=1"]])("answers 501 naming the coding for Transfer-Encoding %j", (...lines: string[]) => {
    const error = refusal(head({ "transfer-encoding": lines }));
    expect(error.statusCode).toBe(501);
    expect(error.message).toMatch(/^transfer coding "[^"]+" is not implemented: the proxy decodes chunked only/);
  });

  it("names the coding it does not implement", () => {
    expect(refusal(head({ "transfer-encoding": ["xchunked"] })).message).toContain('"xchunked"');
  });

  it.each([
    ["chunked not last", { "transfer-encoding": ["chunked, gzip"] }, /chunked is not the final transfer coding/],
    ["chunked not last, across lines", { "transfer-encoding": ["chunked", "xchunked"] }, /chunked is not the final transfer coding/],
    ["chunked twice", { "transfer-encoding": ["chunked, chunked"] }, /chunked is applied more than once/],
    ["an empty Transfer-Encoding", { "transfer-encoding": [" , "] }, /names no transfer coding/],
    ["both Transfer-Encoding and Content-Length", { "transfer-encoding": ["chunked"], "content-length": ["3"] }, /both Transfer-Encoding and Content-Length/],
    ["both, with an unknown coding (the ambiguity first)", { "transfer-encoding": ["xchunked"], "content-length": ["3"] }, /both Transfer-Encoding and Content-Length/],
    ["conflicting Content-Length lines", { "content-length": ["3", "4"] }, /conflicting Content-Length values 3, 4/],
    ["a conflicting Content-Length list", { "content-length": ["3, 4"] }, /conflicting Content-Length values 3, 4/],
    ["a signed Content-Length", { "content-length": ["+3"] }, /Content-Length "\+3" is not a number of bytes/],
    ["a negative Content-Length", { "content-length": ["-1"] }, /is not a number of bytes/],
    ["a hex Content-Length", { "content-length": ["0x3"] }, /is not a number of bytes/],
    ["an empty Content-Length", { "content-length": [""] }, /is not a number of bytes/],
    ["a Content-Length past 2^53", { "content-length": ["99999999999999999999"] }, /is too large/],
  ])("answers 400 for %s", (_name, headers, message) => {
    const error = refusal(head(headers));
    expect(error.statusCode).toBe(400);
    expect(error.message).toMatch(message);
  });

  it("answers 400 for Transfer-Encoding in an HTTP/1.0 request, even chunked (RFC 9112 section 6.1)", () => {
    for (const coding of ["chunked", "xchunked"]) {
      const error = refusal(head({ "transfer-encoding": [coding] }, "POST", "1.0"));
      expect(error.statusCode).toBe(400);
      expect(error.message).toBe("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 section 6.1)");
    }
    expect(parseRequestFraming(head({ "content-length": ["3"] }, "POST", "1.0"))).toEqual({ kind: "length", bytes: 3 });
  });

  it("answers 400 for a CONNECT that announces content, 501 first for a coding it does not implement", () => {
    expect(refusal(head({ "transfer-encoding": ["chunked"] }, "CONNECT")).statusCode).toBe(400);
    expect(refusal(head({ "content-length": ["5"] }, "CONNECT")).message).toMatch(/a CONNECT request has no content/);
    expect(refusal(head({ "transfer-encoding": ["xchunked"] }, "CONNECT")).statusCode).toBe(501);
  });
});
