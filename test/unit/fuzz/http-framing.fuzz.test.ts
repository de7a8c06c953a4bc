// Property-based fuzzing of the request-body framing check (local-agent/front/http-framing.ts, RFC 9112
// section 6), the part of an HTTP request head the agent judges itself once node:http has parsed
// it: any head gets a framing or an HttpProxyError with 400 or 501, never another throw, and the
// framings it lets through are the unambiguous ones.

import fc from "fast-check";
import { describe, expect } from "vitest";
import { parseRequestFraming, type RequestHead } from "../../../local-agent/front/http-framing.ts";
import { HttpProxyError } from "../../../local-agent/front/http-proxy.ts";
import { fuzzIt, hostileText, outcomeOf } from "./fuzz-support.ts";

const method = fc.oneof(fc.constantFrom("GET", "POST", "PUT", "CONNECT", "connect", "HEAD"), fc.string({ maxLength: 8 }));
const httpVersion = fc.oneof(fc.constantFrom("1.1", "1.0", "0.9", "2.0", "1.01"), fc.string({ maxLength: 5 }));
const codingList = fc.array(fc.oneof(fc.constantFrom("chunked", "CHUNKED", "Chunked", "gzip", "xchunked", "identity", " ", ""), fc.string({ maxLength: 6 })), { maxLength: 4 }).map((codings) => codings.join(", "));
const lengthValue = fc.oneof(fc.nat().map(String), fc.constantFrom("00", "1e3", "-1", "0x10", "9007199254740993", "99999999999999999999", " 5 ", "5,5", "5, 6"));
const fieldLines = (value: fc.Arbitrary<string>) => fc.option(fc.array(fc.oneof(value, hostileText(value)), { minLength: 1, maxLength: 3 }));

const head: fc.Arbitrary<RequestHead> = fc
  .record({ method, httpVersion, transferEncoding: fieldLines(codingList), contentLength: fieldLines(lengthValue) })
  .map(({ method: name, httpVersion: version, transferEncoding, contentLength }) => {
    const headers: Record<string, string[]> = {};
    if (transferEncoding !== null) headers["transfer-encoding"] = transferEncoding;
    if (contentLength !== null) headers["content-length"] = contentLength;
    return { method: name, httpVersion: version, headers };
  });

describe("request body framing (fuzz)", () => {
  fuzzIt("gives a framing or HttpProxyError 400 or 501 for any head, and only unambiguous framings", head, (value) => {
    const framing = outcomeOf(HttpProxyError, () => parseRequestFraming(value));
    if (!framing.ok) {
      expect([400, 501]).toContain(framing.error.statusCode);
      return;
    }
    const hasTransferEncoding = value.headers["transfer-encoding"] !== undefined;
    const hasContentLength = value.headers["content-length"] !== undefined;
    // Both at once is the classic smuggling shape: never let through.
    expect(hasTransferEncoding && hasContentLength).toBe(false);
    if (framing.value.kind === "chunked") expect(hasTransferEncoding && value.httpVersion !== "1.0").toBe(true);
    if (framing.value.kind === "length") expect(Number.isSafeInteger(framing.value.bytes) && framing.value.bytes >= 0).toBe(true);
    if (framing.value.kind === "none") expect(hasTransferEncoding || hasContentLength).toBe(false);
  });

  fuzzIt(
    "reads every Content-Length, however often it is repeated, as that number of bytes",
    fc.tuple(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.constantFrom("GET", "POST", "PUT")),
    ([bytes, lines, perLine, name]) => {
      const line = Array.from({ length: perLine }, () => String(bytes)).join(" , ");
      const framing = parseRequestFraming({ method: name, httpVersion: "1.1", headers: { "content-length": Array.from({ length: lines }, () => line) } });
      expect(framing).toEqual({ kind: "length", bytes });
    },
  );

  fuzzIt("reads chunked, in any case and spacing, as the last coding of an HTTP/1.1 request", fc.tuple(fc.constantFrom("chunked", "CHUNKED", "Chunked"), fc.constantFrom("", " ", "\t"), fc.constantFrom("GET", "POST")), ([coding, space, name]) => {
    expect(parseRequestFraming({ method: name, httpVersion: "1.1", headers: { "transfer-encoding": [`${space}${coding}${space}`] } })).toEqual({ kind: "chunked" });
  });
});
