// Shared pieces of the property-based fuzz tests (test/unit/fuzz/*.fuzz.test.ts): how many runs
// each property gets, the per-run time budget, the "only the typed error" check, byte and text
// mutators, the incremental-parser checks, and arbitraries for the values the codecs carry.
//
// `npm test` runs every property DEFAULT_RUNS times; `npm run fuzz` sets EDGESOCKS_FUZZ_RUNS to
// run the same properties much longer. EDGESOCKS_FUZZ_SEED replays a run fast-check reported.

import { Script, createContext } from "node:vm";
import fc from "fast-check";
import { isDeepStrictEqual } from "node:util";
import { expect, it } from "vitest";
import { AddressType, MAX_DOMAIN_BYTES, formatIPv6, parseIPv4, parseIPv6, type Destination } from "../../../worker/protocol/index.ts";

/** Runs per property in `npm test`: enough to catch the easy cases while the fuzz files stay well under 10 s. */
const DEFAULT_RUNS = 200;

/** Runs per property: EDGESOCKS_FUZZ_RUNS when set (`npm run fuzz`), else DEFAULT_RUNS. */
export const FUZZ_RUNS = readCount("EDGESOCKS_FUZZ_RUNS") ?? DEFAULT_RUNS;
/** Seed for every property, to replay a failure fast-check reported; random when unset. */
const FUZZ_SEED = readCount("EDGESOCKS_FUZZ_SEED");

/**
 * Wall-clock budget of one run of a property (the parser calls in it, on inputs of at most
 * ~70 KB). Every parser here is linear: a run takes well under 10 ms, so only a loop or
 * super-linear work (a backtracking regex, a pointer chain) comes near this.
 */
export const RUN_BUDGET_MS = 1_000;

/** Vitest's per-test timeout: the default run count fits in seconds; a long fuzz run gets a day. */
const TEST_TIMEOUT_MS = FUZZ_RUNS > DEFAULT_RUNS ? 24 * 60 * 60 * 1000 : 60_000;

function readCount(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, not "${text}"`);
  return value;
}

// A vm timeout is the one way to stop synchronous JavaScript from inside the process: V8's
// watchdog terminates the running script, parser frames included, and try/catch cannot swallow it.
const budgetContext = createContext({ run: undefined as (() => void) | undefined });
const budgetScript = new Script("run()");

/** Calls `body`, failing with a clear error if it has not returned within RUN_BUDGET_MS. */
export function withinBudget(body: () => void): void {
  budgetContext.run = body;
  try {
    budgetScript.runInContext(budgetContext, { timeout: RUN_BUDGET_MS });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ERR_SCRIPT_EXECUTION_TIMEOUT") {
      throw new Error(`one run took over ${RUN_BUDGET_MS} ms: the code under test loops or does super-linear work`, { cause: error });
    }
    throw error;
  } finally {
    budgetContext.run = undefined;
  }
}

/**
 * Declares a vitest test that checks `predicate` on FUZZ_RUNS values of `arbitrary` (times
 * `runsScale`, for properties that are costly per run), each run within RUN_BUDGET_MS.
 */
export function fuzzIt<T>(name: string, arbitrary: fc.Arbitrary<T>, predicate: (value: T) => void, runsScale = 1): void {
  it(
    name,
    () => {
      const parameters: fc.Parameters<[T]> = { numRuns: Math.max(1, Math.round(FUZZ_RUNS * runsScale)) };
      if (FUZZ_SEED !== undefined) parameters.seed = FUZZ_SEED;
      fc.assert(
        fc.property(arbitrary, (value) => withinBudget(() => predicate(value))),
        parameters,
      );
    },
    TEST_TIMEOUT_MS,
  );
}

// ---- outcomes -------------------------------------------------------------------------------

/** What a parser did with one input: returned a value, or threw its typed error. */
export type Outcome<T, E> = { ok: true; value: T } | { ok: false; error: E };

/** An error class, whatever its constructor takes. */
type ErrorClass<E> = abstract new (...args: never[]) => E;

/**
 * Runs `call` and returns what it gave, or the `errorClass` error it threw. Anything else thrown
 * (a TypeError, a RangeError, another module's error) fails the property, naming what was thrown.
 */
export function outcomeOf<T, E extends Error>(errorClass: ErrorClass<E>, call: () => T): Outcome<T, E> {
  try {
    return { ok: true, value: call() };
  } catch (error) {
    if (error instanceof errorClass) return { ok: false, error };
    const what = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    throw new Error(`threw ${what}, where only ${errorClass.name} may be thrown`, { cause: error });
  }
}

/** The value `call` returns; fails the property (with the error's message) if it throws anything. */
export function accepted<T>(call: () => T): T {
  try {
    return call();
  } catch (error) {
    const what = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    throw new Error(`refused a valid input: ${what}`, { cause: error });
  }
}

/** A parse result of an incremental parser: a value and the bytes it used, or "incomplete". */
export type Incremental<T> = { value: T; bytesUsed: number } | "incomplete";

/**
 * Checks an incremental parser (one re-run on the whole buffer as bytes arrive, as the sessions
 * do) on `input` cut at every point: each prefix gives "incomplete" or exactly the outcome of
 * the whole input, so however a client's bytes are split into reads the answer is the same, and
 * the parser never decides before it has seen the bytes its decision rests on. An error is
 * compared by `errorCode` (the reply it carries: what reaches the client). Returns the whole
 * input's outcome.
 */
export function checkEveryPrefix<T, E extends Error>(
  errorClass: ErrorClass<E>,
  parse: (input: Uint8Array) => Incremental<T>,
  input: Uint8Array,
  errorCode: (error: E) => unknown,
): Outcome<Incremental<T>, E> {
  const whole = outcomeOf(errorClass, () => parse(input));
  for (let length = 0; length < input.byteLength; length++) {
    // A fresh copy: a parser must not read past the bytes it was given.
    const prefix = outcomeOf(errorClass, () => parse(input.slice(0, length)));
    if (prefix.ok && prefix.value === "incomplete") continue;
    if (prefix.ok !== whole.ok) {
      throw new Error(`the first ${length} bytes ${prefix.ok ? "parse" : "are refused"}, the whole ${input.byteLength} ${whole.ok ? "parse" : "are refused"}`);
    }
    if (prefix.ok && whole.ok) expect(prefix.value, `outcome of the first ${length} of ${input.byteLength} bytes`).toEqual(whole.value);
    if (!prefix.ok && !whole.ok) expect(errorCode(prefix.error), `error of the first ${length} of ${input.byteLength} bytes`).toEqual(errorCode(whole.error));
  }
  return whole;
}

/**
 * Feeds `chunks` to `parse` the way the agent's sessions do (append each read to a buffer, parse
 * the buffer, stop at the first answer) and returns that answer, or "incomplete".
 */
export function feedChunks<T>(parse: (buffered: Uint8Array) => Incremental<T>, chunks: readonly Uint8Array[]): Incremental<T> {
  let buffered = new Uint8Array(0);
  for (const chunk of chunks) {
    const joined = new Uint8Array(buffered.byteLength + chunk.byteLength);
    joined.set(buffered);
    joined.set(chunk, buffered.byteLength);
    buffered = joined;
    const result = parse(buffered);
    if (result !== "incomplete") return result;
  }
  return "incomplete";
}

/** `bytes` cut into pieces at the given points (taken modulo its length, sorted, deduplicated). */
export function splitAt(bytes: Uint8Array, points: readonly number[]): Uint8Array[] {
  const cuts = [...new Set(points.map((point) => (bytes.byteLength === 0 ? 0 : point % (bytes.byteLength + 1))))].sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.byteLength]) {
    pieces.push(bytes.slice(start, cut));
    start = cut;
  }
  return pieces;
}

/** Whether two values are structurally equal (for properties that compare without expect). */
export function sameValue(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b);
}

// ---- mutators -------------------------------------------------------------------------------

/** Bytes at the edges of the fields these codecs read: lengths, versions, types, UTF-8 lead bytes, separators. */
const interestingByte = fc.oneof(
  fc.constantFrom(0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0a, 0x0d, 0x20, 0x2e, 0x3a, 0x7f, 0x80, 0xbf, 0xc0, 0xc3, 0xe0, 0xef, 0xf0, 0xfe, 0xff),
  fc.integer({ min: 0, max: 255 }),
);

type ByteMutation =
  | { kind: "set"; at: number; byte: number }
  | { kind: "flip"; at: number; bit: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "delete"; at: number; count: number }
  | { kind: "truncate"; at: number }
  | { kind: "repeat"; at: number; count: number };

const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  fc.record({ kind: fc.constant("set" as const), at: fc.nat(), byte: interestingByte }),
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("repeat" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 32 }) }),
);

function applyByteMutation(bytes: Uint8Array, mutation: ByteMutation): Uint8Array {
  const at = bytes.byteLength === 0 ? 0 : mutation.at % bytes.byteLength;
  const copy = Uint8Array.from(bytes);
  switch (mutation.kind) {
    case "set":
      if (copy.byteLength > 0) copy[at] = mutation.byte;
      return copy;
    case "flip":
      if (copy.byteLength > 0) copy[at] = (copy[at] ?? 0) ^ (1 << mutation.bit);
      return copy;
    case "insert":
      return Uint8Array.from([...copy.subarray(0, at), ...mutation.bytes, ...copy.subarray(at)]);
    case "delete":
      return Uint8Array.from([...copy.subarray(0, at), ...copy.subarray(at + mutation.count)]);
    case "truncate":
      return copy.slice(0, at);
    case "repeat": {
      const piece = copy.subarray(at, at + mutation.count);
      return Uint8Array.from([...copy.subarray(0, at), ...piece, ...piece, ...copy.subarray(at + piece.byteLength)]);
    }
  }
}

/** Valid inputs with one to four mutations applied: the inputs most likely to reach deep into a parser. */
export function mutatedBytes(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(valid, fc.array(byteMutation, { minLength: 1, maxLength: 4 }))
    .map(([bytes, mutations]) => mutations.reduce(applyByteMutation, bytes));
}

/** What a hostile peer sends: random bytes, valid messages, and mutated valid messages. */
export function hostileBytes(valid: fc.Arbitrary<Uint8Array>, maxRandomBytes = 600): fc.Arbitrary<Uint8Array> {
  return fc.oneof(fc.uint8Array({ maxLength: maxRandomBytes }), valid, mutatedBytes(valid), mutatedBytes(valid));
}

/** Characters at the edges of the text formats here: separators, brackets, escapes, controls, a BOM, a lone surrogate. */
const interestingChar = fc.constantFrom(
  ":", "/", "@", "[", "]", "%", ".", ",", "=", "-", "_", "#", "?", " ", "\t", "\n", "\r", "\0", '"', "\\", "{", "}",
  "0", "9", "a", "Z", "\u00e9", "\u0130", "\ufeff", "\ud800", "\u{1f600}", "%zz", "%c3", "%00", "::", "..",
);

type TextMutation =
  | { kind: "insert"; at: number; text: string }
  | { kind: "delete"; at: number; count: number }
  | { kind: "replace"; at: number; text: string }
  | { kind: "truncate"; at: number }
  | { kind: "repeat"; at: number; count: number };

const textMutation: fc.Arbitrary<TextMutation> = fc.oneof(
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), text: fc.oneof(interestingChar, fc.string({ maxLength: 4, unit: "binary" })) }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ kind: fc.constant("replace" as const), at: fc.nat(), text: interestingChar }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("repeat" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 300 }) }),
);

function applyTextMutation(text: string, mutation: TextMutation): string {
  const at = text.length === 0 ? 0 : mutation.at % text.length;
  switch (mutation.kind) {
    case "insert":
      return text.slice(0, at) + mutation.text + text.slice(at);
    case "delete":
      return text.slice(0, at) + text.slice(at + mutation.count);
    case "replace":
      return text.slice(0, at) + mutation.text + text.slice(at + 1);
    case "truncate":
      return text.slice(0, at);
    case "repeat":
      // Repeats one character many times: long runs are what make a backtracking regex slow.
      return text.slice(0, at) + text.slice(at, at + 1).repeat(mutation.count) + text.slice(at + 1);
  }
}

/** Valid texts with one to four character-level mutations. */
export function mutatedText(valid: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc
    .tuple(valid, fc.array(textMutation, { minLength: 1, maxLength: 4 }))
    .map(([text, mutations]) => mutations.reduce(applyTextMutation, text));
}

/** What a hostile or careless user writes: random text (any code unit), valid texts, and mutated ones. */
export function hostileText(valid: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.oneof(fc.string({ maxLength: 80, unit: "binary" }), fc.string({ maxLength: 80, unit: fc.constantFrom(...":/@[].%0a9-_ ,=") }), valid, mutatedText(valid), mutatedText(valid));
}

// ---- values the codecs carry ----------------------------------------------------------------

export const port = fc.integer({ min: 1, max: 65535 });
export const byte = fc.integer({ min: 0, max: 255 });

/** Dotted-quad IPv4 text, the form parseIPv4 accepts and every decoder gives. */
export const ipv4Host = fc.tuple(byte, byte, byte, byte).map((octets) => octets.join("."));

/** Eight 16-bit groups, zero half the time, so "::" runs of every length and place come up. */
export const ipv6Words = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff }), fc.constant(0xffff)), { minLength: 8, maxLength: 8 });

/** The 16 bytes of eight groups. */
export function wordsToBytes(words: readonly number[]): number[] {
  return words.flatMap((word) => [word >> 8, word & 0xff]);
}

/** IPv6 in RFC 5952 form, the form every decoder here gives. */
export const ipv6Host = ipv6Words.map((words) => formatIPv6(Uint8Array.from(wordsToBytes(words))));

/** An IPv6 address and some RFC 4291 spelling of it: upper case, leading zeros, any "::", an embedded IPv4 tail. */
export const ipv6Spelling: fc.Arbitrary<{ canonical: string; text: string }> = fc
  .tuple(ipv6Words, fc.constantFrom("canonical", "full", "upper", "padded", "dotted", "anyRun"), fc.nat())
  .map(([words, style, seed]) => {
    const canonical = formatIPv6(Uint8Array.from(wordsToBytes(words)));
    const hex = (list: readonly number[], pad: boolean) => list.map((word) => (pad ? word.toString(16).padStart(4, "0") : word.toString(16))).join(":");
    let text: string;
    switch (style) {
      case "canonical":
        text = canonical;
        break;
      case "full":
        text = hex(words, false);
        break;
      case "upper":
        text = canonical.toUpperCase();
        break;
      case "padded":
        text = hex(words, true);
        break;
      case "dotted": {
        const low = wordsToBytes(words.slice(6));
        text = `${hex(words.slice(0, 6), false)}:${low.join(".")}`;
        break;
      }
      case "anyRun": {
        // Compress some run of zero groups of length >= 1, not necessarily the longest one.
        const runs: [number, number][] = [];
        for (let start = 0; start < 8; start++) {
          for (let end = start + 1; end <= 8 && words[end - 1] === 0; end++) runs.push([start, end]);
        }
        const run = runs[seed % Math.max(1, runs.length)];
        text = run ? `${hex(words.slice(0, run[0]), false)}::${hex(words.slice(run[1]), false)}` : hex(words, false);
        break;
      }
    }
    return { canonical, text };
  });

const labelChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/** One DNS label as isPlausibleHostname takes it: letters, digits, "_", and "-" inside. */
const label = fc
  .tuple(
    fc.string({ minLength: 1, maxLength: 1, unit: fc.constantFrom(...`${labelChars}_`) }),
    fc.string({ maxLength: 20, unit: fc.constantFrom(...`${labelChars}_-`) }),
    fc.string({ minLength: 1, maxLength: 1, unit: fc.constantFrom(...`${labelChars}_`) }),
    fc.boolean(),
  )
  .map(([first, middle, last, short]) => (short ? first : `${first}${middle}${last}`));
/** A top-level label: starts with a letter, so no name is all digits and dots (an IPv4 attempt). */
const topLabel = fc.tuple(fc.constantFrom(..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"), fc.string({ maxLength: 10, unit: fc.constantFrom(...labelChars) })).map(([first, rest]) => first + rest);

/** A name a destination may carry: plausible, not an IP literal, at most MAX_DOMAIN_BYTES; mixed case. */
export const hostName: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.array(label, { maxLength: 4 }), topLabel).map(([labels, top]) => [...labels, top].join(".")) },
  // The longest names: exactly `length` characters, up to the one-length-byte limit.
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: MAX_DOMAIN_BYTES }).map((length) => {
      let name = "";
      while (name.length < length) name += name.length % 10 === 9 && name.length < length - 1 ? "." : "x";
      return name;
    }),
  },
);

/** A destination as the decoders give it back: canonical IP text, the name as sent. */
export const destination: fc.Arbitrary<Destination> = fc.oneof(
  fc.record({ type: fc.constant(AddressType.IPv4), host: ipv4Host, port }),
  fc.record({ type: fc.constant(AddressType.IPv6), host: ipv6Host, port }),
  fc.record({ type: fc.constant(AddressType.Domain), host: hostName, port }),
);

/** Whether `host` is an IP literal in any form parseIPv4 or parseIPv6 reads. */
export function isIpLiteral(host: string): boolean {
  return parseIPv4(host) !== undefined || parseIPv6(host) !== undefined;
}

/** Text without lone surrogates, so UTF-8 carries it unchanged (what an encoder is given). */
export const wellFormedText = (maxLength: number) => fc.string({ maxLength, unit: "binary" });

const utf8 = new TextEncoder();
/** Bytes of `text` in UTF-8. */
export function utf8Bytes(text: string): Uint8Array {
  return utf8.encode(text);
}
