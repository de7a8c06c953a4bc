import { describe, expect, it } from "vitest";
import { MAX_USER_PASS_BYTES, Socks5Error, encodeUserPassStatus, parseUserPass } from "../../local-agent/front/socks5.ts";
import { checkCredentials } from "../../local-agent/config/users.ts";

function request(name: string, password: string): number[] {
  const nameBytes = Buffer.from(name);
  const passwordBytes = Buffer.from(password);
  return [0x01, nameBytes.length, ...nameBytes, passwordBytes.length, ...passwordBytes];
}

describe("parseUserPass (RFC 1929)", () => {
  it("reads a name and password, UTF-8 included", () => {
    const bytes = request("zoë", "pässwörd");
    expect(parseUserPass(Uint8Array.from(bytes))).toEqual({ value: { name: "zoë", password: "pässwörd" }, bytesUsed: bytes.length });
  });

  it("asks for more bytes at every prefix", () => {
    const bytes = request("alice", "secret");
    for (let length = 0; length < bytes.length; length++) expect(parseUserPass(Uint8Array.from(bytes.slice(0, length)))).toBe("incomplete");
  });

  it("reads empty fields as empty strings (they then fail the credential check)", () => {
    expect(parseUserPass(Uint8Array.of(0x01, 0, 0))).toEqual({ value: { name: "", password: "" }, bytesUsed: 3 });
    expect(parseUserPass(Uint8Array.from(request("", "secret")))).toEqual({ value: { name: "", password: "secret" }, bytesUsed: 9 });
    expect(parseUserPass(Uint8Array.from(request("alice", "")))).toEqual({ value: { name: "alice", password: "" }, bytesUsed: 8 });
  });

  it("reads 255-byte fields, the most one length byte can say", () => {
    const bytes = request("n".repeat(255), "p".repeat(255));
    expect(bytes.length).toBe(MAX_USER_PASS_BYTES);
    expect(parseUserPass(Uint8Array.from(bytes))).toEqual({ value: { name: "n".repeat(255), password: "p".repeat(255) }, bytesUsed: MAX_USER_PASS_BYTES });
  });

  it("leaves the SOCKS5 request that follows in the same read for the next step", () => {
    const bytes = request("alice", "secret");
    expect(parseUserPass(Uint8Array.from([...bytes, 0x05, 0x01, 0x00]))).toMatchObject({ bytesUsed: bytes.length });
  });

  it("asks for more bytes at every prefix with UTF-8 and empty fields too", () => {
    for (const bytes of [request("zoë", "pässwörd"), request("", "x"), request("x", "")]) {
      for (let length = 0; length < bytes.length; length++) expect(parseUserPass(Uint8Array.from(bytes.slice(0, length)))).toBe("incomplete");
    }
  });

  it.each([0x00, 0x02, 0x05])("refuses subnegotiation version 0x%s with no reply code, from its first byte", (version) => {
    let caught: unknown;
    try {
      parseUserPass(Uint8Array.of(version));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(Socks5Error);
    expect((caught as Socks5Error).reply).toBeUndefined();
    expect((caught as Socks5Error).message).toMatch(/not an RFC 1929 request: version byte is 0x0\d/);
  });

  it("encodes success as 0x00 and failure as a non-zero status", () => {
    expect(Array.from(encodeUserPassStatus(true))).toEqual([0x01, 0x00]);
    expect(Array.from(encodeUserPassStatus(false))).toEqual([0x01, 0x01]);
  });
});

describe("checkCredentials", () => {
  const users = new Map([
    ["alice", "correct horse"],
    ["bob", "battery staple"],
  ]);

  it("accepts a user's own password only", () => {
    expect(checkCredentials(users, "alice", "correct horse")).toBe(true);
    expect(checkCredentials(users, "bob", "battery staple")).toBe(true);
    expect(checkCredentials(users, "alice", "battery staple")).toBe(false);
    expect(checkCredentials(users, "alice", "correct horse ")).toBe(false);
    expect(checkCredentials(users, "alice", "")).toBe(false);
  });

  it("refuses an unknown user, even one whose password is someone's", () => {
    expect(checkCredentials(users, "mallory", "correct horse")).toBe(false);
    expect(checkCredentials(users, "Alice", "correct horse")).toBe(false);
    expect(checkCredentials(users, "", "")).toBe(false);
  });

  it("refuses everyone when no users are configured", () => {
    expect(checkCredentials(new Map(), "", "")).toBe(false);
    expect(checkCredentials(new Map(), "alice", "correct horse")).toBe(false);
  });

  it("refuses a prefix or an extension of the password", () => {
    expect(checkCredentials(users, "alice", "correct")).toBe(false);
    expect(checkCredentials(users, "alice", "correct horsey")).toBe(false);
  });

  it("compares UTF-8 names and passwords exactly", () => {
    const international = new Map([["zoë", "pässwörd"]]);
    expect(checkCredentials(international, "zoë", "pässwörd")).toBe(true);
    expect(checkCredentials(international, "zoe", "pässwörd")).toBe(false);
    expect(checkCredentials(international, "zoë", "passwörd")).toBe(false);
  });
});
