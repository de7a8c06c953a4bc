// Property-based fuzzing of the Worker's dial codecs (worker/dial/): DNS answers (dns-wire.ts),
// the upstream proxy's answers (upstream-codec.ts), EDGESOCKS_UPSTREAM (upstream-url.ts), address
// blocks (cidr.ts), NAT64 prefixes (nat64.ts) and relay lists (relay.ts). Random, mutated and
// crafted input gets a value or the module's typed error, in bounded time; every valid input
// parses to what it encodes; an incremental parser answers the same however its bytes arrive.

import fc from "fast-check";
import { describe, expect } from "vitest";
import { CidrError, cidrContains, ipToBytes, parseCidr, parseCidrList } from "../../../worker/dial/cidr.ts";
import { DnsWireError, RecordType, encodeAddressQuery, parseAddressAnswer } from "../../../worker/dial/dns-wire.ts";
import { Nat64Error, parseNat64Prefix, synthesizeNat64 } from "../../../worker/dial/nat64.ts";
import { RelayConfigError, parseRelayList } from "../../../worker/dial/relay.ts";
import {
  AuthMethod,
  MAX_HTTP_HEAD_BYTES,
  SOCKS_VERSION,
  UpstreamError,
  classifyConnectResponse,
  parseConnectReply,
  parseHttpResponseHead,
  parseMethodSelection,
  parseUserPassStatus,
  type AuthMethod as AuthMethodValue,
} from "../../../worker/dial/upstream-codec.ts";
import { UpstreamConfigError, parseUpstreamUrl } from "../../../worker/dial/upstream-url.ts";
import { AddressType, StreamStatus, formatIPv6, parseIPv6 } from "../../../worker/protocol/index.ts";
import {
  accepted,
  byte,
  checkEveryPrefix,
  destination,
  feedChunks,
  fuzzIt,
  hostName,
  hostileBytes,
  hostileText,
  ipv4Host,
  ipv6Spelling,
  ipv6Words,
  mutatedBytes,
  mutatedText,
  outcomeOf,
  port,
  splitAt,
  utf8Bytes,
  wellFormedText,
  wordsToBytes,
} from "./fuzz-support.ts";

const LABEL = "socks5://upstream.test:1080";
const STATUSES: readonly number[] = Object.values(StreamStatus);
const upstreamStatus = (error: UpstreamError) => error.status;

// ---- DNS answers ----------------------------------------------------------------------------

/** A name the edge queries: 1..4 labels of letters, digits, "-" and "_", 1..20 characters each. */
const dnsLabel = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_-]{0,19}$/);
const dnsName = fc.array(dnsLabel, { minLength: 1, maxLength: 4 }).map((labels) => labels.join("."));
const ttl = fc.oneof(fc.integer({ min: 0, max: 86_400 }), fc.constant(0x7fffffff), fc.integer({ min: 0x80000000, max: 0xffffffff }));

type AnswerCase = {
  id: number;
  rcode: number;
  type: typeof RecordType.A | typeof RecordType.AAAA;
  questionName: string;
  /** TTLs of the CNAME hops from the question's name to the owner of the addresses. */
  chainTtls: number[];
  addresses: { bytes: number[]; ttl: number }[];
  /** Records that must not count: other types for the owner, addresses of another name. */
  noise: { owner: "final" | "other"; type: number; data: number[] }[];
  soa: { ttl: number; minimum: number } | null;
  compress: boolean;
  /** Whether the chain comes after the addresses, its last hop first. */
  reversed: boolean;
};

const answerCase: fc.Arbitrary<AnswerCase> = fc
  .record({
    id: fc.integer({ min: 0, max: 0xffff }),
    rcode: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 3) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) }),
    type: fc.constantFrom(RecordType.A, RecordType.AAAA),
    questionName: dnsName,
    chainTtls: fc.array(ttl, { maxLength: 4 }),
    addressCount: fc.integer({ min: 0, max: 5 }),
    addressSeed: fc.array(byte, { minLength: 80, maxLength: 80 }),
    addressTtls: fc.array(ttl, { minLength: 5, maxLength: 5 }),
    noise: fc.array(fc.record({ owner: fc.constantFrom("final" as const, "other" as const), type: fc.constantFrom(16, 15, RecordType.A, RecordType.AAAA), data: fc.array(byte, { maxLength: 16 }) }), { maxLength: 3 }),
    soa: fc.option(fc.record({ ttl, minimum: ttl })),
    compress: fc.boolean(),
    reversed: fc.boolean(),
  })
  .map(({ addressCount, addressSeed, addressTtls, ...rest }) => {
    const size = rest.type === RecordType.A ? 4 : 16;
    const addresses = Array.from({ length: addressCount }, (_, index) => ({ bytes: addressSeed.slice(index * size, index * size + size), ttl: addressTtls[index] ?? 0 }));
    // Noise address records of the asked type have the right size (else the message is refused, rightly).
    const noise = rest.noise.map((record) => (record.type === RecordType.A || record.type === RecordType.AAAA ? { ...record, data: record.data.concat(new Array(16).fill(7)).slice(0, record.type === RecordType.A ? 4 : 16) } : record));
    return { ...rest, addresses, noise };
  })
  // A noise address record of the asked type for the final owner would be one more address.
  .map((value) => ({ ...value, noise: value.noise.filter((record) => !(record.owner === "final" && record.type === value.type)) }));

const u16 = (value: number): number[] => [(value >> 8) & 0xff, value & 0xff];
const u32 = (value: number): number[] => [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
const readTtl = (value: number): number => (value > 0x7fffffff ? 0 : value);

/** The response a resolver would send for `value`, written independently of dns-wire.ts. */
function encodeAnswer(value: AnswerCase): Uint8Array {
  const bytes: number[] = [...u16(value.id), ...u16(0x8180 | value.rcode), ...u16(1), ...u16(0), ...u16(value.soa ? 1 : 0), ...u16(0)];
  const written = new Map<string, number>();
  const name = (text: string): number[] => {
    const key = text.toLowerCase();
    const at = written.get(key);
    if (value.compress && at !== undefined) return [0xc0 | (at >> 8), at & 0xff];
    written.set(key, bytes.length);
    return [...text.split(".").flatMap((part) => [part.length, ...Array.from(part, (char) => char.charCodeAt(0))]), 0];
  };
  const push = (...parts: number[][]) => {
    for (const part of parts) bytes.push(...part);
  };
  push(name(value.questionName), u16(value.type), u16(1));
  // Chain names: the question's name, then c1.<question name>, c2..., each a distinct name.
  const names = [value.questionName, ...value.chainTtls.map((_, index) => `c${index + 1}-${value.questionName}`)];
  const chainRecords: (() => void)[] = [];
  const otherRecords: (() => void)[] = [];
  value.chainTtls.forEach((hopTtl, index) => {
    chainRecords.push(() => {
      push(name(names[index] ?? ""), u16(RecordType.CNAME), u16(1), u32(hopTtl));
      const lengthAt = bytes.length;
      push([0, 0]);
      push(name(names[index + 1] ?? ""));
      bytes.splice(lengthAt, 2, ...u16(bytes.length - lengthAt - 2));
    });
  });
  const finalName = names[names.length - 1] ?? value.questionName;
  for (const address of value.addresses) otherRecords.push(() => push(name(finalName), u16(value.type), u16(1), u32(address.ttl), u16(address.bytes.length), address.bytes));
  for (const record of value.noise) {
    otherRecords.push(() => push(name(record.owner === "final" ? finalName : `other-${value.questionName}`), u16(record.type), u16(1), u32(60), u16(record.data.length), record.data));
  }
  // Reversed: the addresses first, then the chain from its end (addresses keep their order: it is the answer's).
  const records = value.reversed ? [...otherRecords, ...chainRecords.reverse()] : [...chainRecords, ...otherRecords];
  for (const write of records) write();
  bytes.splice(6, 2, ...u16(records.length));
  if (value.soa) {
    const zone = value.questionName.split(".").slice(-1)[0] ?? "test";
    push(name(zone), u16(RecordType.SOA), u16(1), u32(value.soa.ttl));
    const lengthAt = bytes.length;
    push([0, 0], name(`ns.${zone}`), name(`hostmaster.${zone}`), u32(1), u32(7200), u32(3600), u32(1_209_600), u32(value.soa.minimum));
    bytes.splice(lengthAt, 2, ...u16(bytes.length - lengthAt - 2));
  }
  return Uint8Array.from(bytes);
}

/** What parseAddressAnswer must read from `value`'s response. */
function expectedAnswer(value: AnswerCase) {
  const addresses = value.addresses.map(({ bytes }) => (bytes.length === 4 ? bytes.join(".") : formatIPv6(Uint8Array.from(bytes))));
  const chain = value.chainTtls.map(readTtl);
  let ttlSeconds: number | undefined;
  if (value.rcode === 0 && addresses.length > 0) ttlSeconds = Math.min(...chain, ...value.addresses.map(({ ttl: addressTtl }) => readTtl(addressTtl)));
  else if ((value.rcode === 0 || value.rcode === 3) && value.soa) ttlSeconds = Math.min(readTtl(value.soa.ttl), readTtl(value.soa.minimum), ...chain);
  return { id: value.id, rcode: value.rcode, addresses, ttlSeconds };
}

/** Crafted worst cases: huge counts, and names that are long chains of backward pointers. */
const pointerHeavy = fc.tuple(fc.integer({ min: 1, max: 0xffff }), fc.integer({ min: 100, max: 5_400 }), fc.boolean()).map(([count, records, selfLoop]) => {
  const bytes: number[] = [0, 0, 0x81, 0x80, 0, 0, ...u16(count), 0, 0, 0, 0, 1, 0x61, 0];
  for (let index = 0; index < records; index++) {
    const here = bytes.length;
    // Each record's name points to the previous one's (or to itself, a loop), then its fixed part.
    bytes.push(0xc0 | (((selfLoop ? here : here - 12) >> 8) & 0x3f), (selfLoop ? here : here - 12) & 0xff, 0, 5, 0, 1, 0, 0, 0, 60, 0, 0);
  }
  return Uint8Array.from(bytes);
});

describe("DNS answers (fuzz)", () => {
  fuzzIt(
    "gives an answer or DnsWireError for random, mutated and crafted messages, in bounded time",
    fc.tuple(fc.oneof({ weight: 8, arbitrary: hostileBytes(answerCase.map(encodeAnswer)) }, { weight: 1, arbitrary: pointerHeavy }, { weight: 1, arbitrary: mutatedBytes(pointerHeavy) }), fc.oneof({ weight: 9, arbitrary: fc.constantFrom(RecordType.A, RecordType.AAAA) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 300 }) })),
    ([message, type]) => {
      const parsed = outcomeOf(DnsWireError, () => parseAddressAnswer(message, type as typeof RecordType.A));
      if (!parsed.ok) return;
      for (const address of parsed.value.addresses) expect(address.includes(":") ? parseIPv6(address) : address.split(".")).toHaveLength(type === RecordType.AAAA ? 16 : 4);
      if (parsed.value.ttlSeconds !== undefined) expect(parsed.value.ttlSeconds >= 0 && parsed.value.ttlSeconds <= 0x7fffffff).toBe(true);
    },
  );

  fuzzIt("reads every answer (CNAME chains, compression, noise, SOA) as the resolver wrote it", answerCase, (value) => {
    expect(parseAddressAnswer(encodeAnswer(value), value.type)).toEqual(expectedAnswer(value));
  });

  fuzzIt("reads its own query, flagged as a response, as an empty answer with the query's id", fc.tuple(dnsName, fc.boolean(), fc.constantFrom(RecordType.A, RecordType.AAAA), fc.integer({ min: 0, max: 0xffff })), ([name, rootDot, type, id]) => {
    const query = encodeAddressQuery(rootDot ? `${name}.` : name, type, id);
    const response = Uint8Array.from(query);
    response[2] = (response[2] ?? 0) | 0x80;
    expect(parseAddressAnswer(response, type)).toEqual({ id, rcode: 0, addresses: [], ttlSeconds: undefined });
    expect(outcomeOf(DnsWireError, () => parseAddressAnswer(response, type === RecordType.A ? RecordType.AAAA : RecordType.A)).ok).toBe(false);
  });

  fuzzIt("encodes a query or throws DnsWireError for random and mutated names", fc.tuple(hostileText(dnsName), fc.integer({ min: -1, max: 0x10000 })), ([name, id]) => {
    const query = outcomeOf(DnsWireError, () => encodeAddressQuery(name, RecordType.A, id));
    if (!query.ok) return;
    // The labels on the wire are the name's, nothing added or lost.
    const labels: string[] = [];
    for (let offset = 12; query.value[offset] !== 0; offset += (query.value[offset] ?? 0) + 1) {
      labels.push(String.fromCharCode(...query.value.subarray(offset + 1, offset + 1 + (query.value[offset] ?? 0))));
    }
    expect(labels.join(".")).toBe(name.replace(/\.$/, ""));
  });
});

// ---- upstream proxy answers -----------------------------------------------------------------

const methodSelection = fc.constantFrom(AuthMethod.NoAuthentication, AuthMethod.UsernamePassword);
const connectReply = fc.tuple(destination, fc.integer({ min: 0, max: 8 }), byte).map(([bound, code, reserved]) => {
  const address = bound.type === AddressType.IPv4 ? [1, ...bound.host.split(".").map(Number)] : bound.type === AddressType.IPv6 ? [4, ...(parseIPv6(bound.host) ?? [])] : [3, utf8Bytes(bound.host).byteLength, ...utf8Bytes(bound.host)];
  return Uint8Array.from([SOCKS_VERSION, code, reserved, ...address, bound.port >> 8, bound.port & 0xff]);
});

/** A response head as proxies write it: status line, header fields, CRLF or bare LF line ends. */
const responseHead = fc
  .record({
    statusCode: fc.integer({ min: 100, max: 599 }),
    reason: fc.option(fc.stringMatching(/^[\x20-\x7e]{0,80}$/)),
    headers: fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,16}$/), fc.stringMatching(/^[\x20-\x7e]{0,40}$/)), { maxLength: 5 }),
    newline: fc.constantFrom("\r\n", "\n"),
    minor: fc.integer({ min: 0, max: 9 }),
  })
  .map((head) => {
    const statusLine = `HTTP/1.${head.minor} ${head.statusCode}${head.reason === null ? "" : ` ${head.reason}`}`;
    const text = [statusLine, ...head.headers.map(([name, value]) => `${name}: ${value}`), "", ""].join(head.newline);
    return { ...head, bytes: utf8Bytes(text) };
  });

describe("upstream proxy answers (fuzz)", () => {
  fuzzIt("SOCKS5 method selection: the same answer however split, and UpstreamError only", fc.tuple(hostileBytes(methodSelection.map((method) => Uint8Array.of(SOCKS_VERSION, method)), 8), methodSelection), ([input, offered]) => {
    const whole = checkEveryPrefix(UpstreamError, (bytes) => parseMethodSelection(bytes, offered as AuthMethodValue, LABEL), input, upstreamStatus);
    if (!whole.ok) expect(STATUSES).toContain(whole.error.status);
  });

  fuzzIt("RFC 1929 status: the same answer however split, and UpstreamError only", hostileBytes(fc.tuple(fc.constantFrom(1, 5), byte).map((pair) => Uint8Array.from(pair)), 8), (input) => {
    const whole = checkEveryPrefix(UpstreamError, (bytes) => parseUserPassStatus(bytes, LABEL), input, upstreamStatus);
    if (whole.ok && whole.value !== "incomplete") expect(input[1]).toBe(0);
  });

  fuzzIt("SOCKS5 CONNECT reply: the same answer however split, and UpstreamError only", hostileBytes(connectReply), (input) => {
    const whole = checkEveryPrefix(UpstreamError, (bytes) => parseConnectReply(bytes, LABEL), input, upstreamStatus);
    if (!whole.ok) expect(STATUSES).toContain(whole.error.status);
    if (whole.ok && whole.value !== "incomplete") expect(input[1]).toBe(0);
  });

  fuzzIt("HTTP response head: the same answer however split, and UpstreamError only", fc.tuple(hostileBytes(responseHead.map(({ bytes }) => bytes)), fc.oneof(fc.constant(0), fc.integer({ min: 0, max: MAX_HTTP_HEAD_BYTES + 10 }))), ([input, interimBytes]) => {
    const whole = checkEveryPrefix(UpstreamError, (bytes) => parseHttpResponseHead(bytes, LABEL, interimBytes), input, upstreamStatus);
    if (whole.ok && whole.value !== "incomplete") {
      const head = whole.value.value;
      expect(head.reasonPhrase).toMatch(/^[\x20-\x7e]{0,64}$/);
      expect(accepted(() => classifyConnectResponse(head, LABEL, false))).toBeDefined();
    }
  });

  fuzzIt(
    "HTTP response head: a head that never ends is refused at MAX_HTTP_HEAD_BYTES, however split",
    fc.tuple(fc.integer({ min: MAX_HTTP_HEAD_BYTES - 64, max: MAX_HTTP_HEAD_BYTES + 64 }), fc.constantFrom("x", "\r\n", "\n"), fc.array(fc.nat(), { maxLength: 5 })),
    ([length, filler, points]) => {
      // Header lines that go on: "HTTP/1.1 200 OK\r\nX: xxxx...", with no empty line in reach.
      const text = `HTTP/1.1 200 OK\r\nX: ${filler === "x" ? "x".repeat(length) : `y${filler}`.repeat(Math.ceil(length / (filler.length + 1)))}`.slice(0, length);
      const answer = outcomeOf(UpstreamError, () => feedChunks((bytes) => parseHttpResponseHead(bytes, LABEL), splitAt(utf8Bytes(text), points)));
      expect(answer.ok).toBe(length < MAX_HTTP_HEAD_BYTES);
    },
    0.2,
  );

  fuzzIt("HTTP response head: reads every head's status and reason, leaving what follows", fc.tuple(responseHead, fc.uint8Array({ maxLength: 32 }), fc.array(fc.nat(), { maxLength: 5 })), ([head, body, points]) => {
    const input = Uint8Array.from([...head.bytes, ...body]);
    const reasonPhrase = (head.reason ?? "").slice(0, 64).trim();
    expect(feedChunks((bytes) => parseHttpResponseHead(bytes, LABEL), splitAt(input, points))).toEqual({ value: { statusCode: head.statusCode, reasonPhrase }, bytesUsed: head.bytes.byteLength });
  });
});

// ---- EDGESOCKS_UPSTREAM ---------------------------------------------------------------------

const SECRET = "Sk-2c81e0-do-not-print";
/** A host as the URL writes it, and as the parser gives it. */
const upstreamHost = fc.oneof(
  ipv4Host.map((host) => ({ text: host, host })),
  // Not all digits and dots: that is an attempt at IPv4, refused.
  hostName.filter((name) => !/^[0-9.]+$/.test(name)).map((name) => ({ text: name, host: name })),
  ipv6Spelling.map(({ canonical, text }) => ({ text: `[${text}]`, host: canonical })),
);
const upstream = fc
  .record({
    scheme: fc.constantFrom("socks5" as const, "http" as const),
    schemeCase: fc.boolean(),
    host: upstreamHost,
    port,
    credentials: fc.option(fc.tuple(wellFormedText(20), wellFormedText(20))),
    slash: fc.boolean(),
  })
  .filter(({ scheme, credentials }) => {
    if (credentials === null) return true;
    const [user, password] = credentials;
    const bytes = (text: string) => utf8Bytes(text).byteLength;
    if (scheme === "socks5") return bytes(user) >= 1 && bytes(user) <= 255 && bytes(password) >= 1 && bytes(password) <= 255;
    return user !== "" && !user.includes(":") && !/[\x00-\x1f\x7f]/.test(user + password);
  });
const upstreamText = upstream.map(({ scheme, schemeCase, host, port: proxyPort, credentials, slash }) => {
  const userinfo = credentials === null ? "" : `${encodeURIComponent(credentials[0])}:${encodeURIComponent(credentials[1])}@`;
  return `${schemeCase ? scheme.toUpperCase() : scheme}://${userinfo}${host.text}:${proxyPort}${slash ? "/" : ""}`;
});

describe("EDGESOCKS_UPSTREAM (fuzz)", () => {
  fuzzIt("gives a proxy or UpstreamConfigError for random and mutated values", hostileText(upstreamText), (text) => {
    const parsed = outcomeOf(UpstreamConfigError, () => parseUpstreamUrl(text));
    if (parsed.ok) expect(parsed.value.label).toMatch(/^(socks5|http):\/\/[^@]+:\d{1,5}$/);
  });

  fuzzIt("parses every URL to its scheme, host, port and credentials", upstream, (value) => {
    const userinfo = value.credentials === null ? "" : `${encodeURIComponent(value.credentials[0])}:${encodeURIComponent(value.credentials[1])}@`;
    const parsed = parseUpstreamUrl(`${value.schemeCase ? value.scheme.toUpperCase() : value.scheme}://${userinfo}${value.host.text}:${value.port}${value.slash ? "/" : ""}`);
    const label = `${value.scheme}://${value.host.host.includes(":") ? `[${value.host.host}]` : value.host.host}:${value.port}`;
    const base = { scheme: value.scheme, host: value.host.host, port: value.port, label };
    expect(parsed).toEqual(value.credentials === null ? base : { ...base, username: value.credentials[0], password: value.credentials[1] });
  });

  fuzzIt("never quotes the password, in a message or the label, whatever else is wrong", mutatedText(upstreamText.map((text) => text.replace("://", `://user:${SECRET}@`).replace(/@([^@]*@)/, "@"))), (text) => {
    // Only a password still written whole, as userinfo, is a password to keep secret.
    if (!new RegExp(`^[^/]*//user:${SECRET}@`).test(text)) return;
    const parsed = outcomeOf(UpstreamConfigError, () => parseUpstreamUrl(text));
    const visible = parsed.ok ? parsed.value.label : parsed.error.message;
    expect(visible).not.toContain(SECRET.slice(0, 8));
  });
});

// ---- address blocks, NAT64 prefixes, relays -------------------------------------------------

/** Bits a block's address and a host share, by comparison of bit strings: the reference for cidrContains. */
function sharesPrefix(a: readonly number[], b: readonly number[], bits: number): boolean {
  const bitString = (bytes: readonly number[]) => bytes.map((value) => value.toString(2).padStart(8, "0")).join("");
  return bitString(a).slice(0, bits) === bitString(b).slice(0, bits);
}

const block = fc.oneof(
  fc.tuple(ipv4Host, fc.integer({ min: 0, max: 32 })).map(([address, bits]) => ({ text: `${address}/${bits}`, bytes: address.split(".").map(Number), prefixBits: bits })),
  fc.tuple(ipv6Spelling, fc.integer({ min: 0, max: 128 })).map(([{ canonical, text }, bits]) => {
    const bytes = ipToBytes(canonical) ?? [];
    // An IPv4-mapped block is stored as the IPv4 block it is, its prefix counted from bit 96.
    if (bytes.length === 4) return { text: `${text}/${Math.max(96, bits)}`, bytes, prefixBits: Math.max(96, bits) - 96 };
    return { text: `${text}/${bits}`, bytes, prefixBits: bits };
  }),
);

describe("address blocks (fuzz)", () => {
  fuzzIt("parses every ADDRESS/BITS to its bytes and prefix, in any IPv6 spelling", block, ({ text, bytes, prefixBits }) => {
    expect(parseCidr(text)).toEqual({ bytes, prefixBits });
  });

  fuzzIt("gives a block or CidrError for random and mutated text", hostileText(block.map(({ text }) => text)), (text) => {
    const parsed = outcomeOf(CidrError, () => parseCidr(text));
    if (parsed.ok) {
      expect([4, 16]).toContain(parsed.value.bytes.length);
      expect(parsed.value.prefixBits >= 0 && parsed.value.prefixBits <= parsed.value.bytes.length * 8).toBe(true);
    }
    accepted(() => ipToBytes(text));
  });

  fuzzIt("parses every list of blocks to its blocks, and refuses a list with a bad entry with CidrError", fc.array(fc.oneof(block.map(({ text }) => text), hostileText(fc.constant("10.0.0.0/8"))), { maxLength: 5 }), (entries) => {
    const parsed = outcomeOf(CidrError, () => parseCidrList(entries.join(" , "), "LIST"));
    const each = entries.filter((entry) => entry.trim() !== "").map((entry) => outcomeOf(CidrError, () => parseCidr(entry)));
    // An entry holding a comma is several entries; only a list of plain entries compares one to one.
    if (entries.some((entry) => entry.includes(","))) return;
    expect(parsed.ok).toBe(each.every((entry) => entry.ok));
    if (parsed.ok) expect(parsed.value).toEqual(each.map((entry) => (entry.ok ? entry.value : undefined)));
  });

  fuzzIt(
    "cidrContains agrees with comparing the prefix bit by bit",
    fc.tuple(fc.oneof(fc.constant(4), fc.constant(16)), fc.array(byte, { minLength: 16, maxLength: 16 }), fc.array(byte, { minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 128 }), fc.nat(16)),
    ([size, network, host, bits, sharedBytes]) => {
      const prefixBits = Math.min(bits, size * 8);
      const address = [...network.slice(0, Math.min(sharedBytes, size)), ...host.slice(Math.min(sharedBytes, size), size)];
      const cidr = { bytes: network.slice(0, size), prefixBits };
      expect(cidrContains(cidr, address)).toBe(sharesPrefix(cidr.bytes, address, prefixBits));
      expect(cidrContains(cidr, cidr.bytes)).toBe(true);
      expect(cidrContains(cidr, size === 4 ? network : network.slice(0, 4))).toBe(false);
    },
  );
});

const nat64Prefix = fc.tuple(ipv6Words, fc.constantFrom("canonical", "upper", "full")).map(([words, style]) => {
  const bytes = wordsToBytes([...words.slice(0, 6), 0, 0]);
  bytes[8] = 0; // bits 64 to 71 are reserved (RFC 6052 section 2.2)
  const canonical = formatIPv6(Uint8Array.from(bytes));
  const groups = [];
  for (let index = 0; index < 16; index += 2) groups.push((((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0)).toString(16));
  const text = style === "canonical" ? canonical : style === "upper" ? canonical.toUpperCase() : groups.join(":");
  return { text: `${text}/96`, bytes: bytes.slice(0, 12), canonical: `${canonical}/96` };
});

describe("NAT64 prefixes and relay lists (fuzz)", () => {
  fuzzIt("parses every /96 prefix to its 12 bytes and RFC 5952 text, and synthesizes prefix + IPv4", fc.tuple(nat64Prefix, ipv4Host), ([{ text, bytes, canonical }, ipv4]) => {
    const prefix = parseNat64Prefix(text);
    expect(prefix).toEqual({ bytes, text: canonical });
    expect(parseIPv6(synthesizeNat64(prefix, ipv4))).toEqual([...bytes, ...ipv4.split(".").map(Number)]);
  });

  fuzzIt("gives a prefix or Nat64Error for random and mutated text, and synthesizes or throws Nat64Error", fc.tuple(hostileText(nat64Prefix.map(({ text }) => text)), hostileText(ipv4Host)), ([text, ipv4]) => {
    const parsed = outcomeOf(Nat64Error, () => parseNat64Prefix(text));
    if (!parsed.ok) return;
    expect(parsed.value.bytes).toHaveLength(12);
    outcomeOf(Nat64Error, () => synthesizeNat64(parsed.value, ipv4));
  });

  const relay = fc.tuple(
    fc.oneof(
      ipv4Host.map((host) => ({ text: host, host })),
      hostName.map((name) => ({ text: name, host: name.toLowerCase() })),
      ipv6Spelling.map(({ canonical, text }) => ({ text: `[${text}]`, host: canonical })),
    ),
    fc.option(port),
  );
  fuzzIt("parses every relay list to its relays", fc.array(relay, { maxLength: 4 }), (relays) => {
    const text = relays.map(([host, relayPort]) => `${host.text}${relayPort === null ? "" : `:${relayPort}`}`).join(", ");
    expect(parseRelayList(text).map(({ host, port: relayPort }) => [host, relayPort])).toEqual(relays.map(([host, relayPort]) => [host.host, relayPort ?? undefined]));
  });

  fuzzIt("gives relays or RelayConfigError for random and mutated lists", hostileText(relay.map(([host, relayPort]) => `${host.text}${relayPort === null ? "" : `:${relayPort}`}`)), (text) => {
    outcomeOf(RelayConfigError, () => parseRelayList(text));
  });
});
