// The HTTP proxy's pure parts (local-agent/front/http-proxy.ts): CONNECT authorities, absolute-form
// targets, Basic proxy credentials, hop-by-hop headers, and the status for each failed open.

import { describe, expect, it } from "vitest";
import {
  HttpProxyError,
  encodeClosingResponse,
  endToEndHeaders,
  httpStatusForFailure,
  parseAuthority,
  parseBasicCredentials,
  parseProxyTarget,
} from "../../local-agent/front/http-proxy.ts";
import { AddressType, StreamStatus } from "../../worker/protocol/index.ts";

describe("parseAuthority", () => {
  it("reads IPv4, bracketed IPv6 (canonical form) and domain names", () => {
    expect(parseAuthority("192.0.2.1:443")).toEqual({ type: AddressType.IPv4, host: "192.0.2.1", port: 443 });
    expect(parseAuthority("[2001:DB8:0:0::1]:8443")).toEqual({ type: AddressType.IPv6, host: "2001:db8::1", port: 8443 });
    expect(parseAuthority("Example.COM.:1")).toEqual({ type: AddressType.Domain, host: "example.com", port: 1 });
    expect(parseAuthority("example.com:65535").port).toBe(65535);
  });

  it("uses the default port only when one is given", () => {
    expect(parseAuthority("example.com", 80).port).toBe(80);
    expect(() => parseAuthority("example.com")).toThrow(HttpProxyError);
  });

  it.each(["example.com:0", "example.com:65536", "example.com:x", "example.com:123456", "[::1", "[::1]x:80", "[not-v6]:80", "::1:80", "exa mple.com:80", "a..b:80", ":80", `${"a".repeat(256)}:80`, "a/b:80"])(
    "refuses %s with 400",
    (text) => {
      let caught: unknown;
      try {
        parseAuthority(text);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(HttpProxyError);
      expect((caught as HttpProxyError).statusCode).toBe(400);
    },
  );
});

describe("parseProxyTarget", () => {
  it("splits an absolute http:// URL into destination, origin-form path and Host", () => {
    expect(parseProxyTarget("http://Example.com:8080/a/b?c=d#frag")).toEqual({
      destination: { type: AddressType.Domain, host: "example.com", port: 8080 },
      path: "/a/b?c=d",
      hostHeader: "Example.com:8080",
    });
    expect(parseProxyTarget("HTTP://[::1]").path).toBe("/");
    expect(parseProxyTarget("http://[::1]").destination).toEqual({ type: AddressType.IPv6, host: "::1", port: 80 });
    expect(parseProxyTarget("http://h?q=1").path).toBe("/?q=1");
  });

  it.each([
    ["https://example.com/", /CONNECT/],
    ["ftp://example.com/", /ftp/],
    ["http://user:pw@example.com/", /credentials/],
    ["http:///path", /host name/],
    ["example.com:80", /absolute/],
    ["*", /absolute/],
  ])("refuses %s with 400", (target, message) => {
    expect(() => parseProxyTarget(target)).toThrow(message);
  });
});

describe("parseBasicCredentials", () => {
  const basic = (text: string) => `Basic ${Buffer.from(text).toString("base64")}`;
  it("decodes name and password; the password may hold colons", () => {
    expect(parseBasicCredentials(basic("alice:s3cret:with:colons"))).toEqual({ name: "alice", password: "s3cret:with:colons" });
    expect(parseBasicCredentials(`basic ${Buffer.from("bob:").toString("base64")}`)).toEqual({ name: "bob", password: "" });
    expect(parseBasicCredentials(basic("émile:mot"))).toEqual({ name: "émile", password: "mot" });
  });
  it("gives undefined for absent, other schemes, or no colon", () => {
    expect(parseBasicCredentials(undefined)).toBeUndefined();
    expect(parseBasicCredentials("Bearer abc")).toBeUndefined();
    expect(parseBasicCredentials(basic("nocolon"))).toBeUndefined();
    expect(parseBasicCredentials("Basic")).toBeUndefined();
  });
});

describe("endToEndHeaders", () => {
  it("drops hop-by-hop headers and those Connection names, keeps the rest", () => {
    const kept = endToEndHeaders({
      host: ["example.com"],
      connection: ["keep-alive, X-Hop", "Upgrade"],
      "keep-alive": ["timeout=5"],
      "proxy-authorization": ["Basic abc"],
      "proxy-connection": ["keep-alive"],
      te: ["trailers"],
      trailer: ["X-T"],
      "transfer-encoding": ["chunked"],
      upgrade: ["websocket"],
      expect: ["100-continue"],
      "x-hop": ["1"],
      "x-kept": ["2"],
      cookie: ["a=1", "b=2"],
      "content-length": ["5"],
    });
    expect(kept).toEqual({ host: ["example.com"], "x-kept": ["2"], cookie: ["a=1", "b=2"], "content-length": ["5"] });
  });
});

describe("httpStatusForFailure", () => {
  it("maps not allowed to 403, timed out to 504, everything else to 502", () => {
    expect(httpStatusForFailure(StreamStatus.NotAllowed)).toBe(403);
    expect(httpStatusForFailure(StreamStatus.Timeout)).toBe(504);
    for (const status of [StreamStatus.GeneralFailure, StreamStatus.NetworkUnreachable, StreamStatus.HostUnreachable, StreamStatus.ConnectionRefused]) {
      expect(httpStatusForFailure(status)).toBe(502);
    }
  });
});

describe("encodeClosingResponse", () => {
  it("is a complete response with a one-line body, Content-Length and Connection: close", () => {
    const text = encodeClosingResponse(407, "who\r\nare you", { "Proxy-Authenticate": 'Basic realm="edgesocks"' }).toString("utf8");
    expect(text).toBe(
      'HTTP/1.1 407 Proxy Authentication Required\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nConnection: close\r\nProxy-Authenticate: Basic realm="edgesocks"\r\n\r\nwho are you\n',
    );
  });
});
