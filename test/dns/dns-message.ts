// DNS messages (RFC 1035 section 4) for the tests: a query for an A or AAAA record, the answer
// a stub resolver gives to it from a record table, and a reader for the answers. Uint8Array
// only, so it runs in workerd and in Node alike.
//
// This is a second, independent implementation of the wire format: worker/dial/dns-wire.ts is
// tested against it, so it shares none of that module's code (both use protocol.ts's IPv6
// text helpers, which protocol.test.ts checks on their own).

import { parseIPv6, formatIPv6 } from "../../worker/protocol/index.ts";

/** The name the stub resolver has known from the start (the DNS endpoint's tests ask for it). */
export const KNOWN_NAME = "edge-test.example";
/** What the stub answers for KNOWN_NAME: TEST-NET-1 (RFC 5737), only ever data in an answer. */
export const KNOWN_ADDRESS = "192.0.2.7";
/**
 * A name whose address stands in for one of Cloudflare's own: 127.0.0.2, which a test Worker
 * configured to treat it as Cloudflare's refuses to dial.
 */
export const CLOUDFLARE_HOSTED_NAME = "cf-hosted.edgesocks.test";
/** Like CLOUDFLARE_HOSTED_NAME, with only an AAAA record (::1) and no A record. */
export const CLOUDFLARE_HOSTED_V6_NAME = "cf-hosted-v6.edgesocks.test";
/** A name with an ordinary address: 127.0.0.1, where the tests' origins listen. */
export const ORDINARY_NAME = "ordinary.edgesocks.test";

/** Records the stub answers with, by lower-case name; `ttlSeconds` defaults to STUB_DEFAULT_TTL_SECONDS. */
export type StubRecords = Record<string, { a?: string[]; aaaa?: string[]; ttlSeconds?: number }>;

/** TTL of a record whose table entry names none (the stub's TTL before it had a table). */
export const STUB_DEFAULT_TTL_SECONDS = 60;
/** The zone whose SOA the stub puts in the authority section of every negative answer. */
export const STUB_SOA_ZONE = "edgesocks.test";
/** The SOA record's own TTL and its MINIMUM field: a negative answer may be cached min(60, 30) = 30 s (RFC 2308). */
export const STUB_SOA_TTL_SECONDS = 60;
export const STUB_SOA_MINIMUM_SECONDS = 30;

/** The stub's default table. Any name not in it is NXDOMAIN; a type it has no records of is "no data". */
export const STUB_RECORDS: StubRecords = {
  [KNOWN_NAME]: { a: [KNOWN_ADDRESS], ttlSeconds: STUB_DEFAULT_TTL_SECONDS },
  [CLOUDFLARE_HOSTED_NAME]: { a: ["127.0.0.2"], ttlSeconds: 300 },
  [CLOUDFLARE_HOSTED_V6_NAME]: { aaaa: ["::1"], ttlSeconds: 300 },
  [ORDINARY_NAME]: { a: ["127.0.0.1"], ttlSeconds: 300 },
};

const TYPE_A = 1;
const TYPE_SOA = 6;
const TYPE_AAAA = 28;
const CLASS_IN = 1;
/** QR (response), RD and RA set; RCODE in the low four bits. */
const RESPONSE_FLAGS = 0x8180;
const RCODE_NXDOMAIN = 3;
const HEADER_BYTES = 12;
/** A compression pointer to the question's name, which always starts right after the header. */
const POINTER_TO_QUESTION = [0xc0, HEADER_BYTES];

/** A standard query with recursion desired for the `type` (default A) record of `name`. */
export function buildQuery(name: string, id: number, type: number = TYPE_A): Uint8Array {
  const question = encodeQuestion(name, type);
  const message = new Uint8Array(HEADER_BYTES + question.byteLength);
  const view = new DataView(message.buffer);
  view.setUint16(0, id);
  view.setUint16(2, 0x0100);
  view.setUint16(4, 1);
  message.set(question, HEADER_BYTES);
  return message;
}

/** The first question of `query`: its name as written (labels joined by ".") and its type. Throws for bytes that hold none. */
export function questionOf(query: Uint8Array): { name: string; type: number; end: number } {
  if (query.byteLength < HEADER_BYTES) throw new Error("not a DNS query: shorter than its header");
  const { name, end } = readName(query, HEADER_BYTES);
  if (query.byteLength < end + 4) throw new Error("not a DNS query: the question is truncated");
  return { name, type: ((query[end] ?? 0) << 8) | (query[end + 1] ?? 0), end: end + 4 };
}

/**
 * The stub's answer to `query` from `records`: the A or AAAA records the table has for the
 * name; NOERROR without answers ("no data") and the zone's SOA in the authority section when
 * the name is in the table without records of that type; NXDOMAIN and the same SOA when it is
 * not in the table at all.
 */
export function answerQuery(query: Uint8Array, records: StubRecords = STUB_RECORDS): Uint8Array {
  const { name, type, end } = questionOf(query);
  const question = query.subarray(HEADER_BYTES, end);
  const entry = lookUp(records, name);
  const addresses = entry === undefined ? [] : ((type === TYPE_A ? entry.a : type === TYPE_AAAA ? entry.aaaa : undefined) ?? []);
  const ttlSeconds = entry?.ttlSeconds ?? STUB_DEFAULT_TTL_SECONDS;
  const answers = addresses.map((address) => addressRecord(type, address, ttlSeconds));
  const authority = answers.length === 0 ? [soaRecord()] : [];
  const flags = RESPONSE_FLAGS | (entry === undefined ? RCODE_NXDOMAIN : 0);
  const header = [...uint16(readUint16(query, 0)), ...uint16(flags), ...uint16(1), ...uint16(answers.length), ...uint16(authority.length), ...uint16(0)];
  return Uint8Array.from([...header, ...question, ...answers.flat(), ...authority.flat()]);
}

export type ParsedAnswer = { id: number; rcode: number; name: string; addresses: string[] };

/** Reads an answer to a one-question query: its id, RCODE, question name and A and AAAA records. */
export function parseAnswer(message: Uint8Array): ParsedAnswer {
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  if (message.byteLength < HEADER_BYTES || (view.getUint16(2) & 0x8000) === 0) throw new Error("not a DNS response");
  const { name, end } = readName(message, HEADER_BYTES);
  let offset = end + 4;
  const addresses: string[] = [];
  for (let index = 0; index < view.getUint16(6); index++) {
    offset = readName(message, offset).end;
    const type = view.getUint16(offset);
    const length = view.getUint16(offset + 8);
    const data = message.subarray(offset + 10, offset + 10 + length);
    if (type === TYPE_A && length === 4) addresses.push(Array.from(data).join("."));
    if (type === TYPE_AAAA && length === 16) addresses.push(formatIPv6(data));
    offset += 10 + length;
  }
  return { id: view.getUint16(0), rcode: view.getUint16(2) & 0x0f, name, addresses };
}

function lookUp(records: StubRecords, name: string): StubRecords[string] | undefined {
  const wanted = name.toLowerCase();
  const key = Object.keys(records).find((candidate) => candidate.toLowerCase() === wanted);
  return key === undefined ? undefined : records[key];
}

/** One answer record for the question's name (by pointer): TYPE, CLASS IN, TTL, RDLENGTH, the address bytes. */
function addressRecord(type: number, address: string, ttlSeconds: number): number[] {
  const data = type === TYPE_A ? address.split(".").map(Number) : parseIPv6(address);
  if (!data || data.length !== (type === TYPE_A ? 4 : 16)) throw new Error(`stub table address ${address} is not of type ${type}`);
  return [...POINTER_TO_QUESTION, ...uint16(type), ...uint16(CLASS_IN), ...uint32(ttlSeconds), ...uint16(data.length), ...data];
}

/**
 * The zone's SOA record, written out in full: owner STUB_SOA_ZONE, MNAME ns.STUB_SOA_ZONE and
 * RNAME hostmaster.STUB_SOA_ZONE (no compression, so a reader's pointer handling is not what
 * makes it parse), then SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM.
 */
function soaRecord(): number[] {
  const owner = encodeName(STUB_SOA_ZONE);
  const data = [
    ...encodeName(`ns.${STUB_SOA_ZONE}`),
    ...encodeName(`hostmaster.${STUB_SOA_ZONE}`),
    ...uint32(2026120201),
    ...uint32(7200),
    ...uint32(3600),
    ...uint32(1209600),
    ...uint32(STUB_SOA_MINIMUM_SECONDS),
  ];
  return [...owner, ...uint16(TYPE_SOA), ...uint16(CLASS_IN), ...uint32(STUB_SOA_TTL_SECONDS), ...uint16(data.length), ...data];
}

function encodeQuestion(name: string, type: number): Uint8Array {
  return Uint8Array.from([...encodeName(name), ...uint16(type), ...uint16(CLASS_IN)]);
}

function encodeName(name: string): number[] {
  const bytes: number[] = [];
  for (const label of name.split(".")) bytes.push(label.length, ...Array.from(label, (char) => char.charCodeAt(0)));
  bytes.push(0);
  return bytes;
}

function uint16(value: number): number[] {
  return [(value >> 8) & 0xff, value & 0xff];
}

function uint32(value: number): number[] {
  return [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
}

function readUint16(message: Uint8Array, offset: number): number {
  return ((message[offset] ?? 0) << 8) | (message[offset + 1] ?? 0);
}

/** The name at `offset` (labels, or a compression pointer) and the offset just past it. */
function readName(message: Uint8Array, offset: number): { name: string; end: number } {
  const labels: string[] = [];
  let position = offset;
  let end: number | undefined;
  for (let jumps = 0; ; ) {
    const length = message[position];
    if (length === undefined) throw new Error("DNS name runs past the message");
    if (length === 0) break;
    if ((length & 0xc0) === 0xc0) {
      // The tests' messages are well formed; this bound only keeps a broken one from hanging.
      if (++jumps > 64) throw new Error("DNS name follows too many pointers");
      end ??= position + 2;
      position = ((length & 0x3f) << 8) | (message[position + 1] ?? 0);
      continue;
    }
    labels.push(String.fromCharCode(...message.subarray(position + 1, position + 1 + length)));
    position += 1 + length;
  }
  return { name: labels.join("."), end: end ?? position + 1 };
}
