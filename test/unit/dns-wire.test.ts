// worker/dial/dns-wire.ts: the edge's DoH queries and its reading of their answers, checked
// against the stub resolver's independent encoder (test/dns/dns-message.ts), hand-built
// messages, every truncation of them, and random and mutated bytes.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CLOUDFLARE_HOSTED_NAME,
  CLOUDFLARE_HOSTED_V6_NAME,
  KNOWN_ADDRESS,
  KNOWN_NAME,
  ORDINARY_NAME,
  STUB_DEFAULT_TTL_SECONDS,
  STUB_RECORDS,
  STUB_SOA_MINIMUM_SECONDS,
  answerQuery,
  questionOf,
  type StubRecords,
} from "../dns/dns-message.ts";
import { DohStubPath, startDohStub, type DohStub } from "../dns/doh-stub.ts";
import { DnsWireError, Rcode, RecordType, encodeAddressQuery, parseAddressAnswer, type AddressAnswer } from "../../worker/dial/dns-wire.ts";

// ---- hand-built messages --------------------------------------------------------------------

const u16 = (value: number): number[] => [(value >> 8) & 0xff, value & 0xff];
const u32 = (value: number): number[] => [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
function wireName(name: string): number[] {
  const bytes: number[] = [];
  for (const label of name.split(".").filter((part) => part !== "")) bytes.push(label.length, ...Array.from(label, (char) => char.charCodeAt(0)));
  return [...bytes, 0];
}
/** A resource record; `owner` is wire bytes (a name or a pointer). */
function record(owner: number[], type: number, ttlSeconds: number, data: number[]): number[] {
  return [...owner, ...u16(type), ...u16(1), ...u32(ttlSeconds), ...u16(data.length), ...data];
}
function soaData(minimumSeconds: number): number[] {
  return [...wireName("ns.example.test"), ...wireName("hostmaster.example.test"), ...u32(1), ...u32(7200), ...u32(3600), ...u32(1209600), ...u32(minimumSeconds)];
}
/** A response: header, one question for `name`/`type`, then the sections as given. */
function response(options: { id?: number; flags?: number; name: string; type: number; answers?: number[][]; authority?: number[][]; additional?: number[][] }): Uint8Array {
  const { answers = [], authority = [], additional = [] } = options;
  return Uint8Array.from([
    ...u16(options.id ?? 0x4242),
    ...u16(options.flags ?? 0x8180),
    ...u16(1),
    ...u16(answers.length),
    ...u16(authority.length),
    ...u16(additional.length),
    ...wireName(options.name),
    ...u16(options.type),
    ...u16(1),
    ...answers.flat(),
    ...authority.flat(),
    ...additional.flat(),
  ]);
}
/** A compression pointer to `offset` (14 bits, RFC 1035 section 4.1.4). */
const pointerTo = (offset: number): number[] => [0xc0 | (offset >> 8), offset & 0xff];
const QUESTION_POINTER = pointerTo(12);

/** A CNAME chain answer: www.example.test -> a.example.test -> b.example.test -> 2 A records, plus an unrelated A. */
function cnameChain(order: (records: number[][]) => number[][] = (records) => records): Uint8Array {
  return response({
    name: "www.example.test",
    type: RecordType.A,
    answers: order([
      record(QUESTION_POINTER, RecordType.CNAME, 300, wireName("a.example.test")),
      record(wireName("a.example.test"), RecordType.CNAME, 120, wireName("b.example.test")),
      record(wireName("b.example.test"), RecordType.A, 600, [192, 0, 2, 1]),
      record(wireName("B.Example.Test"), RecordType.A, 900, [192, 0, 2, 2]),
      record(wireName("unrelated.example.test"), RecordType.A, 5, [203, 0, 113, 1]),
    ]),
  });
}

function wireError(run: () => unknown): DnsWireError {
  try {
    run();
  } catch (error) {
    if (error instanceof DnsWireError) return error;
    throw new Error(`threw ${String(error)}, not a DnsWireError`);
  }
  throw new Error("did not throw");
}

// ---- encodeAddressQuery ---------------------------------------------------------------------

describe("encodeAddressQuery", () => {
  it("writes a header with the id, RD set and one question, and the question for the name, type and class IN", () => {
    expect(Array.from(encodeAddressQuery("example.com", RecordType.A, 0xbeef))).toEqual([
      0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
      7, ...Array.from("example", (char) => char.charCodeAt(0)), 3, ...Array.from("com", (char) => char.charCodeAt(0)), 0,
      0, 1, 0, 1,
    ]);
  });

  it("asks for AAAA with type 28, as the stub reads it", () => {
    expect(questionOf(encodeAddressQuery("Example.COM", RecordType.AAAA, 0))).toMatchObject({ name: "Example.COM", type: 28 });
  });

  it("writes a name with a trailing dot as the same name", () => {
    expect(encodeAddressQuery("example.com.", RecordType.A, 1)).toEqual(encodeAddressQuery("example.com", RecordType.A, 1));
  });

  it("accepts 63-character labels and a 253-character name", () => {
    const name = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
    expect(name).toHaveLength(253);
    expect(encodeAddressQuery(name, RecordType.A, 0).byteLength).toBe(12 + 255 + 4);
    expect(encodeAddressQuery(`${name}.`, RecordType.A, 0).byteLength).toBe(12 + 255 + 4);
  });

  it.each([
    ["", /has no labels/],
    [".", /has no labels/],
    ["a..b", /has an empty label/],
    [".example.com", /has an empty label/],
    ["example.com..", /has an empty label/],
    [`${"a".repeat(64)}.example`, /64-character label; at most 63/],
    [[..."abcd"].map((char) => char.repeat(63)).join("."), /name is 255 characters; at most 253/],
    ["white space.example", /may hold only letters, digits/],
    ["bücher.example", /xn-- form/],
    ["a/b.example", /may hold only letters, digits/],
  ])("refuses the name %j", (name, message) => {
    expect(wireError(() => encodeAddressQuery(name, RecordType.A, 0)).message).toMatch(message);
  });

  it("refuses an id outside 0..65535 and a type other than A or AAAA", () => {
    expect(() => encodeAddressQuery("example.com", RecordType.A, 65536)).toThrow(DnsWireError);
    expect(() => encodeAddressQuery("example.com", RecordType.A, -1)).toThrow(DnsWireError);
    expect(() => encodeAddressQuery("example.com", RecordType.A, 1.5)).toThrow(DnsWireError);
    expect(() => encodeAddressQuery("example.com", 15 as 1, 0)).toThrow(/type 15 is not A/);
  });
});

// ---- parseAddressAnswer against the stub ----------------------------------------------------

describe("parseAddressAnswer, against the stub resolver's answers", () => {
  const ask = (name: string, type: 1 | 28, records?: StubRecords): AddressAnswer => parseAddressAnswer(answerQuery(encodeAddressQuery(name, type, 0x1234), records), type);

  it("reads every address the stub's table has, with its TTL", () => {
    expect(ask(KNOWN_NAME, RecordType.A)).toEqual({ id: 0x1234, rcode: Rcode.NoError, addresses: [KNOWN_ADDRESS], ttlSeconds: STUB_DEFAULT_TTL_SECONDS });
    expect(ask(CLOUDFLARE_HOSTED_NAME, RecordType.A)).toEqual({ id: 0x1234, rcode: Rcode.NoError, addresses: ["127.0.0.2"], ttlSeconds: 300 });
    expect(ask(CLOUDFLARE_HOSTED_V6_NAME, RecordType.AAAA)).toEqual({ id: 0x1234, rcode: Rcode.NoError, addresses: ["::1"], ttlSeconds: 300 });
    expect(ask(ORDINARY_NAME, RecordType.A)).toEqual({ id: 0x1234, rcode: Rcode.NoError, addresses: ["127.0.0.1"], ttlSeconds: 300 });
  });

  it("round-trips every name and type of the table", () => {
    for (const [name, entry] of Object.entries(STUB_RECORDS)) {
      for (const [type, wanted] of [[RecordType.A, entry.a], [RecordType.AAAA, entry.aaaa]] as const) {
        const answer = ask(name, type);
        expect(answer.addresses, `${name} type ${type}`).toEqual(wanted ?? []);
        expect(answer.ttlSeconds, `${name} type ${type}`).toBe(wanted ? (entry.ttlSeconds ?? STUB_DEFAULT_TTL_SECONDS) : STUB_SOA_MINIMUM_SECONDS);
      }
    }
  });

  it("reads several addresses in the stub's order, IPv6 in RFC 5952 form", () => {
    const records: StubRecords = { "multi.example": { a: ["192.0.2.1", "192.0.2.2"], aaaa: ["2001:DB8:0:0:0:0:0:1", "2001:db8::2"], ttlSeconds: 7 } };
    expect(ask("multi.example", RecordType.A, records)).toMatchObject({ addresses: ["192.0.2.1", "192.0.2.2"], ttlSeconds: 7 });
    expect(ask("multi.example", RecordType.AAAA, records)).toMatchObject({ addresses: ["2001:db8::1", "2001:db8::2"], ttlSeconds: 7 });
  });

  it("matches the question's name whatever its case", () => {
    expect(ask("CF-Hosted.EdgeSocks.TEST", RecordType.A).addresses).toEqual(["127.0.0.2"]);
  });

  it("reads NXDOMAIN with the negative TTL min(SOA TTL, SOA MINIMUM)", () => {
    expect(ask("missing.edgesocks.test", RecordType.A)).toEqual({ id: 0x1234, rcode: Rcode.NxDomain, addresses: [], ttlSeconds: STUB_SOA_MINIMUM_SECONDS });
  });

  it("reads no data (NOERROR, no records of the type) with the same negative TTL", () => {
    expect(ask(CLOUDFLARE_HOSTED_V6_NAME, RecordType.A)).toEqual({ id: 0x1234, rcode: Rcode.NoError, addresses: [], ttlSeconds: STUB_SOA_MINIMUM_SECONDS });
    expect(ask(ORDINARY_NAME, RecordType.AAAA)).toEqual({ id: 0x1234, rcode: Rcode.NoError, addresses: [], ttlSeconds: STUB_SOA_MINIMUM_SECONDS });
  });
});

describe("parseAddressAnswer, against the stub resolver over HTTP (RFC 8484 POST)", () => {
  let stub: DohStub;
  beforeAll(async () => {
    stub = await startDohStub({ ...STUB_RECORDS, "only-here.example": { a: ["198.51.100.9"], ttlSeconds: 5 } });
  });
  afterAll(async () => {
    await stub.close();
  });

  const resolve = async (name: string, type: 1 | 28): Promise<AddressAnswer> => {
    const response = await fetch(stub.url(DohStubPath.Answer), {
      method: "POST",
      headers: { "Content-Type": "application/dns-message", Accept: "application/dns-message" },
      body: encodeAddressQuery(name, type, 0),
    });
    expect(response.status).toBe(200);
    return parseAddressAnswer(new Uint8Array(await response.arrayBuffer()), type);
  };

  it("answers from the table it was started with", async () => {
    expect(await resolve("only-here.example", RecordType.A)).toEqual({ id: 0, rcode: Rcode.NoError, addresses: ["198.51.100.9"], ttlSeconds: 5 });
    expect(await resolve(CLOUDFLARE_HOSTED_V6_NAME, RecordType.AAAA)).toMatchObject({ addresses: ["::1"], ttlSeconds: 300 });
  });

  it("counts the queries for each name, whatever their case or type", async () => {
    const answeredBefore = stub.answeredCount();
    await resolve("Ordinary.EDGESOCKS.test", RecordType.A);
    await resolve(ORDINARY_NAME, RecordType.AAAA);
    await resolve("nowhere.example", RecordType.A);
    expect(stub.queriesFor(ORDINARY_NAME)).toBe(2);
    expect(stub.queriesFor("ORDINARY.edgesocks.test.")).toBe(2);
    expect(stub.queriesFor("nowhere.example")).toBe(1);
    expect(stub.queriesFor(CLOUDFLARE_HOSTED_NAME)).toBe(0);
    expect(stub.answeredCount() - answeredBefore).toBe(3);
  });
});

// ---- parseAddressAnswer on hand-built messages ----------------------------------------------

describe("parseAddressAnswer, CNAME chains", () => {
  it("follows the chain to the addresses of its last name, ignoring records off the chain, with the chain's minimum TTL", () => {
    expect(parseAddressAnswer(cnameChain(), RecordType.A)).toEqual({ id: 0x4242, rcode: 0, addresses: ["192.0.2.1", "192.0.2.2"], ttlSeconds: 120 });
  });

  it("follows the chain whatever order the records come in", () => {
    expect(parseAddressAnswer(cnameChain((records) => [...records].reverse()), RecordType.A).addresses).toEqual(["192.0.2.2", "192.0.2.1"]);
  });

  it("lowers a negative answer's TTL to a shorter CNAME TTL on the way", () => {
    const message = response({
      name: "www.example.test",
      type: RecordType.AAAA,
      answers: [record(QUESTION_POINTER, RecordType.CNAME, 10, wireName("gone.example.test"))],
      authority: [record(wireName("example.test"), RecordType.SOA, 3600, soaData(600))],
      flags: 0x8183,
    });
    expect(parseAddressAnswer(message, RecordType.AAAA)).toEqual({ id: 0x4242, rcode: Rcode.NxDomain, addresses: [], ttlSeconds: 10 });
  });

  it("refuses a chain that loops", () => {
    const message = response({
      name: "www.example.test",
      type: RecordType.A,
      answers: [
        record(QUESTION_POINTER, RecordType.CNAME, 10, wireName("a.example.test")),
        record(wireName("a.example.test"), RecordType.CNAME, 10, wireName("WWW.example.test")),
      ],
    });
    expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/CNAME chain loops back to www.example.test/);
  });

  it("refuses a CNAME whose target does not fill its data", () => {
    const message = response({ name: "www.example.test", type: RecordType.A, answers: [record(QUESTION_POINTER, RecordType.CNAME, 10, [...wireName("a.test"), 0])] });
    expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/does not fill/);
  });
});

describe("parseAddressAnswer, negative TTLs", () => {
  const negative = (soaTtl: number, minimum: number, flags = 0x8183): AddressAnswer =>
    parseAddressAnswer(response({ flags, name: "x.example.test", type: RecordType.A, authority: [record(wireName("example.test"), RecordType.SOA, soaTtl, soaData(minimum))] }), RecordType.A);

  it("takes the smaller of the SOA record's TTL and its MINIMUM (RFC 2308 section 5)", () => {
    expect(negative(60, 30).ttlSeconds).toBe(30);
    expect(negative(10, 30).ttlSeconds).toBe(10);
    expect(negative(60, 30, 0x8180).ttlSeconds).toBe(30);
  });

  it("gives no TTL for a negative answer without an SOA", () => {
    expect(parseAddressAnswer(response({ flags: 0x8183, name: "x.example.test", type: RecordType.A }), RecordType.A)).toEqual({ id: 0x4242, rcode: 3, addresses: [], ttlSeconds: undefined });
  });

  it("gives no TTL for SERVFAIL, even with an SOA", () => {
    expect(negative(60, 30, 0x8182)).toEqual({ id: 0x4242, rcode: Rcode.ServFail, addresses: [], ttlSeconds: undefined });
  });

  it("reads a TTL with the top bit set as zero (RFC 2181 section 8)", () => {
    const message = response({ name: "x.example.test", type: RecordType.A, answers: [record(QUESTION_POINTER, RecordType.A, 0x80000000, [192, 0, 2, 1])] });
    expect(parseAddressAnswer(message, RecordType.A).ttlSeconds).toBe(0);
  });

  it("refuses an SOA whose data is not two names and five numbers", () => {
    const message = response({ flags: 0x8183, name: "x.example.test", type: RecordType.A, authority: [record(wireName("example.test"), RecordType.SOA, 60, soaData(30).slice(0, -1))] });
    expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/authority 1 SOA/);
  });
});

describe("parseAddressAnswer, malformed messages", () => {
  const stubAnswers: [string, Uint8Array, 1 | 28][] = [
    ["an A answer", answerQuery(encodeAddressQuery(KNOWN_NAME, RecordType.A, 7)), RecordType.A],
    ["an AAAA answer", answerQuery(encodeAddressQuery(CLOUDFLARE_HOSTED_V6_NAME, RecordType.AAAA, 7)), RecordType.AAAA],
    ["an NXDOMAIN with an SOA", answerQuery(encodeAddressQuery("nowhere.edgesocks.test", RecordType.A, 7)), RecordType.A],
    ["a CNAME chain", cnameChain(), RecordType.A],
  ];

  it.each(stubAnswers)("refuses %s cut at every offset with a DnsWireError", (_what, message, type) => {
    expect(() => parseAddressAnswer(message, type)).not.toThrow();
    for (let length = 0; length < message.byteLength; length++) {
      expect(() => parseAddressAnswer(message.subarray(0, length), type), `cut at ${length}`).toThrow(DnsWireError);
    }
  });

  it("refuses a query", () => {
    expect(wireError(() => parseAddressAnswer(encodeAddressQuery("example.com", RecordType.A, 1), RecordType.A)).message).toMatch(/is a query, not a response/);
  });

  it("refuses an answer to a question of another type", () => {
    expect(wireError(() => parseAddressAnswer(answerQuery(encodeAddressQuery(KNOWN_NAME, RecordType.A, 1)), RecordType.AAAA)).message).toMatch(/question is for type 1, not 28/);
  });

  it("refuses a response with an opcode other than QUERY", () => {
    expect(wireError(() => parseAddressAnswer(response({ flags: 0x8180 | (2 << 11), name: "a.test", type: 1 }), RecordType.A)).message).toMatch(/opcode 2/);
  });

  it("refuses an address record of the wrong size", () => {
    const message = response({ name: "a.test", type: RecordType.A, answers: [record(QUESTION_POINTER, RecordType.A, 60, [192, 0, 2, 1, 0])] });
    expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/answer 1 \(type 1\) has 5 bytes of data, not 4/);
  });

  it("refuses the extended label types 0x40 and 0x80", () => {
    for (const kind of [0x40, 0x80]) {
      const message = response({ name: "a.test", type: RecordType.A, answers: [record([kind | 1, 0], RecordType.A, 60, [192, 0, 2, 1])] });
      expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/is not a label or a pointer/);
    }
  });

  it("refuses a compression pointer to itself, to a later byte, or back into the labels that led to it", () => {
    const header = [0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
    const selfLoop = Uint8Array.from([...header, 0xc0, 12, 0, 1, 0, 1]);
    const forward = Uint8Array.from([...header, 0xc0, 14, 0, 0, 1, 0, 1]);
    // Question: "a" then a pointer to byte 12, its own start: reading it again would never end.
    const labelLoop = Uint8Array.from([...header, 1, 0x61, 0xc0, 12, 0, 1, 0, 1]);
    for (const message of [selfLoop, forward, labelLoop]) {
      expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/compression pointer at byte \d+ points to byte \d+, not back before its name/);
    }
  });

  it("refuses two pointers that point to each other", () => {
    // Two pointers at scratch+0 and scratch+2, each to the other; the owner enters at +2.
    const message = withScratch((base) => [...pointerTo(base + 2), ...pointerTo(base)], (base) => base + 2);
    expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/answer 2 name: compression pointer at byte \d+ points to byte \d+, not back/);
  });

  it("refuses a name longer than 255 bytes made of labels chained by pointers", () => {
    // 60 segments of one 4-byte label each, every one pointing back to the one before: 300 bytes.
    const segmentBytes = 7;
    const message = withScratch(
      (base) => Array.from({ length: 60 }, (_unused, index) => [4, 0x61, 0x62, 0x63, 0x64, ...(index === 0 ? [0, 0] : pointerTo(base + (index - 1) * segmentBytes))]).flat(),
      (base) => base + 59 * segmentBytes,
    );
    expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/answer 2 name is longer than 255 bytes/);
  });

  it("refuses a name that follows more than 127 pointers", () => {
    // A root name, then 200 pointers each to the one before it.
    const message = withScratch(
      (base) => [0, ...Array.from({ length: 200 }, (_unused, index) => pointerTo(index === 0 ? base : base + 1 + (index - 1) * 2)).flat()],
      (base) => base + 1 + 199 * 2,
    );
    expect(wireError(() => parseAddressAnswer(message, RecordType.A)).message).toMatch(/more than 127 compression pointers/);
  });

  it("reads a name that uses a pointer chain within the bounds", () => {
    const message = withScratch(() => [1, 0x62, ...pointerTo(12)], (base) => base);
    expect(parseAddressAnswer(message, RecordType.A).addresses).toEqual([]);
  });
});

/**
 * A response for "a" whose first answer, of an unknown type, carries `scratch` as its data (so
 * bytes there are inside the message but outside any name), and whose second answer is an A
 * record owned by the name at `owner(base)`. `base` is the scratch's offset in the message.
 */
function withScratch(scratch: (base: number) => number[], owner: (base: number) => number): Uint8Array {
  const base = 31;
  const data = scratch(base);
  const ownerAt = owner(base);
  const bytes = [0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1];
  bytes.push(0xc0, 12, 0, 99, 0, 1, 0, 0, 0, 60, ...u16(data.length));
  if (bytes.length !== base) throw new Error("withScratch layout is off");
  bytes.push(...data, ...pointerTo(ownerAt), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1);
  return Uint8Array.from(bytes);
}

// ---- fuzz -----------------------------------------------------------------------------------

/** xorshift32: the same "random" bytes on every run, so a failure reproduces. */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 0x100000000;
  };
}

/** Runs the parser on `message`; fails the test on anything but a value or a DnsWireError, or on a slow call. */
function survives(message: Uint8Array, type: 1 | 28): void {
  const started = performance.now();
  try {
    parseAddressAnswer(message, type);
  } catch (error) {
    if (!(error instanceof DnsWireError)) throw new Error(`threw ${String(error)} for ${Buffer.from(message).toString("hex")}`);
  }
  const elapsedMs = performance.now() - started;
  if (elapsedMs > 250) throw new Error(`took ${elapsedMs.toFixed(0)} ms for a ${message.byteLength}-byte message`);
}

describe("parseAddressAnswer, fuzzed", () => {
  const seeds = [
    answerQuery(encodeAddressQuery(KNOWN_NAME, RecordType.A, 7)),
    answerQuery(encodeAddressQuery(CLOUDFLARE_HOSTED_V6_NAME, RecordType.AAAA, 7)),
    answerQuery(encodeAddressQuery("nowhere.edgesocks.test", RecordType.A, 7)),
    cnameChain(),
  ];

  it("never throws anything but DnsWireError for random bytes, and returns promptly", () => {
    const next = random(0x5eed);
    for (let round = 0; round < 20_000; round++) {
      const message = new Uint8Array(Math.floor(next() * 300));
      for (let index = 0; index < message.length; index++) message[index] = Math.floor(next() * 256);
      // Most random headers are queries; make half of them responses so the parser goes deeper.
      if (message.length > 2 && round % 2 === 0) message[2] = ((message[2] ?? 0) | 0x80) & 0x87;
      survives(message, round % 3 === 0 ? RecordType.AAAA : RecordType.A);
    }
  });

  it("never throws anything but DnsWireError for mutated answers, and returns promptly", () => {
    const next = random(0xd05);
    for (let round = 0; round < 20_000; round++) {
      const seed = seeds[round % seeds.length] ?? new Uint8Array(0);
      const message = Uint8Array.from(seed);
      const edits = 1 + Math.floor(next() * 4);
      for (let edit = 0; edit < edits; edit++) {
        const at = Math.floor(next() * message.length);
        const choice = next();
        if (choice < 0.4) message[at] = Math.floor(next() * 256);
        else if (choice < 0.7) message[at] = 0xc0 | Math.floor(next() * 4); // a pointer, often to itself or later
        else if (choice < 0.85) message[4 + Math.floor(next() * 8)] = 0xff; // a count far past the data
        else message[at] = (message[at] ?? 0) ^ (1 << Math.floor(next() * 8));
      }
      const cut = next() < 0.2 ? message.subarray(0, Math.floor(next() * message.length)) : message;
      survives(cut, seed === seeds[1] ? RecordType.AAAA : RecordType.A);
    }
  });

  /** A response of as many A records as fit in 65535 bytes, each owned by the name `owner(start of the record, start of the one before)` points to. */
  function largest(owner: (start: number, previous: number) => number): { message: Uint8Array; count: number } {
    const bytes: number[] = [0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, ...wireName("a.test"), 0, 1, 0, 1];
    let previous = 12;
    let count = 0;
    while (bytes.length + 16 <= 65535) {
      const start = bytes.length;
      bytes.push(...pointerTo(owner(start, previous)), ...u16(RecordType.A), 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, count & 0xff);
      previous = start;
      count++;
    }
    bytes.splice(6, 2, ...u16(count));
    return { message: Uint8Array.from(bytes), count };
  }

  it("reads a 65535-byte answer of 4000-odd A records promptly", () => {
    const { message, count } = largest(() => 12);
    const started = performance.now();
    expect(parseAddressAnswer(message, RecordType.A).addresses).toHaveLength(count);
    expect(performance.now() - started).toBeLessThan(250);
  });

  it("refuses promptly a 65535-byte answer whose names are one long chain of pointers", () => {
    const { message } = largest((_start, previous) => previous);
    survives(message, RecordType.A);
    expect(() => parseAddressAnswer(message, RecordType.A)).toThrow(/more than 127 compression pointers/);
  });
});
