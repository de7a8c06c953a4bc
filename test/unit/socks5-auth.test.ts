import { describe, expect, it } from "vitest";
import { Socks5Error, encodeUserPassStatus, parseUserPass } from "../../local-agent/socks5.ts";
import { checkCredentials } from "../../local-agent/users.ts";

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
  });

  it("refuses a subnegotiation version other than 1 with no reply", () => {
    expect(() => parseUserPass(Uint8Array.of(0x05, 1, 0x61, 1, 0x62))).toThrow(Socks5Error);
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
    expect(checkCredentials(new Map(), "", "")).toBe(false);
  });
});
