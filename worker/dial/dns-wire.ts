// DNS messages (RFC 1035 section 4) as the edge exchanges them with a DNS-over-HTTPS resolver
// (RFC 8484): an A or AAAA query out; the addresses in its answer, and how long they may be
// cached, back. The edge resolves a name this way to tell why a connect() to it failed.
//
// Pure: bytes in, a typed value or a DnsWireError out, whatever the bytes. No sockets, no
// Workers or Node APIs.

import { formatIPv6 } from "../protocol/index.ts";

/** Resource record types this module reads (RFC 1035 section 3.2.2; AAAA: RFC 3596). */
export const RecordType = { A: 1, CNAME: 5, SOA: 6, AAAA: 28 } as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];
/** The record types an address query asks for. */
export type AddressRecordType = typeof RecordType.A | typeof RecordType.AAAA;

/** Response codes (RFC 1035 section 4.1.1) the edge tells apart; any other arrives as its number. */
export const Rcode = { NoError: 0, ServFail: 2, NxDomain: 3 } as const;
export type Rcode = (typeof Rcode)[keyof typeof Rcode];

/** Bytes that do not make the DNS message expected, or a name that cannot be queried; the message says what is wrong. */
export class DnsWireError extends Error {
  override readonly name = "DnsWireError";
}

/** What an answer to an address query says. */
export type AddressAnswer = {
  id: number;
  rcode: number;
  /** Addresses of the asked type for the question's name, after its CNAME chain: IPv4 dotted, IPv6 RFC 5952. */
  addresses: string[];
  /**
   * Seconds the answer may be cached: the minimum TTL of the records used (the CNAME chain and
   * the addresses). For a negative answer (NXDOMAIN, or NOERROR without addresses: "no data"),
   * min(SOA TTL, SOA MINIMUM) of the authority section's SOA (RFC 2308 section 5), lowered by
   * any CNAME TTL on the way; undefined when there is no SOA, and for every other RCODE.
   */
  ttlSeconds: number | undefined;
};

const CLASS_IN = 1;
/** The fixed header (RFC 1035 section 4.1.1). */
const HEADER_BYTES = 12;
/** Header flags: QR (a response), RD (recursion desired); OPCODE and RCODE fields. */
const FLAG_RESPONSE = 0x8000;
const FLAG_RECURSION_DESIRED = 0x0100;
const OPCODE_SHIFT = 11;
const OPCODE_MASK = 0x0f;
const OPCODE_QUERY = 0;
const RCODE_MASK = 0x000f;
/** Name limits (RFC 1035 section 2.3.4): 63 bytes a label, 255 on the wire, so 253 characters as text. */
const MAX_LABEL_BYTES = 63;
const MAX_NAME_WIRE_BYTES = 255;
const MAX_NAME_TEXT_LENGTH = 253;
/**
 * Compression pointers one name may follow. A name has at most 127 labels, so a sane message
 * never needs more; the bound keeps a crafted chain of pointers cheap to refuse.
 */
const MAX_POINTERS_PER_NAME = 127;
/** The top two bits of a length byte: 00 a label, 11 a compression pointer (RFC 1035 section 4.1.4). */
const LABEL_KIND_MASK = 0xc0;
const POINTER_KIND = 0xc0;
/** Fixed part of a resource record after its name: TYPE, CLASS, TTL, RDLENGTH. */
const RECORD_FIXED_BYTES = 10;
/** SOA RDATA after its two names: SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM (RFC 1035 section 3.3.13). */
const SOA_NUMBERS_BYTES = 20;
/** RFC 2181 section 8: a TTL with the top bit set is read as zero. */
const MAX_TTL_SECONDS = 0x7fffffff;
const ADDRESS_BYTES: Record<AddressRecordType, number> = { [RecordType.A]: 4, [RecordType.AAAA]: 16 };

/**
 * A standard query (RD set, one question, class IN) for the `type` records of `name`. RFC 8484
 * section 4.1 asks DoH clients to use id 0, so that HTTP caches can share answers. Throws
 * DnsWireError for a name that is not 1 to 253 characters of labels 1 to 63 characters long
 * (letters, digits, "-" and "_"; one trailing dot allowed), or an id outside 0..65535.
 */
export function encodeAddressQuery(name: string, type: AddressRecordType, id: number): Uint8Array {
  checkAddressType(type);
  if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw new DnsWireError(`query id ${id} is outside 0..65535`);
  const labels = queryLabels(name);
  const nameBytes = labels.reduce((total, label) => total + 1 + label.length, 1);
  const message = new Uint8Array(HEADER_BYTES + nameBytes + 4);
  putUint16(message, 0, id);
  putUint16(message, 2, FLAG_RECURSION_DESIRED);
  putUint16(message, 4, 1);
  let offset = HEADER_BYTES;
  for (const label of labels) {
    message[offset++] = label.length;
    for (let index = 0; index < label.length; index++) message[offset++] = label.charCodeAt(index);
  }
  message[offset++] = 0;
  putUint16(message, offset, type);
  putUint16(message, offset + 2, CLASS_IN);
  return message;
}

/**
 * Reads a response to an address query for `type`: its id, RCODE, the addresses of `type` that
 * its answer section gives the question's name (following CNAMEs), and how long they may be
 * cached. Throws DnsWireError, and nothing else, for bytes that are not such a response:
 * truncated, a query, a question of another type, a name running out of bounds or in a pointer
 * loop, an address record of the wrong size, a CNAME loop. Work is linear in the message size.
 * TC is not looked at: over HTTPS there is no datagram limit for a resolver to truncate to.
 */
export function parseAddressAnswer(message: Uint8Array, type: AddressRecordType): AddressAnswer {
  checkAddressType(type);
  if (message.byteLength < HEADER_BYTES) throw new DnsWireError(`message is ${message.byteLength} bytes; the DNS header alone is ${HEADER_BYTES}`);
  const id = readUint16(message, 0, "header");
  const flags = readUint16(message, 2, "header");
  if ((flags & FLAG_RESPONSE) === 0) throw new DnsWireError("message is a query, not a response (QR is clear)");
  const opcode = (flags >> OPCODE_SHIFT) & OPCODE_MASK;
  if (opcode !== OPCODE_QUERY) throw new DnsWireError(`response has opcode ${opcode}, not QUERY (0)`);
  const rcode = flags & RCODE_MASK;
  const questionCount = readUint16(message, 4, "header");
  const answerCount = readUint16(message, 6, "header");
  const authorityCount = readUint16(message, 8, "header");
  const additionalCount = readUint16(message, 10, "header");

  let offset = HEADER_BYTES;
  let questionName: string | undefined;
  for (let index = 0; index < questionCount; index++) {
    const what = `question ${index + 1}`;
    const name = readName(message, offset, `${what} name`);
    const questionType = readUint16(message, name.end, what);
    readUint16(message, name.end + 2, what);
    if (index === 0) {
      if (questionType !== type) throw new DnsWireError(`question is for type ${questionType}, not ${type}`);
      questionName = name.text;
    }
    offset = name.end + 4;
  }
  const answers = readSection(message, offset, answerCount, "answer");
  const authority = readSection(message, answers.end, authorityCount, "authority");
  // Read for bounds only: a truncated additional section means a truncated message.
  readSection(message, authority.end, additionalCount, "additional");

  for (const record of answers.records) {
    if (record.type === type && record.recordClass === CLASS_IN && record.dataLength !== ADDRESS_BYTES[type]) {
      throw new DnsWireError(`${record.what} (type ${type}) has ${record.dataLength} bytes of data, not ${ADDRESS_BYTES[type]}`);
    }
  }

  // Follow the question's CNAME chain (RFC 1034 section 3.6.2) to the name that owns the
  // addresses. Without a question, every address record counts.
  const used: ResourceRecord[] = [];
  let owner = questionName;
  if (owner !== undefined) {
    const aliases = new Map<string, ResourceRecord>();
    for (const record of answers.records) {
      if (record.type === RecordType.CNAME && record.recordClass === CLASS_IN && !aliases.has(record.owner)) aliases.set(record.owner, record);
    }
    const seen = new Set<string>([owner]);
    for (;;) {
      const alias = aliases.get(owner);
      if (!alias) break;
      const target = readName(message, alias.dataOffset, `${alias.what} CNAME target`);
      if (target.end !== alias.dataOffset + alias.dataLength) throw new DnsWireError(`${alias.what} CNAME target does not fill its ${alias.dataLength} bytes of data`);
      if (seen.has(target.text)) throw new DnsWireError(`CNAME chain loops back to ${target.text}`);
      seen.add(target.text);
      used.push(alias);
      owner = target.text;
    }
  }
  const addressRecords = answers.records.filter(
    (record) => record.type === type && record.recordClass === CLASS_IN && (owner === undefined || record.owner === owner),
  );
  const addresses = addressRecords.map((record) => formatAddress(message.subarray(record.dataOffset, record.dataOffset + record.dataLength)));

  let ttlSeconds: number | undefined;
  if (rcode === Rcode.NoError && addresses.length > 0) {
    ttlSeconds = minimumTtl([...used, ...addressRecords].map((record) => record.ttlSeconds));
  } else if (rcode === Rcode.NoError || rcode === Rcode.NxDomain) {
    const soa = authority.records.find((record) => record.type === RecordType.SOA && record.recordClass === CLASS_IN);
    if (soa) ttlSeconds = minimumTtl([soa.ttlSeconds, soaMinimum(message, soa), ...used.map((record) => record.ttlSeconds)]);
  }
  return { id, rcode, addresses, ttlSeconds };
}

// ---- reading --------------------------------------------------------------------------------

type ResourceRecord = {
  /** "answer 2", for errors. */
  what: string;
  /** The owner name as readName gives it: lower case, labels escaped. */
  owner: string;
  type: number;
  recordClass: number;
  ttlSeconds: number;
  dataOffset: number;
  dataLength: number;
};

function readSection(message: Uint8Array, start: number, count: number, section: string): { records: ResourceRecord[]; end: number } {
  const records: ResourceRecord[] = [];
  let offset = start;
  for (let index = 0; index < count; index++) {
    const what = `${section} ${index + 1}`;
    const owner = readName(message, offset, `${what} name`);
    const type = readUint16(message, owner.end, what);
    const recordClass = readUint16(message, owner.end + 2, what);
    const ttlSeconds = readTtl(message, owner.end + 4, what);
    const dataLength = readUint16(message, owner.end + 8, what);
    const dataOffset = owner.end + RECORD_FIXED_BYTES;
    if (dataOffset + dataLength > message.byteLength) {
      throw new DnsWireError(`${what} data (${dataLength} bytes at byte ${dataOffset}) runs past the end of the ${message.byteLength}-byte message`);
    }
    records.push({ what, owner: owner.text, type, recordClass, ttlSeconds, dataOffset, dataLength });
    offset = dataOffset + dataLength;
  }
  return { records, end: offset };
}

/** MINIMUM of an SOA record, checking that its RDATA is two names and five numbers. */
function soaMinimum(message: Uint8Array, soa: ResourceRecord): number {
  const dataEnd = soa.dataOffset + soa.dataLength;
  const primary = readName(message, soa.dataOffset, `${soa.what} SOA MNAME`);
  const mailbox = readName(message, primary.end, `${soa.what} SOA RNAME`);
  if (mailbox.end + SOA_NUMBERS_BYTES !== dataEnd) throw new DnsWireError(`${soa.what} SOA data is ${soa.dataLength} bytes; its names and five numbers do not fill it`);
  return readTtl(message, dataEnd - 4, `${soa.what} SOA MINIMUM`);
}

/**
 * The name at `start` as text (lower case; a "." or "\" inside a label and bytes outside
 * printable ASCII escaped as \DDD, so two different names never read alike) and the offset
 * just past the name where it sits (past its first pointer, if any). A compression pointer
 * must point before the labels that led to it, so every jump goes further back and no chain
 * of pointers can loop.
 */
function readName(message: Uint8Array, start: number, what: string): { text: string; end: number } {
  const labels: string[] = [];
  let position = start;
  let segmentStart = start;
  let end: number | undefined;
  let wireBytes = 1;
  let pointers = 0;
  for (;;) {
    const length = message[position];
    if (length === undefined) throw new DnsWireError(`${what} runs past the end of the message (byte ${position})`);
    if (length === 0) break;
    const kind = length & LABEL_KIND_MASK;
    if (kind === POINTER_KIND) {
      const low = message[position + 1];
      if (low === undefined) throw new DnsWireError(`${what}: compression pointer at byte ${position} is truncated`);
      const target = ((length & ~LABEL_KIND_MASK) << 8) | low;
      if (target >= segmentStart) throw new DnsWireError(`${what}: compression pointer at byte ${position} points to byte ${target}, not back before its name`);
      if (++pointers > MAX_POINTERS_PER_NAME) throw new DnsWireError(`${what} follows more than ${MAX_POINTERS_PER_NAME} compression pointers`);
      end ??= position + 2;
      position = segmentStart = target;
      continue;
    }
    if (kind !== 0) throw new DnsWireError(`${what}: label type 0x${kind.toString(16)} at byte ${position} is not a label or a pointer`);
    if (position + 1 + length > message.byteLength) throw new DnsWireError(`${what}: ${length}-byte label at byte ${position} runs past the end of the message`);
    wireBytes += 1 + length;
    if (wireBytes > MAX_NAME_WIRE_BYTES) throw new DnsWireError(`${what} is longer than ${MAX_NAME_WIRE_BYTES} bytes`);
    labels.push(labelText(message.subarray(position + 1, position + 1 + length)));
    position += 1 + length;
  }
  return { text: labels.join("."), end: end ?? position + 1 };
}

function labelText(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) {
    const lower = byte >= 0x41 && byte <= 0x5a ? byte + 0x20 : byte;
    const plain = lower > 0x20 && lower < 0x7f && lower !== 0x2e && lower !== 0x5c;
    text += plain ? String.fromCharCode(lower) : `\\${lower.toString().padStart(3, "0")}`;
  }
  return text;
}

function readUint16(message: Uint8Array, offset: number, what: string): number {
  const high = message[offset];
  const low = message[offset + 1];
  if (high === undefined || low === undefined) throw new DnsWireError(`${what} is truncated at byte ${offset} of ${message.byteLength}`);
  return (high << 8) | low;
}

/** A 32-bit TTL, top bit set read as zero (RFC 2181 section 8). */
function readTtl(message: Uint8Array, offset: number, what: string): number {
  const value = readUint16(message, offset, what) * 0x10000 + readUint16(message, offset + 2, what);
  return value > MAX_TTL_SECONDS ? 0 : value;
}

function minimumTtl(ttls: readonly number[]): number {
  // A loop, not Math.min(...ttls): an answer may hold thousands of records.
  let minimum = Infinity;
  for (const ttl of ttls) minimum = Math.min(minimum, ttl);
  return minimum;
}

function formatAddress(bytes: Uint8Array): string {
  return bytes.byteLength === 4 ? Array.from(bytes).join(".") : formatIPv6(bytes);
}

// ---- writing --------------------------------------------------------------------------------

function queryLabels(name: string): string[] {
  const bare = name.endsWith(".") ? name.slice(0, -1) : name;
  if (bare === "") throw new DnsWireError(`"${name}" has no labels to query`);
  if (bare.length > MAX_NAME_TEXT_LENGTH) throw new DnsWireError(`name is ${bare.length} characters; at most ${MAX_NAME_TEXT_LENGTH}`);
  const labels = bare.split(".");
  for (const label of labels) {
    if (label === "") throw new DnsWireError(`"${name}" has an empty label`);
    if (label.length > MAX_LABEL_BYTES) throw new DnsWireError(`"${name}" has a ${label.length}-character label; at most ${MAX_LABEL_BYTES}`);
    if (!/^[A-Za-z0-9_-]+$/.test(label)) {
      throw new DnsWireError(`"${name}": label "${label}" may hold only letters, digits, "-" and "_" (an internationalized name goes as its xn-- form)`);
    }
  }
  return labels;
}

function putUint16(message: Uint8Array, offset: number, value: number): void {
  message[offset] = value >> 8;
  message[offset + 1] = value & 0xff;
}

function checkAddressType(type: number): void {
  if (type !== RecordType.A && type !== RecordType.AAAA) throw new DnsWireError(`record type ${type} is not A (1) or AAAA (28)`);
}
