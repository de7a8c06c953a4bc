// A stream's states at the edge (docs/protocol.md §4): frames in the wrong state close the
// tunnel with 4409, and after a stream ends, however it ends, the same WebSocket takes the next
// OPEN while frames still in flight for the old stream are dropped.

import { afterEach, describe, expect, inject, it } from "vitest";
import {
  AddressType,
  CloseCode,
  DEFAULT_WINDOW_BYTES,
  FrameType,
  MIN_WINDOW_BYTES,
  StreamStatus,
  encodeData,
  encodeEnd,
  encodeOpen,
  encodeOpened,
  encodeReset,
  encodeWindow,
  type Destination,
} from "../../worker/protocol/index.ts";
import { closeAllTunnels, fromUtf8, loopback, openTunnel, utf8, type TunnelClient } from "./tunnel-client.ts";

afterEach(closeAllTunnels);

/**
 * A destination still being dialed when the frame sent right behind its OPEN arrives: both
 * messages are already queued in-process, and the edge dispatches them before connect() can
 * finish its name lookup and TCP handshake (measured: 150 of 150 runs, by IP or by name).
 */
const dialedByName = (): Destination => ({ type: AddressType.Domain, host: "localhost", port: inject("echoPort") });

/** Frames an agent may still have in flight for a stream the edge has already finished. */
const STALE_FRAMES: Uint8Array[] = [
  encodeData(utf8("late bytes")),
  encodeWindow(4096),
  encodeEnd(),
  encodeReset(StreamStatus.GeneralFailure, "client closed the connection"),
];

/** Runs one full echo stream on the tunnel: OPEN, DATA, END both ways. */
async function echoStream(tunnel: TunnelClient, text: string): Promise<void> {
  const opened = await tunnel.open(loopback(inject("echoPort")));
  expect(opened.status).toBe(StreamStatus.Ok);
  tunnel.send(encodeData(utf8(text)));
  tunnel.send(encodeEnd());
  expect(fromUtf8(await tunnel.readUntilEnd())).toBe(text);
}

describe("frames in the wrong state", () => {
  it("closes 4409 on DATA sent behind OPEN, before OPENED (early bytes go in EARLY frames)", async () => {
    const tunnel = await openTunnel();
    tunnel.send(encodeOpen(dialedByName(), DEFAULT_WINDOW_BYTES));
    tunnel.send(encodeData(utf8("eager")));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "DATA before OPENED" });
  });

  it("closes 4409 on WINDOW sent behind OPEN, before OPENED", async () => {
    const tunnel = await openTunnel();
    tunnel.send(encodeOpen(dialedByName(), DEFAULT_WINDOW_BYTES));
    tunnel.send(encodeWindow(4096));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "WINDOW before OPENED" });
  });

  it("closes 4409 on OPEN while a stream is open", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("echoPort")));
    tunnel.send(encodeOpen(loopback(inject("echoPort")), DEFAULT_WINDOW_BYTES));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "OPEN while a stream is active" });
  });

  it("closes 4409 on OPEN while only the agent's direction has ended", async () => {
    const tunnel = await openTunnel();
    // The source's download never ends while we grant no credit: the stream stays open.
    await tunnel.open(loopback(inject("sourcePort")), MIN_WINDOW_BYTES);
    tunnel.send(encodeEnd());
    await tunnel.readData(MIN_WINDOW_BYTES);
    tunnel.send(encodeOpen(loopback(inject("echoPort")), DEFAULT_WINDOW_BYTES));
    expect((await tunnel.expectClose()).code).toBe(CloseCode.UnexpectedFrame);
  });

  it("closes 4409 on DATA after the agent's END", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("sourcePort")), MIN_WINDOW_BYTES);
    await tunnel.readData(MIN_WINDOW_BYTES);
    tunnel.send(encodeEnd());
    tunnel.send(encodeData(utf8("too late")));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "DATA after END" });
  });

  it("closes 4409 on a second END", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("sourcePort")), MIN_WINDOW_BYTES);
    await tunnel.readData(MIN_WINDOW_BYTES);
    tunnel.send(encodeEnd());
    tunnel.send(encodeEnd());
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "second END" });
  });

  it("closes 4409 on an OPENED sent to the edge", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("echoPort")));
    tunnel.send(encodeOpened(StreamStatus.Ok, DEFAULT_WINDOW_BYTES));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "OPENED is sent by the edge, not to it" });
  });

  it("closes 4400 on a malformed frame mid-stream", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("echoPort")));
    tunnel.send(Uint8Array.of(FrameType.End, 0));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "END carries no payload" });
  });
});

describe("one WebSocket, streams one after another", () => {
  it("runs a second stream to another destination after the first ended both ways", async () => {
    const tunnel = await openTunnel();
    await echoStream(tunnel, "first stream");
    const opened = await tunnel.open(loopback(inject("countThenReplyPort")));
    expect(opened.status).toBe(StreamStatus.Ok);
    tunnel.send(encodeData(utf8("second")));
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe("received 6 bytes");
  });

  it("drops the old stream's stale frames after END both ways, then takes the next OPEN", async () => {
    const tunnel = await openTunnel();
    await echoStream(tunnel, "one");
    // A WINDOW crossing our END is what a real agent sends here.
    for (const frame of STALE_FRAMES) tunnel.send(frame);
    await tunnel.expectSilence(200);
    await echoStream(tunnel, "two");
  });

  it("drops stale frames after the agent's RESET, then takes the next OPEN", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("sourcePort")), MIN_WINDOW_BYTES);
    await tunnel.readData(MIN_WINDOW_BYTES);
    tunnel.send(encodeReset(StreamStatus.GeneralFailure, "client closed the connection"));
    for (const frame of STALE_FRAMES) tunnel.send(frame);
    // The edge answers a RESET with nothing, and the old stream's bytes stop.
    await tunnel.expectSilence(300);
    await echoStream(tunnel, "after reset");
  });

  it("drops stale frames after a failed OPENED, then takes the next OPEN", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open(loopback(inject("closedPort")));
    expect(opened.status).toBe(StreamStatus.ConnectionRefused);
    for (const frame of STALE_FRAMES) tunnel.send(frame);
    await tunnel.expectSilence(200);
    await echoStream(tunnel, "after refusal");
  });

  it("sends no OPENED for a stream reset while dialing, and takes the next OPEN", async () => {
    const tunnel = await openTunnel();
    tunnel.send(encodeOpen(dialedByName(), DEFAULT_WINDOW_BYTES));
    tunnel.send(encodeReset(StreamStatus.GeneralFailure, "client went away"));
    await tunnel.expectSilence(200);
    await echoStream(tunnel, "next");
  });
});
