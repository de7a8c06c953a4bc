// Who may read /status, /status.json and /metrics (local-agent/status/status-access.ts): a Host
// header naming the agent itself (so a page that rebinds its name to 127.0.0.1 cannot read it),
// loopback clients only while there are no users, and with users the Basic credentials of one.

import { describe, expect, it } from "vitest";
import { checkStatusAccess, parseHostHeader, type StatusRequest } from "../../local-agent/status/status-access.ts";

const basic = (name: string, password: string) => `Basic ${Buffer.from(`${name}:${password}`).toString("base64")}`;
const noUsers = { listenHost: "127.0.0.1", users: new Map<string, string>() };
const withUsers = { listenHost: "0.0.0.0", users: new Map([["alice", "correct horse battery"]]) };
const loopback: StatusRequest = { host: "127.0.0.1:1080", authorization: undefined, proxyAuthorization: undefined, remoteAddress: "127.0.0.1", localAddress: "127.0.0.1", localPort: 1080 };

describe("checkStatusAccess: the Host header", () => {
  it.each(["127.0.0.1:1080", "localhost:1080", "LOCALHOST:1080", "[::1]:1080"])("serves a loopback client that names the agent as %s", (host) => {
    expect(checkStatusAccess({ ...loopback, host }, noUsers)).toEqual({ allowed: true });
  });

  it("serves the listen host and the address the client reached", () => {
    expect(checkStatusAccess({ ...loopback, host: "127.0.0.5:1080", localAddress: "127.0.0.5" }, noUsers)).toEqual({ allowed: true });
    expect(checkStatusAccess({ ...loopback, host: "[::1]:1080", localAddress: "::1", remoteAddress: "::1" }, { ...noUsers, listenHost: "::1" })).toEqual({ allowed: true });
    expect(checkStatusAccess({ ...loopback, host: "127.0.0.1:1080", remoteAddress: "::ffff:127.0.0.1", localAddress: "::ffff:127.0.0.1" }, { ...noUsers, listenHost: "::" })).toEqual({ allowed: true });
  });

  it.each([
    ["a name rebound to this machine", "evil.example:1080"],
    ["the agent's address with another port", "127.0.0.1:80"],
    ["no port (80), the agent being elsewhere", "127.0.0.1"],
    ["a name ending in the agent's", "127.0.0.1.evil.example:1080"],
    ["a malformed header", "127.0.0.1:1080/x"],
    ["an empty header", ""],
  ])("answers 403 for %s", (_what, host) => {
    const access = checkStatusAccess({ ...loopback, host }, noUsers);
    expect(access).toMatchObject({ allowed: false, statusCode: 403 });
    if (!access.allowed) expect(access.message).toMatch(/not this agent's address|Host header naming the agent/);
  });

  it("answers 403 with no Host header at all", () => {
    expect(checkStatusAccess({ ...loopback, host: undefined }, noUsers)).toMatchObject({ allowed: false, statusCode: 403, message: expect.stringContaining("Host header") });
  });

  it("checks the Host before the credentials: a rebound page with a user's password is still refused", () => {
    const access = checkStatusAccess({ ...loopback, host: "evil.example:1080", authorization: basic("alice", "correct horse battery") }, withUsers);
    expect(access).toMatchObject({ allowed: false, statusCode: 403 });
  });
});

describe("checkStatusAccess: who the client is", () => {
  const lan: StatusRequest = { ...loopback, host: "192.168.1.5:1080", remoteAddress: "192.168.1.7", localAddress: "192.168.1.5" };

  it("answers 403 to a client that is not on this machine while no users are configured", () => {
    expect(checkStatusAccess(lan, { ...noUsers, listenHost: "0.0.0.0" })).toEqual({
      allowed: false,
      statusCode: 403,
      message: "the status is served to this machine only while no users are configured",
      headers: {},
    });
  });

  it("with users, answers 401 asking for Basic credentials when there are none or they are wrong, whoever the client is", () => {
    for (const request of [loopback, lan, { ...lan, authorization: basic("alice", "wrong") }, { ...lan, proxyAuthorization: basic("mallory", "correct horse battery") }]) {
      const access = checkStatusAccess(request, withUsers);
      expect(access).toMatchObject({ allowed: false, statusCode: 401, headers: { "WWW-Authenticate": 'Basic realm="edgesocks status", charset="UTF-8"' } });
      if (!access.allowed) expect(access.message).not.toContain("correct horse");
    }
  });

  it("with users, serves a user's Basic credentials in Authorization or Proxy-Authorization, from anywhere", () => {
    expect(checkStatusAccess({ ...lan, authorization: basic("alice", "correct horse battery") }, withUsers)).toEqual({ allowed: true });
    expect(checkStatusAccess({ ...lan, proxyAuthorization: basic("alice", "correct horse battery") }, withUsers)).toEqual({ allowed: true });
  });
});

describe("parseHostHeader", () => {
  it("reads HOST, HOST:PORT and [IPv6]:PORT, lower-cased, and refuses the rest", () => {
    expect(parseHostHeader("Example.COM:8080")).toEqual({ name: "example.com", port: 8080 });
    expect(parseHostHeader("[::1]")).toEqual({ name: "[::1]", port: undefined });
    expect(parseHostHeader("[::1]:99999")).toBeUndefined();
    expect(parseHostHeader("a b")).toBeUndefined();
    expect(parseHostHeader("user@host:1")).toBeUndefined();
  });
});
