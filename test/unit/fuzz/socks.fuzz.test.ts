// Property-based fuzzing of the agent's SOCKS parsers: SOCKS5 (local-agent/front/socks5.ts, RFC 1928),
// its username/password subnegotiation (RFC 1929), SOCKS4 and 4a (local-agent/front/socks4.ts) and the
// SOCKS5 UDP header (local-agent/front/socks5-udp.ts). Random and mutated bytes get a value or the
// module's typed error, however the bytes are split into reads; every valid message parses to
// what it was made from, including messages the Worker's upstream client encodes
// (worker/dial/upstream-codec.ts), so the two halves of SOCKS5 in this repository agree.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  AuthMethod,
  Command,
  MAX_GREETING_BYTES,
  MAX_REQUEST_BYTES,
  MAX_USER_PASS_BYTES,
  REPLY_FOR_STATUS,
  Reply,
  SOCKS_VERSION,
  Socks5Error,
  USER_PASS_VERSION,
  encodeBoundReply,
  encodeMethodSelection,
  encodeReply,
  encodeUserPassStatus,
  parseAddress,
  parseGreeting,
  parseRequest,
  parseUserPass,
  type Request,
} from "../../../local-agent/front/socks5.ts";
import { MAX_SOCKS4_REQUEST_BYTES, SOCKS4_VERSION, Socks4Error, Socks4Reply, parseSocks4Request, type Socks4Request } from "../../../local-agent/front/socks4.ts";
import { UdpHeaderError, encodeUdpDatagram, parseUdpDatagram } from "../../../local-agent/front/socks5-udp.ts";
import { Route, effectiveRules, parseRuleText, routeFor } from "../../../local-agent/config/routing.ts";
import {
  STATUS_FOR_REPLY,
  UpstreamError,
  encodeConnectRequest,
  encodeGreeting,
  encodeUserPass,
  parseConnectReply,
  parseMethodSelection,
  parseUserPassStatus,
} from "../../../worker/dial/upstream-codec.ts";
import { AddressType, encodeAddress, parseIPv4, type Destination } from "../../../worker/protocol/index.ts";
import {
  byte,
  checkEveryPrefix,
  destination,
  feedChunks,
  fuzzIt,
  hostName,
  hostileBytes,
  ipv4Host,
  ipv6Spelling,
  isIpLiteral,
  outcomeOf,
  splitAt,
  utf8Bytes,
  wellFormedText,
} from "./fuzz-support.ts";

const REPLIES: readonly (number | undefined)[] = [...Object.values(Reply), undefined];
const SOCKS4_REPLIES: readonly (number | undefined)[] = [...Object.values(Socks4Reply), undefined];
const LABEL = "socks5://upstream.test:1080";

/**
 * The invariant routing relies on (local-agent/config/routing.ts: a cidr rule "never [matches] a domain
 * name"): an IP literal a client sends as a name reaches it as the address it is, trailing root
 * dot or not; otherwise `block:cidr=...` is bypassed by writing the address as a name.
 */
function expectNoLiteralName(destination: Destination): void {
  if (destination.type !== AddressType.Domain) return;
  expect(isIpLiteral(destination.host.replace(/\.$/, "")), `name "${destination.host}" is an IP literal`).toBe(false);
}

/** ATYP, address and port as RFC 1928 lays them out; port 0 allowed (a UDP ASSOCIATE may name it). */
function addressBytes(destination: Destination): number[] {
  return [...encodeAddress({ ...destination, port: 1 }), destination.port >>> 8, destination.port & 0xff];
}

/** A name carrying an IP literal in some spelling, and the destination it stands for. */
const literalName: fc.Arbitrary<{ name: string; expected: Destination }> = fc.oneof(
  fc.tuple(ipv4Host, fc.boolean(), fc.integer({ min: 0, max: 65535 })).map(([host, rootDot, port]) => ({ name: rootDot ? `${host}.` : host, expected: { type: AddressType.IPv4, host, port } })),
  fc.tuple(ipv6Spelling, fc.boolean(), fc.integer({ min: 0, max: 65535 })).map(([{ canonical, text }, brackets, port]) => ({
    name: brackets ? `[${text}]` : text,
    expected: { type: AddressType.IPv6, host: canonical, port },
  })),
);

// ---- SOCKS5 ---------------------------------------------------------------------------------

const greeting = fc.array(byte, { minLength: 1, maxLength: 255 });
const greetingBytes = greeting.map((methods) => Uint8Array.from([SOCKS_VERSION, methods.length, ...methods]));

const request: fc.Arbitrary<Request> = fc.record({
  command: fc.constantFrom(Command.Connect, Command.Bind, Command.UdpAssociate),
  destination: fc.tuple(destination, fc.boolean()).map(([value, portZero]) => (portZero ? { ...value, port: 0 } : value)),
});
const requestBytes = request.map(({ command, destination }) => Uint8Array.from([SOCKS_VERSION, command, 0x00, ...addressBytes(destination)]));

/** RFC 1929 fields as the agent's users have them: 1..255 bytes of UTF-8 (a BOM or U+FFFD included). */
const credential = fc
  .oneof(wellFormedText(40), fc.constantFrom("\ufeff", "\ufeffalice", "\ufffd", "a\u0000b"), fc.integer({ min: 1, max: 255 }).map((length) => "p".repeat(length)))
  .filter((text) => {
    const length = utf8Bytes(text).byteLength;
    return length >= 1 && length <= 255;
  });
const userPassBytes = fc.tuple(credential, credential).map(([name, password]) => encodeUserPass(name, password));

const socks5ErrorCode = (error: Socks5Error) => error.reply;
/** Bytes after a message: pipelined data that the parser must leave alone. */
const trailing = fc.uint8Array({ maxLength: 16 });
const splitPoints = fc.array(fc.nat(), { maxLength: 6 });

describe("SOCKS5 greeting (fuzz)", () => {
  fuzzIt("gives the same answer however random and mutated greetings are split, and Socks5Error only", hostileBytes(greetingBytes), (input) => {
    const whole = checkEveryPrefix(Socks5Error, parseGreeting, input, socks5ErrorCode);
    if (!whole.ok) expect(REPLIES).toContain(whole.error.reply);
    if (whole.ok && whole.value === "incomplete") expect(input.byteLength).toBeLessThan(MAX_GREETING_BYTES);
  });

  fuzzIt("parses every greeting to its methods, whatever follows it and however it arrives", fc.tuple(greeting, trailing, splitPoints), ([methods, after, points]) => {
    const message = Uint8Array.from([SOCKS_VERSION, methods.length, ...methods]);
    const input = Uint8Array.from([...message, ...after]);
    expect(feedChunks(parseGreeting, splitAt(input, points))).toEqual({ value: { methods }, bytesUsed: message.byteLength });
  });

  fuzzIt("parses the upstream client's greeting to the one method it offers", fc.constantFrom(AuthMethod.NoAuthentication, AuthMethod.UsernamePassword), (method) => {
    expect(parseGreeting(encodeGreeting(method))).toEqual({ value: { methods: [method] }, bytesUsed: 3 });
  });

  fuzzIt("the upstream client reads the agent's method selection as the method chosen", fc.constantFrom(...Object.values(AuthMethod)), (method) => {
    const answer = outcomeOf(UpstreamError, () => parseMethodSelection(encodeMethodSelection(method), method, LABEL));
    expect(answer.ok).toBe(method !== AuthMethod.NoAcceptableMethods);
    if (answer.ok) expect(answer.value).toEqual({ value: method, bytesUsed: 2 });
  });
});

describe("SOCKS5 request (fuzz)", () => {
  fuzzIt("gives the same answer however random and mutated requests are split, and Socks5Error only", hostileBytes(requestBytes), (input) => {
    const whole = checkEveryPrefix(Socks5Error, parseRequest, input, socks5ErrorCode);
    if (!whole.ok) expect(REPLIES).toContain(whole.error.reply);
    if (whole.ok && whole.value === "incomplete") expect(input.byteLength).toBeLessThan(MAX_REQUEST_BYTES);
    if (whole.ok && whole.value !== "incomplete") expectNoLiteralName(whole.value.value.destination);
  });

  fuzzIt("parses every request to its command and destination, whatever follows and however it arrives", fc.tuple(request, trailing, splitPoints), ([value, after, points]) => {
    const message = Uint8Array.from([SOCKS_VERSION, value.command, 0x00, ...addressBytes(value.destination)]);
    const input = Uint8Array.from([...message, ...after]);
    expect(feedChunks(parseRequest, splitAt(input, points))).toEqual({ value, bytesUsed: message.byteLength });
  });

  fuzzIt("parses the upstream client's CONNECT to the destination it names", destination, (value) => {
    const message = encodeConnectRequest(value);
    expect(parseRequest(message)).toEqual({ value: { command: Command.Connect, destination: value }, bytesUsed: message.byteLength });
  });

  fuzzIt("reads an IP literal sent as a name (ATYP 0x03) as the address it is", literalName, ({ name, expected }) => {
    const bytes = utf8Bytes(name);
    const message = Uint8Array.from([SOCKS_VERSION, Command.Connect, 0x00, AddressType.Domain, bytes.byteLength, ...bytes, expected.port >>> 8, expected.port & 0xff]);
    expect(parseRequest(message)).toEqual({ value: { command: Command.Connect, destination: expected }, bytesUsed: message.byteLength });
  });

  fuzzIt(
    "parseAddress reads an address at any offset, or throws Socks5Error",
    fc.tuple(fc.uint8Array({ maxLength: 8 }), hostileBytes(destination.map((value) => Uint8Array.from(addressBytes(value))))),
    ([before, address]) => {
      const input = Uint8Array.from([...before, ...address]);
      checkEveryPrefix(Socks5Error, (bytes) => parseAddress(bytes, before.byteLength), input, socks5ErrorCode);
    },
  );
});

describe("SOCKS5 replies read by the upstream client (fuzz)", () => {
  fuzzIt("encodeBoundReply's address and port read back as the bound address", destination, (bound) => {
    const reply = encodeBoundReply(bound);
    expect(parseConnectReply(reply, LABEL)).toEqual({ value: bound, bytesUsed: reply.byteLength });
  });

  fuzzIt("a failure reply reaches the agent as the reply it was", fc.constantFrom(...Object.values(Reply)), (reply) => {
    const answer = outcomeOf(UpstreamError, () => parseConnectReply(encodeReply(reply), LABEL));
    if (reply === Reply.Succeeded) {
      expect(answer).toEqual({ ok: true, value: { value: { type: AddressType.IPv4, host: "0.0.0.0", port: 0 }, bytesUsed: 10 } });
      return;
    }
    expect(answer.ok).toBe(false);
    if (answer.ok) return;
    expect(answer.error.status).toBe(STATUS_FOR_REPLY[reply]);
    // 0x07 and 0x08 say the upstream lacks a feature; the agent's client hears a general failure.
    const expected = reply === Reply.CommandNotSupported || reply === Reply.AddressTypeNotSupported ? Reply.GeneralFailure : reply;
    expect(REPLY_FOR_STATUS[answer.error.status]).toBe(expected);
  });
});

describe("RFC 1929 username/password (fuzz)", () => {
  fuzzIt("gives the same answer however random and mutated requests are split, and Socks5Error only", hostileBytes(userPassBytes), (input) => {
    const whole = checkEveryPrefix(Socks5Error, parseUserPass, input, socks5ErrorCode);
    if (!whole.ok) expect(whole.error.reply).toBeUndefined();
    if (whole.ok && whole.value === "incomplete") expect(input.byteLength).toBeLessThan(MAX_USER_PASS_BYTES);
  });

  fuzzIt("parses the upstream client's request to the user name and password sent, however it arrives", fc.tuple(credential, credential, trailing, splitPoints), ([name, password, after, points]) => {
    const message = encodeUserPass(name, password);
    const input = Uint8Array.from([...message, ...after]);
    expect(feedChunks(parseUserPass, splitAt(input, points))).toEqual({ value: { name, password }, bytesUsed: message.byteLength });
  });

  fuzzIt("the upstream client reads the status reply as the verdict given", fc.boolean(), (acceptedCredentials) => {
    const answer = outcomeOf(UpstreamError, () => parseUserPassStatus(encodeUserPassStatus(acceptedCredentials), LABEL));
    expect(answer.ok).toBe(acceptedCredentials);
  });

  fuzzIt("refuses anything but version 0x01 before reading further", fc.tuple(byte.filter((version) => version !== USER_PASS_VERSION), fc.uint8Array({ maxLength: 8 })), ([version, rest]) => {
    expect(outcomeOf(Socks5Error, () => parseUserPass(Uint8Array.from([version, ...rest]))).ok).toBe(false);
  });
});

// ---- SOCKS4 and 4a --------------------------------------------------------------------------

/** A USERID: any text without NUL, at most 255 bytes of UTF-8. */
const userId = wellFormedText(30)
  .map((text) => text.replace(/\0/g, ""))
  .filter((text) => utf8Bytes(text).byteLength <= 255);

type Socks4Case = { message: Uint8Array; expected: Socks4Request };

const socks4Case: fc.Arbitrary<Socks4Case> = fc.oneof(
  // SOCKS4: DSTIP is the destination, unless it is 0.0.0.x with x nonzero (that means 4a).
  fc
    .tuple(byte, fc.integer({ min: 0, max: 65535 }), ipv4Host.filter((host) => !/^0\.0\.0\.[1-9]/.test(host)), userId)
    .map(([command, port, host, id]) => ({
      message: Uint8Array.from([SOCKS4_VERSION, command, port >>> 8, port & 0xff, ...(parseIPv4(host) ?? []), ...utf8Bytes(id), 0]),
      expected: { command, destination: { type: AddressType.IPv4, host, port }, userId: id },
    })),
  // SOCKS4a: a name, or an IP literal written as one, after the USERID.
  fc
    .tuple(byte, fc.integer({ min: 1, max: 255 }), userId, fc.oneof(hostName.map((name) => ({ name, type: AddressType.Domain, host: name })), literalName.map(({ name, expected }) => ({ name, type: expected.type, host: expected.host }))), fc.integer({ min: 0, max: 65535 }))
    .map(([command, lastOctet, id, target, port]) => ({
      message: Uint8Array.from([SOCKS4_VERSION, command, port >>> 8, port & 0xff, 0, 0, 0, lastOctet, ...utf8Bytes(id), 0, ...utf8Bytes(target.name), 0]),
      expected: { command, destination: { type: target.type, host: target.host, port } as Destination, userId: id },
    })),
);

describe("SOCKS4 and SOCKS4a request (fuzz)", () => {
  fuzzIt(
    "gives the same answer however random and mutated requests are split, and Socks4Error only",
    hostileBytes(socks4Case.map(({ message }) => message)),
    (input) => {
      const whole = checkEveryPrefix(Socks4Error, parseSocks4Request, input, (error) => error.reply);
      if (!whole.ok) expect(SOCKS4_REPLIES).toContain(whole.error.reply);
      if (whole.ok && whole.value === "incomplete") expect(input.byteLength).toBeLessThanOrEqual(MAX_SOCKS4_REQUEST_BYTES);
      if (whole.ok && whole.value !== "incomplete") expectNoLiteralName(whole.value.value.destination);
    },
  );

  fuzzIt("parses every request to its command, destination and USERID, whatever follows and however it arrives", fc.tuple(socks4Case, trailing, splitPoints), ([{ message, expected }, after, points]) => {
    const input = Uint8Array.from([...message, ...after]);
    expect(feedChunks(parseSocks4Request, splitAt(input, points))).toEqual({ value: expected, bytesUsed: message.byteLength });
  });
});

// ---- SOCKS5 UDP header ----------------------------------------------------------------------

const datagram = fc.record({ destination, payload: fc.uint8Array({ maxLength: 512 }) });

describe("SOCKS5 UDP request header (fuzz)", () => {
  fuzzIt(
    "gives a datagram or UdpHeaderError for random and mutated datagrams",
    hostileBytes(datagram.map(({ destination: to, payload }) => encodeUdpDatagram(to, payload))),
    (input) => {
      const parsed = outcomeOf(UdpHeaderError, () => parseUdpDatagram(input));
      if (!parsed.ok) return;
      expectNoLiteralName(parsed.value.destination);
      // The header and the payload together are the whole datagram, nothing lost or read twice.
      const header = 3 + addressBytes(parsed.value.destination).length;
      expect(parsed.value.payload.byteLength).toBeLessThanOrEqual(input.byteLength - header);
    },
  );

  fuzzIt("parses every encoded datagram to its destination and payload", datagram, ({ destination: to, payload }) => {
    expect(parseUdpDatagram(encodeUdpDatagram(to, payload))).toEqual({ fragment: 0, destination: to, payload });
  });
});

// ---- what the fuzzing found -----------------------------------------------------------------

describe("counterexamples the fuzzing found", () => {
  const blockTen = effectiveRules([parseRuleText("block:cidr=10.0.0.0/8")], "none");
  const name = utf8Bytes("10.0.0.1.");

  it("SOCKS5: a name that is an IPv4 address with a root dot is that address, and a cidr rule matches it", () => {
    const parsed = parseRequest(Uint8Array.from([SOCKS_VERSION, Command.Connect, 0x00, AddressType.Domain, name.byteLength, ...name, 0, 80]));
    expect(parsed).toEqual({ value: { command: Command.Connect, destination: { type: AddressType.IPv4, host: "10.0.0.1", port: 80 } }, bytesUsed: 16 });
    if (parsed !== "incomplete") expect(routeFor(parsed.value.destination, blockTen)).toBe(Route.Block);
  });

  it("SOCKS4a: a name that is an IPv4 address with a root dot is that address, and a cidr rule matches it", () => {
    const parsed = parseSocks4Request(Uint8Array.from([SOCKS4_VERSION, 1, 0, 80, 0, 0, 0, 1, 0, ...name, 0]));
    expect(parsed).toEqual({ value: { command: 1, destination: { type: AddressType.IPv4, host: "10.0.0.1", port: 80 }, userId: "" }, bytesUsed: 19 });
    if (parsed !== "incomplete") expect(routeFor(parsed.value.destination, blockTen)).toBe(Route.Block);
  });

  it("RFC 1929: a user name or password starting with U+FEFF keeps it", () => {
    expect(parseUserPass(encodeUserPass("\ufeffalice", "\ufeff"))).toEqual({ value: { name: "\ufeffalice", password: "\ufeff" }, bytesUsed: 14 });
  });

  it("SOCKS4: a USERID starting with U+FEFF keeps it", () => {
    const id = utf8Bytes("\ufeffid");
    const parsed = parseSocks4Request(Uint8Array.from([SOCKS4_VERSION, 1, 0, 80, 192, 0, 2, 1, ...id, 0]));
    expect(parsed !== "incomplete" && parsed.value.userId).toBe("\ufeffid");
  });
});
