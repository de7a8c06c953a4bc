// The wire codec of worker/protocol/codec.ts: every frame round-trips, every malformed message is
// refused with its close code, and the address and text helpers behave as docs/protocol.md says.

import { describe, expect, it } from "vitest";
import {
  AddressType,
  CloseCode,
  DATA_HEADER_BYTES,
  DEFAULT_WINDOW_BYTES,
  FrameType,
  MAX_DATA_BYTES,
  MAX_DOMAIN_BYTES,
  MAX_EARLY_DATA_BYTES,
  MAX_FRAME_BYTES,
  MAX_WINDOW_BYTES,
  MIN_WINDOW_BYTES,
  ProtocolError,
  StreamStatus,
  PROTOCOL_VERSIONS,
  SUBPROTOCOL,
  SUBPROTOCOLS,
  chooseVersion,
  statusForVersion,
  OPEN_HEADER,
  MAX_HEADER_OPEN_BYTES,
  POOLED_HEADER,
  POOLED_OPEN_TIMEOUT_MS,
  POOLED_MAX_IDLE_MS,
  encodeHeaderOpen,
  decodeHeaderOpen,
  encodeEarly,
  TUNNEL_PATH,
  closeReason,
  dataFrameAround,
  decodeFrame,
  encodeData,
  encodeEnd,
  encodeOpen,
  encodeOpened,
  encodeReset,
  encodeWindow,
  formatDestination,
  formatIPv6,
  isPlausibleHostname,
  parseIPv4,
  parseIPv6,
  truncateUtf8,
  type Destination,
  type ProtocolVersion,
} from "../../worker/protocol/index.ts";

const utf8 = new TextEncoder();
const FAILURE_STATUSES = Object.values(StreamStatus).filter((status) => status !== StreamStatus.Ok);

/** Concatenates byte values and byte arrays into one message. */
function bytes(...parts: Array<number | ArrayLike<number>>): Uint8Array {
  const flat: number[] = [];
  for (const part of parts) {
    if (typeof part === "number") flat.push(part);
    else flat.push(...Array.from(part));
  }
  return Uint8Array.from(flat);
}
const u16 = (value: number): number[] => [value >>> 8, value & 0xff];
const u32 = (value: number): number[] => [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];

/** The ProtocolError decodeFrame throws for `message`; fails the test if it decodes. */
function decodeError(message: Uint8Array, version?: ProtocolVersion): ProtocolError {
  try {
    decodeFrame(message, version);
  } catch (error) {
    expect(error).toBeInstanceOf(ProtocolError);
    return error as ProtocolError;
  }
  throw new Error(`decodeFrame accepted ${Array.from(message.subarray(0, 32)).join(",")}`);
}

function expectMalformed(message: Uint8Array, pattern: RegExp): void {
  const error = decodeError(message);
  expect(error.closeCode).toBe(CloseCode.MalformedFrame);
  expect(error.message).toMatch(pattern);
}

/** A copy of `message` that starts partway into a larger buffer, as a ws Buffer often does. */
function atOffset(message: Uint8Array, offset = 7): Uint8Array {
  const buffer = new Uint8Array(offset + message.byteLength + 5).fill(0xee);
  buffer.set(message, offset);
  return buffer.subarray(offset, offset + message.byteLength);
}

const ipv4Open = (tail: number[]): Uint8Array => bytes(FrameType.Open, AddressType.IPv4, [192, 0, 2, 1], tail);
const portAndWindow = (port: number, windowBytes: number): number[] => [...u16(port), ...u32(windowBytes)];

describe("wire constants", () => {
  it("negotiates the newest version both sides speak, and none when they share none", () => {
    expect(PROTOCOL_VERSIONS).toEqual([4, 3, 2]);
    expect(chooseVersion(["edgesocks.v2", "edgesocks.v3"])).toBe(3);
    expect(chooseVersion(["edgesocks.v2", "edgesocks.v4", "edgesocks.v3"])).toBe(4);
    expect(chooseVersion(["edgesocks.v2"])).toBe(2);
    expect(chooseVersion(["edgesocks.v5", "edgesocks.v1"])).toBeUndefined();
    expect(SUBPROTOCOLS).toEqual(["edgesocks.v4", "edgesocks.v3", "edgesocks.v2"]);
  });

  it("sends OnCloudflare to a v3 peer and NotAllowed to a v2 one, which cannot decode status 7", () => {
    expect(statusForVersion(StreamStatus.OnCloudflare, 3)).toBe(StreamStatus.OnCloudflare);
    expect(statusForVersion(StreamStatus.OnCloudflare, 2)).toBe(StreamStatus.NotAllowed);
    expect(statusForVersion(StreamStatus.HostUnreachable, 2)).toBe(StreamStatus.HostUnreachable);
  });

  it("match the numbers docs/protocol.md fixes for v4", () => {
    expect(SUBPROTOCOL).toBe("edgesocks.v4");
    expect(OPEN_HEADER).toBe("Edgesocks-Open");
    expect(MAX_HEADER_OPEN_BYTES).toBe(8192);
    expect(POOLED_HEADER).toBe("Edgesocks-Pooled");
    expect(POOLED_OPEN_TIMEOUT_MS).toBe(300_000);
    expect(POOLED_MAX_IDLE_MS).toBeLessThan(POOLED_OPEN_TIMEOUT_MS);
    expect(TUNNEL_PATH).toBe("/tunnel");
    expect(FrameType).toEqual({ Open: 1, Opened: 2, Data: 3, Window: 4, End: 5, Reset: 6, Early: 7, Grow: 8, Ping: 9, Pong: 10 });
    expect(AddressType).toEqual({ IPv4: 1, Domain: 3, IPv6: 4 });
    expect(Object.values(StreamStatus)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(CloseCode).toEqual({
      Normal: 1000,
      MalformedFrame: 4400,
      Timeout: 4408,
      UnexpectedFrame: 4409,
      FrameTooLarge: 4413,
      WindowExceeded: 4429,
      InternalError: 4500,
    });
    expect(MAX_FRAME_BYTES).toBe(1_048_576);
    expect(MAX_DATA_BYTES).toBe(MAX_FRAME_BYTES - 1);
    expect(MAX_EARLY_DATA_BYTES).toBe(65_536);
    expect(MIN_WINDOW_BYTES).toBe(16_384);
    expect(MAX_WINDOW_BYTES).toBe(67_108_864);
    expect(DEFAULT_WINDOW_BYTES).toBe(1_048_576);
    expect(MAX_DOMAIN_BYTES).toBe(255);
  });
});

describe("OPEN", () => {
  it("encodes the docs example example.com:443 byte for byte and decodes it back", () => {
    const destination: Destination = { type: AddressType.Domain, host: "example.com", port: 443 };
    const frame = encodeOpen(destination, DEFAULT_WINDOW_BYTES);
    expect(Array.from(frame)).toEqual([
      0x01, 0x03, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x01, 0xbb, 0x00, 0x10, 0x00, 0x00,
    ]);
    expect(decodeFrame(frame)).toEqual({ type: FrameType.Open, destination, windowBytes: DEFAULT_WINDOW_BYTES, earlyData: new Uint8Array(0) });
  });

  it("round-trips an IPv4 destination", () => {
    const destination: Destination = { type: AddressType.IPv4, host: "192.0.2.1", port: 8080 };
    const frame = encodeOpen(destination, MIN_WINDOW_BYTES);
    expect(Array.from(frame)).toEqual([FrameType.Open, AddressType.IPv4, 192, 0, 2, 1, ...portAndWindow(8080, MIN_WINDOW_BYTES)]);
    expect(decodeFrame(frame)).toEqual({ type: FrameType.Open, destination, windowBytes: MIN_WINDOW_BYTES, earlyData: new Uint8Array(0) });
  });

  it("round-trips an IPv6 destination, decoding to RFC 5952 text", () => {
    const frame = encodeOpen({ type: AddressType.IPv6, host: "2001:DB8:0:0:0:0:0:1", port: 65535 }, MAX_WINDOW_BYTES);
    expect(frame.byteLength).toBe(1 + 1 + 16 + 2 + 4);
    expect(Array.from(frame.subarray(2, 18))).toEqual([0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1]);
    expect(decodeFrame(frame)).toEqual({
      type: FrameType.Open,
      destination: { type: AddressType.IPv6, host: "2001:db8::1", port: 65535 },
      windowBytes: MAX_WINDOW_BYTES,
      earlyData: new Uint8Array(0),
    });
  });

  it("accepts a bracketed IPv6 host when encoding", () => {
    const frame = encodeOpen({ type: AddressType.IPv6, host: "[::1]", port: 1 }, MIN_WINDOW_BYTES);
    expect(decodeFrame(frame)).toMatchObject({ destination: { type: AddressType.IPv6, host: "::1", port: 1 } });
  });

  it("carries early data after the window, up to MAX_EARLY_DATA_BYTES", () => {
    const destination: Destination = { type: AddressType.Domain, host: "example.com", port: 80 };
    const request = utf8.encode("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    const small = decodeFrame(encodeOpen(destination, DEFAULT_WINDOW_BYTES, request));
    expect(small).toMatchObject({ type: FrameType.Open, destination, windowBytes: DEFAULT_WINDOW_BYTES });
    expect(Array.from((small as { earlyData: Uint8Array }).earlyData)).toEqual(Array.from(request));

    const largest = new Uint8Array(MAX_EARLY_DATA_BYTES).map((_, index) => index % 251);
    const decoded = decodeFrame(encodeOpen(destination, DEFAULT_WINDOW_BYTES, largest));
    expect(decoded.type).toBe(FrameType.Open);
    expect((decoded as { earlyData: Uint8Array }).earlyData).toEqual(largest);
  });

  it("round-trips a domain of exactly MAX_DOMAIN_BYTES", () => {
    const host = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(63)}`;
    expect(host.length).toBe(MAX_DOMAIN_BYTES);
    const frame = encodeOpen({ type: AddressType.Domain, host, port: 443 }, DEFAULT_WINDOW_BYTES);
    expect(frame[2]).toBe(MAX_DOMAIN_BYTES);
    expect(decodeFrame(frame)).toMatchObject({ destination: { type: AddressType.Domain, host, port: 443 } });
  });

  it("decodes a frame that sits partway into its buffer", () => {
    const frame = encodeOpen({ type: AddressType.Domain, host: "example.com", port: 443 }, DEFAULT_WINDOW_BYTES, Uint8Array.of(9, 8, 7));
    const decoded = decodeFrame(atOffset(frame));
    expect(decoded).toMatchObject({ destination: { host: "example.com", port: 443 }, windowBytes: DEFAULT_WINDOW_BYTES });
    expect(Array.from((decoded as { earlyData: Uint8Array }).earlyData)).toEqual([9, 8, 7]);
  });
});

describe("OPEN in the upgrade (OPEN_HEADER)", () => {
  const destination: Destination = { type: AddressType.Domain, host: "example.com", port: 443 };

  it("round-trips an OPEN with early data through base64url without padding", () => {
    const early = new Uint8Array(1000).map((_, index) => (index * 7) & 0xff);
    const frame = encodeOpen(destination, DEFAULT_WINDOW_BYTES, early);
    const value = encodeHeaderOpen(frame);
    expect(value).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeHeaderOpen(value)).toEqual({ type: FrameType.Open, destination, windowBytes: DEFAULT_WINDOW_BYTES, earlyData: early });
  });

  it("encodes bytes that need - and _ in base64url", () => {
    // Every byte value: base64 of it holds 62 and 63, "+" and "/" in plain base64.
    const early = new Uint8Array(256).map((_, index) => index);
    const value = encodeHeaderOpen(encodeOpen(destination, DEFAULT_WINDOW_BYTES, early));
    expect(value).toContain("-");
    expect(value).toContain("_");
    expect(value).not.toMatch(/[+/=]/);
    expect(decodeHeaderOpen(value).earlyData).toEqual(early);
  });

  it("refuses to encode an OPEN larger than MAX_HEADER_OPEN_BYTES", () => {
    const overhead = encodeOpen(destination, DEFAULT_WINDOW_BYTES).byteLength;
    expect(() => encodeHeaderOpen(encodeOpen(destination, DEFAULT_WINDOW_BYTES, new Uint8Array(MAX_HEADER_OPEN_BYTES - overhead)))).not.toThrow();
    expect(() => encodeHeaderOpen(encodeOpen(destination, DEFAULT_WINDOW_BYTES, new Uint8Array(MAX_HEADER_OPEN_BYTES - overhead + 1)))).toThrow(RangeError);
  });

  it.each([
    ["a character outside base64url", "AQMLZXhhbXBsZS5jb20Bu+AAAA", CloseCode.MalformedFrame, /not base64url/],
    ["padding", "AQ==", CloseCode.MalformedFrame, /not base64url/],
    ["a length no base64 has", "AQMLZ", CloseCode.MalformedFrame, /not base64url/],
    ["an empty value", "", CloseCode.MalformedFrame, /empty message/],
    ["a DATA frame", encodeHeaderOpen(encodeData(Uint8Array.of(1))), CloseCode.MalformedFrame, /carries frame type 3, not OPEN/],
    ["a truncated OPEN", encodeHeaderOpen(Uint8Array.of(FrameType.Open, AddressType.IPv4, 127, 0)), CloseCode.MalformedFrame, /truncated/],
    ["more than MAX_HEADER_OPEN_BYTES", "A".repeat(Math.ceil((MAX_HEADER_OPEN_BYTES * 4) / 3) + 4), CloseCode.FrameTooLarge, /more than 8192 bytes/],
  ])("refuses %s", (_, value, closeCode, pattern) => {
    let caught: unknown;
    try {
      decodeHeaderOpen(value);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ProtocolError);
    expect((caught as ProtocolError).closeCode).toBe(closeCode);
    expect((caught as ProtocolError).message).toMatch(pattern);
  });
});

describe("OPENED", () => {
  it("encodes the docs examples byte for byte", () => {
    expect(Array.from(encodeOpened(StreamStatus.Ok, DEFAULT_WINDOW_BYTES))).toEqual([0x02, 0x00, 0x00, 0x10, 0x00, 0x00]);
    expect(Array.from(encodeOpened(StreamStatus.ConnectionRefused, 0, "refused"))).toEqual([
      0x02, 0x05, 0x00, 0x00, 0x00, 0x00, 0x72, 0x65, 0x66, 0x75, 0x73, 0x65, 0x64,
    ]);
  });

  it("round-trips Ok with its window", () => {
    expect(decodeFrame(encodeOpened(StreamStatus.Ok, 123_456))).toEqual({
      type: FrameType.Opened,
      status: StreamStatus.Ok,
      windowBytes: 123_456,
      reason: "",
    });
  });

  it.each(FAILURE_STATUSES)("round-trips failure status %i with its reason and an unchecked window", (status) => {
    expect(decodeFrame(encodeOpened(status, 0, "dial failed: é€😀"))).toEqual({
      type: FrameType.Opened,
      status,
      windowBytes: 0,
      reason: "dial failed: é€😀",
    });
  });

  it("truncates a long reason to 256 bytes on a character boundary", () => {
    const frame = encodeOpened(StreamStatus.GeneralFailure, 0, "€".repeat(100));
    expect(frame.byteLength).toBe(6 + 255);
    expect(decodeFrame(frame)).toMatchObject({ reason: "€".repeat(85) });
  });

  it("decodes a frame that sits partway into its buffer", () => {
    expect(decodeFrame(atOffset(encodeOpened(StreamStatus.Ok, MIN_WINDOW_BYTES)))).toMatchObject({ windowBytes: MIN_WINDOW_BYTES });
  });
});

describe("DATA", () => {
  it("round-trips a payload behind one type byte", () => {
    const frame = encodeData(Uint8Array.of(1, 2, 3));
    expect(Array.from(frame)).toEqual([FrameType.Data, 1, 2, 3]);
    const decoded = decodeFrame(frame);
    expect(decoded.type).toBe(FrameType.Data);
    expect(Array.from((decoded as { payload: Uint8Array }).payload)).toEqual([1, 2, 3]);
  });

  it("EARLY has DATA's layout under its own type byte", () => {
    const frame = encodeEarly(Uint8Array.of(1, 2, 3));
    expect(Array.from(frame)).toEqual([FrameType.Early, 1, 2, 3]);
    expect(decodeFrame(frame)).toEqual({ type: FrameType.Early, payload: Uint8Array.of(1, 2, 3) });
    expect(() => encodeEarly(new Uint8Array(0))).toThrow(/EARLY payload is 0 bytes/);
  });

  it("round-trips the largest payload, filling MAX_FRAME_BYTES exactly", () => {
    const payload = new Uint8Array(MAX_DATA_BYTES).fill(0x5a);
    const frame = encodeData(payload);
    expect(frame.byteLength).toBe(MAX_FRAME_BYTES);
    expect((decodeFrame(frame) as { payload: Uint8Array }).payload.byteLength).toBe(MAX_DATA_BYTES);
  });

  it("dataFrameAround frames payload bytes in place, without a copy", () => {
    const buffer = new ArrayBuffer(DATA_HEADER_BYTES + 4);
    const payload = new Uint8Array(buffer, DATA_HEADER_BYTES, 4);
    payload.set([10, 20, 30, 40]);
    const frame = dataFrameAround(payload);
    expect(frame.buffer).toBe(buffer);
    expect(frame.byteOffset).toBe(0);
    expect(Array.from(frame)).toEqual([FrameType.Data, 10, 20, 30, 40]);
    expect(Array.from((decodeFrame(frame) as { payload: Uint8Array }).payload)).toEqual([10, 20, 30, 40]);
  });
});

describe("WINDOW, END and RESET", () => {
  it.each([1, 262_144, MAX_WINDOW_BYTES, 0xffffffff])("round-trips WINDOW %i", (grant) => {
    const frame = encodeWindow(grant);
    expect(Array.from(frame)).toEqual([FrameType.Window, ...u32(grant)]);
    expect(decodeFrame(frame)).toEqual({ type: FrameType.Window, bytes: grant });
    expect(decodeFrame(atOffset(frame, 3))).toEqual({ type: FrameType.Window, bytes: grant });
  });

  it("encodes the docs WINDOW example (256 KiB)", () => {
    expect(Array.from(encodeWindow(256 * 1024))).toEqual([0x04, 0x00, 0x04, 0x00, 0x00]);
  });

  it("round-trips END as a single byte", () => {
    expect(Array.from(encodeEnd())).toEqual([0x05]);
    expect(decodeFrame(encodeEnd())).toEqual({ type: FrameType.End });
  });

  it("encodes the docs RESET example byte for byte", () => {
    expect(Array.from(encodeReset(StreamStatus.GeneralFailure, "x"))).toEqual([0x06, 0x01, 0x78]);
  });

  it.each(FAILURE_STATUSES)("round-trips RESET with status %i, with and without a reason", (status) => {
    expect(decodeFrame(encodeReset(status))).toEqual({ type: FrameType.Reset, status, reason: "" });
    expect(decodeFrame(encodeReset(status, "client closed the connection"))).toEqual({
      type: FrameType.Reset,
      status,
      reason: "client closed the connection",
    });
  });

  it("truncates a long RESET reason to 256 bytes", () => {
    const frame = encodeReset(StreamStatus.GeneralFailure, "r".repeat(1000));
    expect(frame.byteLength).toBe(2 + 256);
  });
});

describe("decodeFrame refuses with 4413", () => {
  it("a message over MAX_FRAME_BYTES, whatever its type", () => {
    for (const type of [FrameType.Data, FrameType.Open, 0x7f]) {
      const message = new Uint8Array(MAX_FRAME_BYTES + 1);
      message[0] = type;
      const error = decodeError(message);
      expect(error.closeCode).toBe(CloseCode.FrameTooLarge);
      expect(error.message).toMatch(/1048577 bytes/);
    }
  });

  it("OPEN early data one byte over MAX_EARLY_DATA_BYTES", () => {
    const error = decodeError(ipv4Open([...portAndWindow(443, DEFAULT_WINDOW_BYTES), ...new Array(MAX_EARLY_DATA_BYTES + 1).fill(0)]));
    expect(error.closeCode).toBe(CloseCode.FrameTooLarge);
    expect(error.message).toMatch(/early data/);
  });
});

describe("decodeFrame refuses with 4400", () => {
  it("an empty message", () => {
    expectMalformed(new Uint8Array(0), /empty/);
  });

  it.each([0x00, 0x0b, 0x7f, 0xff])("unknown frame type %i", (type) => {
    expectMalformed(bytes(type, 0, 0, 0, 0), new RegExp(`unknown frame type 0x${type.toString(16).padStart(2, "0")}`));
  });

  it.each([
    [0x08, 3],
    [0x09, 3],
    [0x0a, 2],
  ] as const)("frame type %i on a tunnel of version %i, which predates it", (type, version) => {
    expect(decodeFrame(bytes(type, 0, 1, 0, 0))).toMatchObject({ type }); // known at v4
    expect(decodeError(bytes(type, 0, 1, 0, 0), version)).toMatchObject({ closeCode: CloseCode.MalformedFrame, message: `unknown frame type 0x${type.toString(16).padStart(2, "0")}` });
  });

  it.each([
    [bytes(FrameType.Grow, 0, 1, 0), /GROW must be exactly 5 bytes/],
    [bytes(FrameType.Ping, 0, 0, 0, 1, 0), /PING must be exactly 5 bytes/],
    [bytes(FrameType.Pong), /PONG must be exactly 5 bytes/],
    [bytes(FrameType.Grow, 0, 0, 0x3f, 0xff), /window 16383 is outside/],
    [bytes(FrameType.Grow, 0x04, 0, 0, 1), /window 67108865 is outside/],
  ])("a v4 frame of the wrong size or window: %j", (message, pattern) => {
    expectMalformed(message, pattern);
  });

  describe("OPEN", () => {
    it("with no address type", () => {
      expectMalformed(bytes(FrameType.Open), /no address/);
    });

    it.each([0x00, 0x02, 0x05, 0xff])("with address type %i", (addressType) => {
      expectMalformed(bytes(FrameType.Open, addressType, [1, 2, 3, 4], portAndWindow(443, DEFAULT_WINDOW_BYTES)), /address type .* unknown/);
    });

    it("with a truncated IPv4 address", () => {
      for (let length = 0; length < 4; length++) {
        expectMalformed(bytes(FrameType.Open, AddressType.IPv4, [1, 2, 3, 4].slice(0, length)), /IPv4 address is truncated/);
      }
    });

    it("with a truncated IPv6 address", () => {
      for (let length = 0; length < 16; length++) {
        expectMalformed(bytes(FrameType.Open, AddressType.IPv6, new Array(length).fill(1)), /IPv6 address is truncated/);
      }
    });

    it("with no domain length byte", () => {
      expectMalformed(bytes(FrameType.Open, AddressType.Domain), /domain length is truncated/);
    });

    it("with an empty domain name", () => {
      expectMalformed(bytes(FrameType.Open, AddressType.Domain, 0, portAndWindow(443, DEFAULT_WINDOW_BYTES)), /domain name is empty/);
    });

    it("with a domain shorter than its length byte", () => {
      expectMalformed(bytes(FrameType.Open, AddressType.Domain, 11, utf8.encode("example.co")), /domain name is truncated/);
    });

    it("with a domain that is not UTF-8", () => {
      expectMalformed(bytes(FrameType.Open, AddressType.Domain, 2, [0xc3, 0x28], portAndWindow(443, DEFAULT_WINDOW_BYTES)), /not UTF-8/);
    });

    it.each(["exa mple.com", "a/b", "-example.com", "example-", "a..b", ".", "host:80", "tab\there", "nul\0"])(
      "with a domain a host name cannot be: %j",
      (host) => {
        const name = utf8.encode(host);
        expectMalformed(
          bytes(FrameType.Open, AddressType.Domain, name.byteLength, name, portAndWindow(443, DEFAULT_WINDOW_BYTES)),
          /characters a host name cannot have/,
        );
      },
    );

    it("with the port or window cut short", () => {
      const full = portAndWindow(443, DEFAULT_WINDOW_BYTES);
      for (let length = 0; length < full.length; length++) {
        expectMalformed(ipv4Open(full.slice(0, length)), /port and window is truncated/);
      }
    });

    it("with port 0", () => {
      expectMalformed(ipv4Open(portAndWindow(0, DEFAULT_WINDOW_BYTES)), /port is 0/);
    });

    it.each([0, 1, MIN_WINDOW_BYTES - 1, MAX_WINDOW_BYTES + 1, 0xffffffff])("with window %i", (windowBytes) => {
      expectMalformed(ipv4Open(portAndWindow(443, windowBytes)), /window .* is outside 16384\.\.67108864/);
    });

    it("accepts the window bounds themselves", () => {
      expect(decodeFrame(ipv4Open(portAndWindow(443, MIN_WINDOW_BYTES)))).toMatchObject({ windowBytes: MIN_WINDOW_BYTES });
      expect(decodeFrame(ipv4Open(portAndWindow(443, MAX_WINDOW_BYTES)))).toMatchObject({ windowBytes: MAX_WINDOW_BYTES });
    });
  });

  describe("OPENED", () => {
    it("shorter than 6 bytes", () => {
      const full = bytes(FrameType.Opened, StreamStatus.Ok, u32(DEFAULT_WINDOW_BYTES));
      for (let length = 1; length < 6; length++) expectMalformed(full.subarray(0, length), /OPENED shorter than 6 bytes/);
    });

    it.each([0x08, 0x80, 0xff])("with unknown status %i", (status) => {
      expectMalformed(bytes(FrameType.Opened, status, u32(DEFAULT_WINDOW_BYTES)), /OPENED status \d+ is unknown/);
    });

    it.each([0, MIN_WINDOW_BYTES - 1, MAX_WINDOW_BYTES + 1])("with status Ok and window %i", (windowBytes) => {
      expectMalformed(bytes(FrameType.Opened, StreamStatus.Ok, u32(windowBytes)), /window .* is outside/);
    });

    it("with a reason that is not UTF-8", () => {
      expectMalformed(bytes(FrameType.Opened, StreamStatus.GeneralFailure, u32(0), [0x66, 0xff]), /OPENED reason is not UTF-8/);
    });
  });

  it("EARLY with no payload", () => {
    expectMalformed(bytes(FrameType.Early), /EARLY with no payload/);
  });

  it("DATA with no payload", () => {
    expectMalformed(bytes(FrameType.Data), /DATA with no payload/);
  });

  it.each([1, 2, 3, 4, 6, 9])("WINDOW of %i bytes", (length) => {
    const message = new Uint8Array(length).fill(1);
    message[0] = FrameType.Window;
    expectMalformed(message, /WINDOW must be exactly 5 bytes/);
  });

  it("WINDOW granting 0 bytes", () => {
    expectMalformed(bytes(FrameType.Window, u32(0)), /grants 0 bytes/);
  });

  it("END with a payload", () => {
    expectMalformed(bytes(FrameType.End, 0), /END carries no payload/);
  });

  describe("RESET", () => {
    it("with no status", () => {
      expectMalformed(bytes(FrameType.Reset), /RESET shorter than 2 bytes/);
    });

    it("with status Ok", () => {
      expectMalformed(bytes(FrameType.Reset, StreamStatus.Ok, utf8.encode("fine")), /status 0 \(Ok\)/);
    });

    it.each([0x08, 0xff])("with unknown status %i", (status) => {
      expectMalformed(bytes(FrameType.Reset, status), /RESET status \d+ is unknown/);
    });

    it("with a reason that is not UTF-8", () => {
      expectMalformed(bytes(FrameType.Reset, StreamStatus.GeneralFailure, [0xe2, 0x82]), /RESET reason is not UTF-8/);
    });
  });
});

describe("encoders throw RangeError for values outside the protocol", () => {
  const domain: Destination = { type: AddressType.Domain, host: "example.com", port: 443 };

  it.each([0, MIN_WINDOW_BYTES - 1, MAX_WINDOW_BYTES + 1, 16_384.5, Number.NaN])("encodeOpen with window %s", (windowBytes) => {
    expect(() => encodeOpen(domain, windowBytes)).toThrow(RangeError);
  });

  it("encodeOpen with early data over MAX_EARLY_DATA_BYTES", () => {
    expect(() => encodeOpen(domain, DEFAULT_WINDOW_BYTES, new Uint8Array(MAX_EARLY_DATA_BYTES + 1))).toThrow(/early data/);
  });

  it.each([0, -1, 65_536, 80.5])("encodeOpen with port %s", (port) => {
    expect(() => encodeOpen({ ...domain, port }, DEFAULT_WINDOW_BYTES)).toThrow(RangeError);
  });

  it.each<Destination>([
    { type: AddressType.IPv4, host: "256.0.0.1", port: 1 },
    { type: AddressType.IPv4, host: "example.com", port: 1 },
    { type: AddressType.IPv4, host: "::1", port: 1 },
    { type: AddressType.IPv6, host: "192.0.2.1", port: 1 },
    { type: AddressType.IPv6, host: "1::2::3", port: 1 },
    { type: AddressType.Domain, host: "", port: 1 },
    { type: AddressType.Domain, host: "a".repeat(MAX_DOMAIN_BYTES + 1), port: 1 },
    // 128 two-byte characters: 256 bytes, over the limit though only 128 characters long.
    { type: AddressType.Domain, host: "é".repeat(128), port: 1 },
  ])("encodeOpen with destination %j", (destination) => {
    expect(() => encodeOpen(destination, DEFAULT_WINDOW_BYTES)).toThrow(RangeError);
  });

  it("encodeData with an empty or oversized payload", () => {
    expect(() => encodeData(new Uint8Array(0))).toThrow(RangeError);
    expect(() => encodeData(new Uint8Array(MAX_DATA_BYTES + 1))).toThrow(RangeError);
  });

  it("dataFrameAround with no room for the header, an empty or an oversized payload", () => {
    expect(() => dataFrameAround(new Uint8Array(4))).toThrow(/no room for a header/);
    expect(() => dataFrameAround(new Uint8Array(new ArrayBuffer(4), 1, 0))).toThrow(RangeError);
    expect(() => dataFrameAround(new Uint8Array(new ArrayBuffer(MAX_DATA_BYTES + 2), 1))).toThrow(RangeError);
  });

  it.each([0, -1, 1.5, 2 ** 32, Number.NaN, Number.POSITIVE_INFINITY])("encodeWindow(%s)", (grant) => {
    expect(() => encodeWindow(grant)).toThrow(RangeError);
  });

  it("encodeReset with status Ok", () => {
    expect(() => encodeReset(StreamStatus.Ok, "fine")).toThrow(RangeError);
  });
});

describe("parseIPv4", () => {
  it.each([
    ["0.0.0.0", [0, 0, 0, 0]],
    ["192.0.2.1", [192, 0, 2, 1]],
    ["255.255.255.255", [255, 255, 255, 255]],
    ["10.0.10.100", [10, 0, 10, 100]],
  ])("parses %s", (text, octets) => {
    expect(parseIPv4(text)).toEqual(octets);
  });

  it.each(["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "01.2.3.4", "1.2.3.00", "1..3.4", "1.2.3.4.", " 1.2.3.4", "1.2.3.4 ", "+1.2.3.4", "1.2.3.-4", "1.2.3.0x4", "1e2.1.1.1", "a.b.c.d", "1000.1.1.1"])(
    "refuses %j",
    (text) => {
      expect(parseIPv4(text)).toBeUndefined();
    },
  );
});

describe("parseIPv6", () => {
  const zeros = new Array<number>(16).fill(0);
  const withTail = (...tail: number[]): number[] => [...zeros.slice(tail.length), ...tail];

  it.each([
    ["::", zeros],
    ["::1", withTail(1)],
    ["[::1]", withTail(1)],
    ["1::", [0, 1, ...zeros.slice(2)]],
    ["2001:db8::1", [0x20, 0x01, 0x0d, 0xb8, ...zeros.slice(4, 15), 1]],
    ["2001:DB8:0:0:0:0:0:1", [0x20, 0x01, 0x0d, 0xb8, ...zeros.slice(4, 15), 1]],
    ["1:2:3:4:5:6:7:8", [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]],
    ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", new Array<number>(16).fill(0xff)],
    ["::1:2:3:4:5:6:7", [0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7]],
    ["1:2:3:4:5:6:7::", [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0]],
    ["::ffff:192.0.2.1", withTail(0xff, 0xff, 192, 0, 2, 1)],
    ["::192.0.2.1", withTail(192, 0, 2, 1)],
    ["64:ff9b::192.0.2.1", [0, 0x64, 0xff, 0x9b, ...zeros.slice(4, 12), 192, 0, 2, 1]],
    ["1:2:3:4:5:6:192.0.2.1", [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 192, 0, 2, 1]],
  ])("parses %s", (text, expected) => {
    expect(parseIPv6(text)).toEqual(expected);
  });

  it.each([
    "",
    ":",
    ":::",
    "1:::2",
    "1::2::3",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7::8",
    ":1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8:",
    "12345::",
    "g::1",
    "fe80::1%eth0",
    "[::1",
    "::1]",
    "192.0.2.1",
    "::256.0.0.1",
    "::1.2.3",
    "::192.0.2.1:1",
    "1:2:3:4:5:6:7:192.0.2.1",
    // An embedded IPv4 address fills the low 32 bits (RFC 4291 section 2.2); it cannot precede "::".
    "192.0.2.1::",
    "192.0.2.1::5",
  ])("refuses %j", (text) => {
    expect(parseIPv6(text)).toBeUndefined();
  });
});

describe("formatIPv6", () => {
  const format = (text: string): string => {
    const parsed = parseIPv6(text);
    if (!parsed) throw new Error(`test address ${text} does not parse`);
    return formatIPv6(Uint8Array.from(parsed));
  };

  it.each([
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6"],
    // A single zero group is not shortened (RFC 5952 section 4.2.2).
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    // The longest run is shortened (4.2.3) ...
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    // ... and of equal runs, the first.
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:DB8:00AB:0:0:0:0:0", "2001:db8:ab::"],
    ["::ffff:192.0.2.1", "::ffff:c000:201"],
  ])("writes %s as %s", (text, expected) => {
    expect(format(text)).toBe(expected);
  });

  it("round-trips through parseIPv6", () => {
    for (const text of ["::", "::1", "1::", "2001:db8::1", "fe80::1:2", "1:0:0:2:0:0:0:3", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]) {
      const parsed = parseIPv6(text);
      expect(parsed).toBeDefined();
      expect(parseIPv6(formatIPv6(Uint8Array.from(parsed ?? [])))).toEqual(parsed);
    }
  });
});

describe("isPlausibleHostname and formatDestination", () => {
  it.each(["example.com", "example.com.", "a", "_dmarc.example.com", "xn--bcher-kva.example", "1.2.3.4", "localhost"])("accepts %j", (host) => {
    expect(isPlausibleHostname(host)).toBe(true);
  });

  it.each(["", ".", ".example.com", "-a", "a-", "a..b", "a b", "a/b", "a:80", "ä.example", "a\n"])("refuses %j", (host) => {
    expect(isPlausibleHostname(host)).toBe(false);
  });

  it("brackets IPv6 hosts only", () => {
    expect(formatDestination({ type: AddressType.IPv6, host: "2001:db8::1", port: 443 })).toBe("[2001:db8::1]:443");
    expect(formatDestination({ type: AddressType.IPv4, host: "192.0.2.1", port: 80 })).toBe("192.0.2.1:80");
    expect(formatDestination({ type: AddressType.Domain, host: "example.com", port: 8443 })).toBe("example.com:8443");
  });
});

describe("truncateUtf8", () => {
  const byteLength = (text: string): number => utf8.encode(text).byteLength;

  it("returns text within the limit unchanged", () => {
    expect(truncateUtf8("hello", 5)).toBe("hello");
    expect(truncateUtf8("€", 3)).toBe("€");
    expect(truncateUtf8("", 0)).toBe("");
  });

  it("cuts ASCII at exactly maxBytes", () => {
    expect(truncateUtf8("hello world", 5)).toBe("hello");
    expect(truncateUtf8("hello", 0)).toBe("");
  });

  it.each([
    ["aé", 2, "a"],
    ["€€", 5, "€"],
    ["€€", 3, "€"],
    ["€€", 2, ""],
    ["😀", 3, ""],
    ["a😀b", 4, "a"],
    ["a😀b", 5, "a😀"],
  ])("cuts %j at %i bytes to %j, never inside a character", (text, maxBytes, expected) => {
    expect(truncateUtf8(text, maxBytes)).toBe(expected);
  });

  it("returns the longest whole-character prefix for every limit", () => {
    const text = "aé€😀b€é😀";
    const characters = Array.from(text);
    for (let maxBytes = 0; maxBytes <= byteLength(text) + 1; maxBytes++) {
      let expected = "";
      for (const character of characters) {
        if (byteLength(expected + character) > maxBytes) break;
        expected += character;
      }
      expect(truncateUtf8(text, maxBytes)).toBe(expected);
    }
  });
});

describe("closeReason", () => {
  it("keeps a short reason as it is", () => {
    expect(closeReason("stream finished")).toBe("stream finished");
  });

  it("fits a long reason into the 123 bytes a close frame leaves", () => {
    expect(closeReason("x".repeat(500))).toBe("x".repeat(123));
    expect(closeReason("€".repeat(50))).toBe("€".repeat(41)); // 123 bytes exactly
    expect(closeReason("é".repeat(100))).toBe("é".repeat(61)); // 122 bytes: a 62nd would split
    expect(utf8.encode(closeReason("😀".repeat(40))).byteLength).toBe(120);
  });
});
