// Property-based fuzzing of the wire codec (worker/protocol/codec.ts): every frame round-trips, every
// message decodeFrame accepts re-encodes to the same bytes, and random and mutated messages get a
// frame or a ProtocolError with a close code, nothing else, in bounded time.

import fc from "fast-check";
import { describe, expect } from "vitest";
import {
  CloseCode,
  FrameType,
  MAX_EARLY_DATA_BYTES,
  MAX_HEADER_OPEN_BYTES,
  MAX_WINDOW_BYTES,
  MIN_WINDOW_BYTES,
  ProtocolError,
  StreamStatus,
  dataFrameAround,
  decodeFrame,
  decodeHeaderOpen,
  encodeData,
  encodeEarly,
  encodeEnd,
  encodeGrow,
  encodeHeaderOpen,
  encodeOpen,
  encodeOpened,
  encodePing,
  encodePong,
  encodeReset,
  encodeWindow,
  formatIPv6,
  parseIPv4,
  parseIPv6,
  truncateUtf8,
  type Frame,
} from "../../../worker/protocol/index.ts";
import { destination, fuzzIt, hostileBytes, hostileText, ipv6Spelling, ipv6Words, outcomeOf, utf8Bytes, wellFormedText, wordsToBytes } from "./fuzz-support.ts";

/** Longest reason OPENED and RESET carry; longer ones are cut by the encoders. */
const MAX_REASON_BYTES = 256;
const CLOSE_CODES_OF_DECODING: readonly number[] = [CloseCode.MalformedFrame, CloseCode.FrameTooLarge];

const window = fc.integer({ min: MIN_WINDOW_BYTES, max: MAX_WINDOW_BYTES });
const anyStatus = fc.constantFrom(...Object.values(StreamStatus));
const failureStatus = fc.constantFrom(...Object.values(StreamStatus).filter((status) => status !== StreamStatus.Ok));
/** Reasons short and long: the long ones check the encoders' cut at MAX_REASON_BYTES. */
const reason = fc.oneof({ weight: 4, arbitrary: wellFormedText(40) }, { weight: 1, arbitrary: wellFormedText(300) });
const payload = fc.oneof({ weight: 6, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 256 }) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 70_000 }) });
const earlyData = fc.oneof({ weight: 6, arbitrary: fc.uint8Array({ maxLength: 256 }) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: MAX_EARLY_DATA_BYTES }) });

/** Every frame a peer may send, as decodeFrame gives it back (reasons already cut to size). */
const frame: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant(FrameType.Open), destination, windowBytes: window, earlyData }),
  fc.oneof(
    fc.record({ type: fc.constant(FrameType.Opened), status: fc.constant(StreamStatus.Ok), windowBytes: window, reason }),
    // A failed open's window field is free (OnCloudflare carries seconds in it).
    fc.record({ type: fc.constant(FrameType.Opened), status: failureStatus, windowBytes: fc.integer({ min: 0, max: 0xffffffff }), reason }),
  ),
  fc.record({ type: fc.constant(FrameType.Data), payload }),
  fc.record({ type: fc.constant(FrameType.Early), payload }),
  fc.record({ type: fc.constant(FrameType.Window), bytes: fc.integer({ min: 1, max: 0xffffffff }) }),
  fc.record({ type: fc.constant(FrameType.End) }),
  fc.record({ type: fc.constant(FrameType.Reset), status: failureStatus, reason }),
  fc.record({ type: fc.constant(FrameType.Grow), windowBytes: window }),
  fc.record({ type: fc.constant(FrameType.Ping), id: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record({ type: fc.constant(FrameType.Pong), id: fc.integer({ min: 0, max: 0xffffffff }) }),
);

function encodeFrame(value: Frame): Uint8Array {
  switch (value.type) {
    case FrameType.Open:
      return encodeOpen(value.destination, value.windowBytes, value.earlyData);
    case FrameType.Opened:
      return encodeOpened(value.status, value.windowBytes, value.reason);
    case FrameType.Data:
      return encodeData(value.payload);
    case FrameType.Early:
      return encodeEarly(value.payload);
    case FrameType.Window:
      return encodeWindow(value.bytes);
    case FrameType.End:
      return encodeEnd();
    case FrameType.Reset:
      return encodeReset(value.status, value.reason);
    case FrameType.Grow:
      return encodeGrow(value.windowBytes);
    case FrameType.Ping:
      return encodePing(value.id);
    case FrameType.Pong:
      return encodePong(value.id);
  }
}

/** What decodeFrame gives for an encoded `value`: the frame with its reason cut as the encoder cuts it. */
function asDecoded(value: Frame): Frame {
  if (value.type === FrameType.Opened || value.type === FrameType.Reset) return { ...value, reason: truncateUtf8(value.reason, MAX_REASON_BYTES) };
  return value;
}

const validMessage = frame.map(encodeFrame);

describe("decodeFrame (fuzz)", () => {
  fuzzIt("gives a frame or a ProtocolError with a close code for random and mutated messages", hostileBytes(validMessage), (message) => {
    const decoded = outcomeOf(ProtocolError, () => decodeFrame(message));
    if (!decoded.ok) expect(CLOSE_CODES_OF_DECODING).toContain(decoded.error.closeCode);
  });

  fuzzIt("decodes every encoded frame to the frame it was made from", frame, (value) => {
    expect(decodeFrame(encodeFrame(value))).toEqual(asDecoded(value));
  });

  fuzzIt("re-encodes every message it accepts to the same bytes", hostileBytes(validMessage), (message) => {
    const decoded = outcomeOf(ProtocolError, () => decodeFrame(message));
    if (!decoded.ok) return;
    const value = decoded.value;
    // The decoder does not bound a reason's length; the encoders cut it: only short ones re-encode whole.
    if ((value.type === FrameType.Opened || value.type === FrameType.Reset) && utf8Bytes(value.reason).byteLength > MAX_REASON_BYTES) return;
    expect(encodeFrame(value)).toEqual(Uint8Array.from(message));
  });

  fuzzIt(
    "joins DATA and EARLY payload pieces into the payload they make",
    fc.tuple(fc.array(fc.uint8Array({ maxLength: 64 }), { minLength: 1, maxLength: 8 }), fc.boolean()).filter(([pieces]) => pieces.some((piece) => piece.byteLength > 0)),
    ([pieces, early]) => {
      const joined = Uint8Array.from(pieces.flatMap((piece) => Array.from(piece)));
      const decoded = decodeFrame(early ? encodeEarly(pieces) : encodeData(pieces));
      expect(decoded).toEqual({ type: early ? FrameType.Early : FrameType.Data, payload: joined });
    },
  );

  fuzzIt("reads a DATA frame framed in place by dataFrameAround as its payload", fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 512 }), fc.integer({ min: 1, max: 16 })), ([bytes, offset]) => {
    const buffer = new Uint8Array(offset + bytes.byteLength);
    buffer.set(bytes, offset);
    expect(decodeFrame(dataFrameAround(buffer.subarray(offset)))).toEqual({ type: FrameType.Data, payload: bytes });
  });
});

describe("the OPEN in the upgrade header (fuzz)", () => {
  const headerOpen = fc
    .record({ destination, windowBytes: window, earlyData: fc.uint8Array({ maxLength: MAX_HEADER_OPEN_BYTES - 270 }) })
    .map((open) => ({ ...open, type: FrameType.Open }) as const);

  fuzzIt("decodes every encoded OPEN to the frame it was made from", headerOpen, (open) => {
    expect(decodeHeaderOpen(encodeHeaderOpen(encodeOpen(open.destination, open.windowBytes, open.earlyData)))).toEqual(open);
  });

  fuzzIt(
    "gives an OPEN or a ProtocolError for random and mutated header values",
    hostileText(headerOpen.map((open) => encodeHeaderOpen(encodeOpen(open.destination, open.windowBytes, open.earlyData.subarray(0, 32))))),
    (value) => {
      const decoded = outcomeOf(ProtocolError, () => decodeHeaderOpen(value));
      if (decoded.ok) expect(decoded.value.type).toBe(FrameType.Open);
      else expect(CLOSE_CODES_OF_DECODING).toContain(decoded.error.closeCode);
    },
  );
});

describe("address and text helpers (fuzz)", () => {
  fuzzIt("parseIPv6 reads formatIPv6's text back as the same 16 bytes", ipv6Words, (words) => {
    const bytes = wordsToBytes(words);
    expect(parseIPv6(formatIPv6(Uint8Array.from(bytes)))).toEqual(bytes);
  });

  fuzzIt("parseIPv6 reads every RFC 4291 spelling of an address as that address", ipv6Spelling, ({ canonical, text }) => {
    const bytes = parseIPv6(text);
    expect(bytes, text).toBeDefined();
    expect(formatIPv6(Uint8Array.from(bytes ?? []))).toBe(canonical);
  });

  fuzzIt("parseIPv4 and parseIPv6 never throw, and give 4 and 16 bytes when they accept", hostileText(fc.oneof(ipv6Spelling.map(({ text }) => text), fc.constant("192.0.2.1"))), (text) => {
    const v4 = parseIPv4(text);
    if (v4) expect(v4).toHaveLength(4);
    const v6 = parseIPv6(text);
    if (v6) {
      expect(v6).toHaveLength(16);
      expect(v6.every((value) => Number.isInteger(value) && value >= 0 && value <= 255)).toBe(true);
    }
  });

  fuzzIt("truncateUtf8 keeps at most the bytes asked for, cut on a character boundary", fc.tuple(wellFormedText(80), fc.integer({ min: 0, max: 200 })), ([text, maxBytes]) => {
    const cut = truncateUtf8(text, maxBytes);
    expect(utf8Bytes(cut).byteLength).toBeLessThanOrEqual(maxBytes);
    expect(text.startsWith(cut)).toBe(true);
    if (utf8Bytes(text).byteLength <= maxBytes) expect(cut).toBe(text);
  });
});
