// Protocol v2 openings (docs/protocol.md §3): an OPEN carried in the upgrade request, early DATA
// sent behind an OPEN before OPENED, and pooled tunnels that wait longer for their first OPEN.

import { describe, expect, inject, it } from "vitest";
import { DEFAULT_OPEN_TIMEOUT_MS } from "../../worker/config.ts";
import {
  AddressType,
  CloseCode,
  DEFAULT_WINDOW_BYTES,
  FrameType,
  MAX_EARLY_DATA_BYTES,
  MAX_HEADER_OPEN_BYTES,
  OPEN_HEADER,
  POOLED_HEADER,
  StreamStatus,
  encodeData,
  encodeEarly,
  encodeEnd,
  encodeHeaderOpen,
  encodeOpen,
  type Destination,
} from "../../worker/protocol/index.ts";
import { fromUtf8, loopback, openTunnel, requestTunnel, tunnelHeaders, utf8 } from "./tunnel-client.ts";

const headerOpen = (destination: Destination, earlyData?: Uint8Array): Record<string, string> => ({
  [OPEN_HEADER]: encodeHeaderOpen(encodeOpen(destination, DEFAULT_WINDOW_BYTES, earlyData)),
});

/** A destination still being dialed when frames sent right behind the upgrade arrive (see lifecycle.test.ts). */
const dialedByName = (): Destination => ({ type: AddressType.Domain, host: "localhost", port: inject("echoPort") });

describe.concurrent("OPEN in the upgrade request", () => {
  it("dials at once: OPENED is the tunnel's first message, and early data reaches the destination", async ({ onTestFinished }) => {
    const tunnel = await openTunnel(undefined, headerOpen(loopback(inject("echoPort")), utf8("hello ")));
    onTestFinished(() => tunnel.close());
    const opened = await tunnel.expectFrame(FrameType.Opened);
    expect(opened).toMatchObject({ status: StreamStatus.Ok, windowBytes: DEFAULT_WINDOW_BYTES });
    tunnel.send(encodeData(utf8("edge")));
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe("hello edge");
  });

  it("answers OPENED with the failure when the destination refuses", async ({ onTestFinished }) => {
    const tunnel = await openTunnel(undefined, headerOpen(loopback(inject("closedPort"))));
    onTestFinished(() => tunnel.close());
    expect((await tunnel.expectFrame(FrameType.Opened)).status).toBe(StreamStatus.ConnectionRefused);
  });

  it("answers OPENED NotAllowed for port 25, decided before the 101 is returned", async ({ onTestFinished }) => {
    const tunnel = await openTunnel(undefined, headerOpen(loopback(25)));
    onTestFinished(() => tunnel.close());
    const opened = await tunnel.expectFrame(FrameType.Opened);
    expect(opened.status).toBe(StreamStatus.NotAllowed);
    expect(opened.reason).toContain("port 25");
  });

  it("takes an OPEN of exactly MAX_HEADER_OPEN_BYTES", async ({ onTestFinished }) => {
    const destination = loopback(inject("countThenReplyPort"));
    const earlyBytes = MAX_HEADER_OPEN_BYTES - encodeOpen(destination, DEFAULT_WINDOW_BYTES).byteLength;
    const tunnel = await openTunnel(undefined, headerOpen(destination, new Uint8Array(earlyBytes)));
    onTestFinished(() => tunnel.close());
    expect((await tunnel.expectFrame(FrameType.Opened)).status).toBe(StreamStatus.Ok);
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe(`received ${earlyBytes} bytes`);
  });

  it.each([
    ["not base64url", { [OPEN_HEADER]: "a+b/" }, `bad ${OPEN_HEADER}: ${OPEN_HEADER} is not base64url`],
    ["a DATA frame", { [OPEN_HEADER]: encodeHeaderOpen(encodeData(utf8("x"))) }, `bad ${OPEN_HEADER}: ${OPEN_HEADER} carries frame type 3, not OPEN`],
    ["an OPEN without its port", { [OPEN_HEADER]: encodeHeaderOpen(Uint8Array.of(FrameType.Open, AddressType.IPv4, 127, 0, 0, 1)) }, `bad ${OPEN_HEADER}: OPEN port and window is truncated`],
    ["too much", { [OPEN_HEADER]: "A".repeat(12_000) }, `bad ${OPEN_HEADER}: ${OPEN_HEADER} carries more than ${MAX_HEADER_OPEN_BYTES} bytes`],
    ["a pooled value other than 1", { [POOLED_HEADER]: "yes" }, `${POOLED_HEADER} must be 1`],
    ["both headers", { [POOLED_HEADER]: "1", [OPEN_HEADER]: encodeHeaderOpen(encodeOpen(loopback(9), DEFAULT_WINDOW_BYTES)) }, `${OPEN_HEADER} and ${POOLED_HEADER} exclude each other: a pooled tunnel waits for its OPEN`],
  ])("answers 400 for %s", async (_, headers, message) => {
    const response = await requestTunnel({ headers: tunnelHeaders(headers) });
    expect(response.status).toBe(400);
    expect(response.webSocket).toBeNull();
    expect(await response.text()).toBe(`${message}\n`);
  });
});

describe.concurrent("EARLY frames", () => {
  it("writes EARLY sent behind OPEN after the OPEN's own early data, in order, then DATA", async ({ onTestFinished }) => {
    const tunnel = await openTunnel();
    onTestFinished(() => tunnel.close());
    tunnel.send(encodeOpen(dialedByName(), DEFAULT_WINDOW_BYTES, utf8("one ")));
    tunnel.send(encodeEarly(utf8("two ")));
    tunnel.send(encodeEarly(utf8("three ")));
    expect((await tunnel.expectFrame(FrameType.Opened)).status).toBe(StreamStatus.Ok);
    tunnel.send(encodeData(utf8("four")));
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe("one two three four");
  });

  it("takes EARLY that arrives after OPENED left the edge, outside the window", async ({ onTestFinished }) => {
    // The agent sends EARLY until it sees OPENED, so some may cross it: none of it counts
    // against the window, and a full window of DATA may follow.
    const tunnel = await openTunnel();
    onTestFinished(() => tunnel.close());
    tunnel.send(encodeOpen(loopback(inject("countThenReplyPort")), DEFAULT_WINDOW_BYTES, new Uint8Array(MAX_EARLY_DATA_BYTES / 2)));
    expect((await tunnel.expectFrame(FrameType.Opened)).status).toBe(StreamStatus.Ok);
    tunnel.send(encodeEarly(new Uint8Array(MAX_EARLY_DATA_BYTES / 2)));
    tunnel.send(encodeData(new Uint8Array(DEFAULT_WINDOW_BYTES - 1)));
    tunnel.send(encodeData(new Uint8Array(1)));
    tunnel.send(encodeEnd());
    // The edge returns credit for the DATA only: WINDOW frames until the answer.
    let grantedBytes = 0;
    let frame = await tunnel.nextFrame();
    for (; frame.type === FrameType.Window; frame = await tunnel.nextFrame()) grantedBytes += frame.bytes;
    expect(frame.type).toBe(FrameType.Data);
    expect(fromUtf8((frame as { payload: Uint8Array }).payload)).toBe(`received ${MAX_EARLY_DATA_BYTES + DEFAULT_WINDOW_BYTES} bytes`);
    expect(grantedBytes).toBeLessThanOrEqual(DEFAULT_WINDOW_BYTES);
  });

  it("grants no credit back for EARLY bytes", async ({ onTestFinished }) => {
    const tunnel = await openTunnel();
    onTestFinished(() => tunnel.close());
    tunnel.send(encodeOpen(loopback(inject("countThenReplyPort")), DEFAULT_WINDOW_BYTES));
    const opened = await tunnel.expectFrame(FrameType.Opened);
    expect(opened.status).toBe(StreamStatus.Ok);
    // The edge returns credit once a quarter of its window has been delivered. EARLY bytes plus
    // DATA one byte short of that quarter: counted wrongly, the EARLY bytes would tip it over.
    const threshold = Math.floor(opened.windowBytes / 4);
    expect(threshold).toBeGreaterThan(MAX_EARLY_DATA_BYTES);
    tunnel.send(encodeEarly(new Uint8Array(MAX_EARLY_DATA_BYTES)));
    tunnel.send(encodeData(new Uint8Array(threshold - 1)));
    await tunnel.expectSilence(500);
    // One more DATA byte reaches the quarter: the credit returned is the DATA alone.
    tunnel.send(encodeData(new Uint8Array(1)));
    expect((await tunnel.expectFrame(FrameType.Window)).bytes).toBe(threshold);
  });

  it("closes 4429 when early bytes exceed MAX_EARLY_DATA_BYTES", async ({ onTestFinished }) => {
    const tunnel = await openTunnel();
    onTestFinished(() => tunnel.close());
    tunnel.send(encodeOpen(dialedByName(), DEFAULT_WINDOW_BYTES, new Uint8Array(MAX_EARLY_DATA_BYTES)));
    tunnel.send(encodeEarly(utf8("!")));
    expect(await tunnel.expectClose()).toEqual({
      code: CloseCode.WindowExceeded,
      reason: `agent sent ${MAX_EARLY_DATA_BYTES + 1} early bytes; at most ${MAX_EARLY_DATA_BYTES}`,
    });
  });

  it("counts EARLY after an OPEN in the upgrade against the same budget", async ({ onTestFinished }) => {
    const tunnel = await openTunnel(undefined, headerOpen(dialedByName(), new Uint8Array(4096)));
    onTestFinished(() => tunnel.close());
    tunnel.send(encodeEarly(new Uint8Array(MAX_EARLY_DATA_BYTES - 4096 + 1)));
    expect((await tunnel.expectClose()).code).toBe(CloseCode.WindowExceeded);
  });

  it.each([
    ["after DATA", [encodeData(utf8("x")), encodeEarly(utf8("y"))], "EARLY after DATA"],
    ["after END", [encodeEnd(), encodeEarly(utf8("y"))], "EARLY after END"],
  ])("closes 4409 on EARLY %s", async (_, frames, reason) => {
    const tunnel = await openTunnel();
    try {
      expect((await tunnel.open(loopback(inject("echoPort")))).status).toBe(StreamStatus.Ok);
      for (const frame of frames) tunnel.send(frame);
      // The echo may answer DATA before the close: skip to the close.
      expect(await tunnel.closed).toEqual({ code: CloseCode.UnexpectedFrame, reason });
    } finally {
      tunnel.close();
    }
  });
});

describe.concurrent("pooled tunnels", () => {
  it("stay open past the open timeout, then carry an OPEN", { timeout: 20_000 }, async ({ onTestFinished }) => {
    const tunnel = await openTunnel(undefined, { [POOLED_HEADER]: "1" });
    onTestFinished(() => tunnel.close());
    await tunnel.expectSilence(DEFAULT_OPEN_TIMEOUT_MS + 1_000);
    expect((await tunnel.open(loopback(inject("echoPort")), DEFAULT_WINDOW_BYTES, utf8("warm"))).status).toBe(StreamStatus.Ok);
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe("warm");
  });
});
