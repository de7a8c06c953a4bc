// EDGESOCKS_UPSTREAM parsing (worker/dial/upstream-url.ts): the forms accepted, the exact error
// for each malformed one, and that no error ever quotes a credential.

import { describe, expect, it } from "vitest";
import { UpstreamConfigError, parseUpstreamUrl } from "../../worker/dial/upstream-url.ts";

/** The UpstreamConfigError message `text` is refused with; fails the test if it parses. */
function refusal(text: string): string {
  try {
    parseUpstreamUrl(text);
  } catch (error) {
    expect(error).toBeInstanceOf(UpstreamConfigError);
    expect((error as Error).name).toBe("UpstreamConfigError");
    return (error as Error).message;
  }
  throw new Error(`parseUpstreamUrl accepted ${text}`);
}

describe("parseUpstreamUrl: accepted forms", () => {
  it("parses socks5 with a DNS name and no credentials", () => {
    expect(parseUpstreamUrl("socks5://proxy.example.net:1080")).toEqual({
      scheme: "socks5",
      host: "proxy.example.net",
      port: 1080,
      label: "socks5://proxy.example.net:1080",
    });
  });

  it("parses http with an IPv4 host, credentials, and leaves them out of the label", () => {
    expect(parseUpstreamUrl("http://alice:s3cret@192.0.2.7:8080")).toEqual({
      scheme: "http",
      host: "192.0.2.7",
      port: 8080,
      username: "alice",
      password: "s3cret",
      label: "http://192.0.2.7:8080",
    });
  });

  it("stores IPv6 without brackets, in RFC 5952 form, and brackets it in the label", () => {
    const proxy = parseUpstreamUrl("socks5://[2001:DB8:0:0::1]:1080");
    expect(proxy.host).toBe("2001:db8::1");
    expect(proxy.label).toBe("socks5://[2001:db8::1]:1080");
  });

  it("percent-decodes the user name and password, as UTF-8", () => {
    const proxy = parseUpstreamUrl("socks5://j%C3%BCrgen:p%40ss%3Aw%2Frd@127.0.0.1:1080");
    expect(proxy.username).toBe("jürgen");
    expect(proxy.password).toBe("p@ss:w/rd");
  });

  it("splits user from password at the first ':' and userinfo from host at the last '@'", () => {
    const proxy = parseUpstreamUrl("socks5://alice:pa:ss@word@127.0.0.1:1080");
    expect(proxy.username).toBe("alice");
    expect(proxy.password).toBe("pa:ss@word");
    expect(proxy.host).toBe("127.0.0.1");
  });

  it("accepts a lone trailing '/', surrounding whitespace, and an upper-case scheme", () => {
    expect(parseUpstreamUrl("  SOCKS5://127.0.0.1:1080/\n").label).toBe("socks5://127.0.0.1:1080");
  });

  it("accepts an http user name with an empty password (RFC 7617 allows it)", () => {
    expect(parseUpstreamUrl("http://alice@127.0.0.1:3128")).toMatchObject({ username: "alice", password: "" });
    expect(parseUpstreamUrl("http://alice:@127.0.0.1:3128")).toMatchObject({ username: "alice", password: "" });
  });

  it("accepts socks5 user name and password of exactly 255 bytes", () => {
    const user = "u".repeat(255);
    const password = "é".repeat(127) + "p"; // 255 bytes in UTF-8
    const proxy = parseUpstreamUrl(`socks5://${user}:${encodeURIComponent(password)}@127.0.0.1:1080`);
    expect(proxy.username).toBe(user);
    expect(proxy.password).toBe(password);
  });

  it.each([1, 65535])("accepts port %i", (port) => {
    expect(parseUpstreamUrl(`http://127.0.0.1:${port}`).port).toBe(port);
  });
});

describe("parseUpstreamUrl: refusals", () => {
  it.each([
    ["", "EDGESOCKS_UPSTREAM is empty; expected socks5://[user:pass@]host:port or http://[user:pass@]host:port"],
    ["  \n", "EDGESOCKS_UPSTREAM is empty; expected socks5://[user:pass@]host:port or http://[user:pass@]host:port"],
    ["127.0.0.1:1080", "EDGESOCKS_UPSTREAM must start with socks5:// or http:// (socks5://[user:pass@]host:port)"],
    ["socks5:127.0.0.1:1080", "EDGESOCKS_UPSTREAM must start with socks5:// or http:// (socks5://[user:pass@]host:port)"],
    ["https://proxy.example:443", 'EDGESOCKS_UPSTREAM scheme "https" is not supported; use socks5:// or http://'],
    ["socks4://proxy.example:1080", 'EDGESOCKS_UPSTREAM scheme "socks4" is not supported; use socks5:// or http://'],
    ["socks5://127.0.0.1", "EDGESOCKS_UPSTREAM must name a port (socks5://host:1080)"],
    ["socks5://127.0.0.1:", "EDGESOCKS_UPSTREAM must name a port (socks5://host:1080)"],
    ["http://proxy.example", "EDGESOCKS_UPSTREAM must name a port (http://host:8080)"],
    ["socks5://[::1]", "EDGESOCKS_UPSTREAM must name a port (socks5://host:1080)"],
    ["socks5://127.0.0.1:0", 'EDGESOCKS_UPSTREAM port must be 1 to 65535, not "0"'],
    ["socks5://127.0.0.1:65536", 'EDGESOCKS_UPSTREAM port must be 1 to 65535, not "65536"'],
    ["socks5://127.0.0.1:10x0", 'EDGESOCKS_UPSTREAM port must be 1 to 65535, not "10x0"'],
    ["socks5://127.0.0.1:-1", 'EDGESOCKS_UPSTREAM port must be 1 to 65535, not "-1"'],
    ["socks5://:1080", "EDGESOCKS_UPSTREAM names no host (socks5://host:1080)"],
    ["socks5://[]:1080", "EDGESOCKS_UPSTREAM names no host (socks5://host:1080)"],
    ["socks5://[::1:1080", "EDGESOCKS_UPSTREAM has an IPv6 address with no closing ']'"],
    ["socks5://[::1]1080", 'EDGESOCKS_UPSTREAM has "1080" after the IPv6 address; expected :port'],
    ["socks5://[fe80::1%25eth0]:1080", "EDGESOCKS_UPSTREAM host [fe80::1%25eth0] is not an IPv6 address"],
    ["socks5://[1.2.3.4]:1080", "EDGESOCKS_UPSTREAM host [1.2.3.4] is not an IPv6 address"],
    ["socks5://::1:1080", "EDGESOCKS_UPSTREAM IPv6 address must be in brackets (socks5://[address]:port)"],
    ["socks5://300.1.1.1:1080", "EDGESOCKS_UPSTREAM host 300.1.1.1 is not an IPv4 address"],
    ["socks5://01.2.3.4:1080", "EDGESOCKS_UPSTREAM host 01.2.3.4 is not an IPv4 address"],
    ["socks5://bad_host!:1080", 'EDGESOCKS_UPSTREAM host "bad_host!" is not a DNS name, an IPv4 address or an [IPv6] address'],
    ["socks5://a..b:1080", 'EDGESOCKS_UPSTREAM host "a..b" is not a DNS name, an IPv4 address or an [IPv6] address'],
    ["socks5://bücher.example:1080", 'EDGESOCKS_UPSTREAM host "b?cher.example" is not a DNS name, an IPv4 address or an [IPv6] address'],
    ["socks5://127.0.0.1:1080/path", "EDGESOCKS_UPSTREAM must not have a path, query or fragment; only socks5://[user:pass@]host:port"],
    ["socks5://127.0.0.1:1080?x=1", "EDGESOCKS_UPSTREAM must not have a path, query or fragment; only socks5://[user:pass@]host:port"],
    ["socks5://127.0.0.1:1080#frag", "EDGESOCKS_UPSTREAM must not have a path, query or fragment; only socks5://[user:pass@]host:port"],
    ["socks5://127.0.0.1:1080//", "EDGESOCKS_UPSTREAM must not have a path, query or fragment; only socks5://[user:pass@]host:port"],
    ["socks5://@127.0.0.1:1080", "EDGESOCKS_UPSTREAM has an '@' with no user name before it"],
    ["socks5://:secret@127.0.0.1:1080", "EDGESOCKS_UPSTREAM has a password without a user name"],
    ["http://:secret@127.0.0.1:8080", "EDGESOCKS_UPSTREAM has a password without a user name"],
    ["socks5://alice@127.0.0.1:1080", "EDGESOCKS_UPSTREAM socks5 needs a password with the user name (RFC 1929): socks5://user:pass@host:port"],
    ["socks5://alice:@127.0.0.1:1080", "EDGESOCKS_UPSTREAM socks5 needs a password with the user name (RFC 1929): socks5://user:pass@host:port"],
    ["http://a%3Ab:pw@127.0.0.1:8080", "EDGESOCKS_UPSTREAM user name must not contain ':' (RFC 7617 Basic)"],
    ["http://alice:p%0Aw@127.0.0.1:8080", "EDGESOCKS_UPSTREAM user name and password must not contain control characters (RFC 7617 Basic)"],
  ])("refuses %j", (text, message) => {
    expect(refusal(text)).toBe(message);
  });

  it("says a password must be percent-encoded when a raw '/' cut the authority short", () => {
    expect(refusal("socks5://alice:pa/ss@127.0.0.1:1080")).toBe(
      "EDGESOCKS_UPSTREAM has a '/', '?' or '#' before '@': percent-encode them in the user name and password",
    );
  });

  it("refuses a socks5 user name or password over 255 bytes of UTF-8, counting bytes not characters", () => {
    expect(refusal(`socks5://${"u".repeat(256)}:pw@127.0.0.1:1080`)).toBe("EDGESOCKS_UPSTREAM socks5 user name is 256 bytes in UTF-8; RFC 1929 allows 1 to 255");
    expect(refusal(`socks5://alice:${encodeURIComponent("é".repeat(128))}@127.0.0.1:1080`)).toBe(
      "EDGESOCKS_UPSTREAM socks5 password is 256 bytes in UTF-8; RFC 1929 allows 1 to 255",
    );
  });

  it("refuses a malformed or non-UTF-8 percent-encoding without quoting it", () => {
    expect(refusal("socks5://alice:se%ZZcret@127.0.0.1:1080")).toBe("EDGESOCKS_UPSTREAM password has a malformed percent-encoding (or one that is not UTF-8)");
    expect(refusal("socks5://al%FFice:secret@127.0.0.1:1080")).toBe("EDGESOCKS_UPSTREAM user name has a malformed percent-encoding (or one that is not UTF-8)");
  });

  it("never puts the user name or password in a message, whatever else is wrong", () => {
    const user = "usernameSECRET";
    const password = "passwordSECRET";
    for (const rest of ["127.0.0.1", "127.0.0.1:0", "[::1", "300.1.1.1:1", "h:1/x", "bad!:1", "::1:1080", "[::1]x"]) {
      for (const scheme of ["socks5", "http", "ftp"]) {
        const message = refusal(`${scheme}://${user}:${password}@${rest}`);
        expect(message).not.toContain("SECRET");
        expect(message).toMatch(/^EDGESOCKS_UPSTREAM /);
        expect(message).not.toContain("\n");
      }
    }
    expect(refusal(`socks5://${user}:${password}/x@127.0.0.1:1080`)).not.toContain("SECRET");
  });
});
