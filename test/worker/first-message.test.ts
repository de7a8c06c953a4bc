// What the edge does with a first message that is not a usable OPEN (docs/protocol.md §3
// "Decoding errors", §4): it closes the tunnel with the code that names the fault, and dials
// nothing.

import { afterEach, describe, expect, inject, it } from "vitest";
import {
  AddressType,
  CloseCode,
  FrameType,
  MAX_EARLY_DATA_BYTES,
  MAX_FRAME_BYTES,
  MIN_WINDOW_BYTES,
  StreamStatus,
  encodeData,
  encodeEnd,
  encodeOpen,
  encodeOpened,
  encodeReset,
  encodeWindow,
} from "../../worker/protocol/index.ts";
import { closeAllTunnels, loopback, openTunnel } from "./tunnel-client.ts";

afterEach(closeAllTunnels);

/** An OPEN for 127.0.0.1:port, built by hand so tests can break any field. */
function rawOpenIPv4(port: number, windowBytes: number, earlyData = new Uint8Array(0)): Uint8Array {
  const frame = new Uint8Array(12 + earlyData.byteLength);
  const view = new DataView(frame.buffer);
  frame.set([FrameType.Open, AddressType.IPv4, 127, 0, 0, 1]);
  view.setUint16(6, port);
  view.setUint32(8, windowBytes);
  frame.set(earlyData, 12);
  return frame;
}

describe("a first message that does not decode", () => {
  it("closes 4400 on a text message", async () => {
    const tunnel = await openTunnel();
    tunnel.send("OPEN 127.0.0.1:80");
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "text messages are not part of the protocol" });
  });

  it("closes 4400 on an empty binary message", async () => {
    const tunnel = await openTunnel();
    tunnel.send(new Uint8Array(0));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "empty message" });
  });

  it("closes 4400 on an unknown frame type", async () => {
    const tunnel = await openTunnel();
    tunnel.send(Uint8Array.of(0x0b, 0x00));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "unknown frame type 0x0b" });
  });

  it("closes 4400 on an OPEN cut inside its IPv4 address", async () => {
    const tunnel = await openTunnel();
    tunnel.send(Uint8Array.of(FrameType.Open, AddressType.IPv4, 127, 0));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "OPEN IPv4 address is truncated" });
  });

  it("closes 4400 on an OPEN cut inside its window field", async () => {
    const tunnel = await openTunnel();
    tunnel.send(rawOpenIPv4(inject("echoPort"), MIN_WINDOW_BYTES).subarray(0, 10));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "OPEN port and window is truncated" });
  });

  it("closes 4400 on an OPEN with no address at all", async () => {
    const tunnel = await openTunnel();
    tunnel.send(Uint8Array.of(FrameType.Open));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "OPEN has no address" });
  });

  it("closes 4400 on an unknown address type", async () => {
    const tunnel = await openTunnel();
    const frame = rawOpenIPv4(inject("echoPort"), MIN_WINDOW_BYTES);
    frame[1] = 0x02;
    tunnel.send(frame);
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "OPEN address type 0x02 is unknown" });
  });

  it("closes 4400 on a domain name a host name cannot be", async () => {
    const tunnel = await openTunnel();
    const name = new TextEncoder().encode("evil.test/path");
    const frame = new Uint8Array(3 + name.byteLength + 6);
    frame.set([FrameType.Open, AddressType.Domain, name.byteLength]);
    frame.set(name, 3);
    new DataView(frame.buffer).setUint16(3 + name.byteLength, 80);
    new DataView(frame.buffer).setUint32(5 + name.byteLength, MIN_WINDOW_BYTES);
    tunnel.send(frame);
    const close = await tunnel.expectClose();
    expect(close.code).toBe(CloseCode.MalformedFrame);
    expect(close.reason).toContain("host name");
  });

  it("closes 4400 on port 0", async () => {
    const tunnel = await openTunnel();
    tunnel.send(rawOpenIPv4(0, MIN_WINDOW_BYTES));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "OPEN port is 0" });
  });

  it("closes 4400 on a window below the protocol's minimum", async () => {
    const tunnel = await openTunnel();
    tunnel.send(rawOpenIPv4(inject("echoPort"), MIN_WINDOW_BYTES - 1));
    const close = await tunnel.expectClose();
    expect(close.code).toBe(CloseCode.MalformedFrame);
    expect(close.reason).toContain(`window ${MIN_WINDOW_BYTES - 1} is outside`);
  });

  it("closes 4413 on early data one byte over the limit", async () => {
    const tunnel = await openTunnel();
    tunnel.send(rawOpenIPv4(inject("echoPort"), MIN_WINDOW_BYTES, new Uint8Array(MAX_EARLY_DATA_BYTES + 1)));
    expect(await tunnel.expectClose()).toEqual({
      code: CloseCode.FrameTooLarge,
      reason: `OPEN early data is ${MAX_EARLY_DATA_BYTES + 1} bytes; at most ${MAX_EARLY_DATA_BYTES}`,
    });
  });

  it("closes 4413 on a message over MAX_FRAME_BYTES", async () => {
    const tunnel = await openTunnel();
    const frame = new Uint8Array(MAX_FRAME_BYTES + 1);
    frame[0] = FrameType.Data;
    tunnel.send(frame);
    expect(await tunnel.expectClose()).toEqual({
      code: CloseCode.FrameTooLarge,
      reason: `frame is ${MAX_FRAME_BYTES + 1} bytes; at most ${MAX_FRAME_BYTES}`,
    });
  });
});

describe("a well-formed first frame other than OPEN", () => {
  const notOpen: [string, Uint8Array][] = [
    ["DATA", encodeData(Uint8Array.of(1, 2, 3))],
    ["WINDOW", encodeWindow(MIN_WINDOW_BYTES)],
    ["END", encodeEnd()],
    ["RESET", encodeReset(StreamStatus.GeneralFailure, "bye")],
    ["OPENED", encodeOpened(StreamStatus.Ok, MIN_WINDOW_BYTES)],
  ];

  it.each(notOpen)("closes 4409 on %s before any OPEN", async (_name, frame) => {
    const tunnel = await openTunnel();
    tunnel.send(frame);
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: `frame type ${frame[0]} before OPEN` });
  });
});

describe("the edge's own limits at the boundary", () => {
  it("accepts early data of exactly MAX_EARLY_DATA_BYTES", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open(loopback(inject("countThenReplyPort")), MIN_WINDOW_BYTES, new Uint8Array(MAX_EARLY_DATA_BYTES));
    expect(opened.status).toBe(StreamStatus.Ok);
    tunnel.send(encodeEnd());
    const reply = new TextDecoder().decode(await tunnel.readUntilEnd());
    expect(reply).toBe(`received ${MAX_EARLY_DATA_BYTES} bytes`);
  });

  it("accepts an OPEN whose window is exactly MIN_WINDOW_BYTES", async () => {
    const tunnel = await openTunnel();
    tunnel.send(encodeOpen(loopback(inject("echoPort")), MIN_WINDOW_BYTES));
    const opened = await tunnel.expectFrame(FrameType.Opened);
    expect(opened.status).toBe(StreamStatus.Ok);
  });
});
