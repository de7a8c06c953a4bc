// One stream end to end through connect(): OPEN, OPENED with the dial's outcome, DATA relayed
// byte-exact both ways, and END carried as a TCP half-close in each direction on its own.

import { afterEach, describe, expect, inject, it } from "vitest";
import {
  AddressType,
  DEFAULT_WINDOW_BYTES,
  FrameType,
  StreamStatus,
  encodeData,
  encodeEnd,
  encodeOpen,
} from "../../worker/protocol.ts";
import { SOURCE_BYTES, patternBytes } from "./pattern.ts";
import { closeAllTunnels, firstDifference, fromUtf8, loopback, openTunnel, utf8 } from "./tunnel-client.ts";

afterEach(closeAllTunnels);

describe("opening a stream", () => {
  it("answers OPENED Ok with the edge's default window and no reason", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open(loopback(inject("echoPort")));
    expect(opened).toEqual({ type: FrameType.Opened, status: StreamStatus.Ok, windowBytes: DEFAULT_WINDOW_BYTES, reason: "" });
  });

  it("answers OPENED ConnectionRefused with the runtime's reason when nothing listens", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open(loopback(inject("closedPort")));
    expect(opened.status).toBe(StreamStatus.ConnectionRefused);
    expect(opened.windowBytes).toBe(0);
    expect(opened.reason).toMatch(/cannot connect|refused/);
    // The stream is over: the edge sends nothing more for it and leaves the tunnel open.
    await tunnel.expectSilence(200);
  });

  it("answers OPENED NotAllowed for port 25 without dialing", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open(loopback(25));
    expect(opened).toEqual({
      type: FrameType.Opened,
      status: StreamStatus.NotAllowed,
      windowBytes: 0,
      reason: "Cloudflare Workers may not connect to port 25",
    });
    await tunnel.expectSilence(200);
  });

  it("resolves and dials a domain name (localhost)", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open({ type: AddressType.Domain, host: "localhost", port: inject("echoPort") });
    expect(opened.status).toBe(StreamStatus.Ok);
    tunnel.send(encodeData(utf8("by name")));
    expect(fromUtf8(await tunnel.readData(7))).toBe("by name");
  });
});

describe("relaying bytes", () => {
  it("echoes DATA byte-exact, then answers END with END once the destination sends FIN", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("echoPort")));
    tunnel.send(encodeData(utf8("hello, ")));
    tunnel.send(encodeData(utf8("edge")));
    expect(fromUtf8(await tunnel.readData(11))).toBe("hello, edge");
    // The echo server sends FIN only after ours: no END may come before we send one.
    await tunnel.expectSilence(100);
    tunnel.send(encodeEnd());
    await tunnel.expectFrame(FrameType.End);
    await tunnel.expectSilence(100);
  });

  it("echoes a 700 KiB upload sent as one DATA frame, content intact", async () => {
    const payload = patternBytes(700 * 1024);
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("echoPort")));
    tunnel.send(encodeData(payload));
    tunnel.send(encodeEnd());
    const echoed = await tunnel.readUntilEnd();
    expect(firstDifference(echoed, payload)).toBeUndefined();
  });

  it("delivers OPEN's early data to the destination before any DATA", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open(loopback(inject("echoPort")), DEFAULT_WINDOW_BYTES, utf8("early|"));
    expect(opened.status).toBe(StreamStatus.Ok);
    tunnel.send(encodeData(utf8("late")));
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe("early|late");
  });

  it("downloads a whole origin response and its FIN while the upload stays open", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("sourcePort")), 4 * 1024 * 1024);
    const downloaded = await tunnel.readUntilEnd();
    expect(firstDifference(downloaded, patternBytes(SOURCE_BYTES))).toBeUndefined();
    // Download has ended, upload has not: DATA is still ours to send, and then our END.
    tunnel.send(encodeData(utf8("after your FIN")));
    tunnel.send(encodeEnd());
    await tunnel.expectSilence(200);
  });
});

describe("half-close", () => {
  it("passes the agent's END on as FIN after every byte, while the reply still flows back", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("countThenReplyPort")));
    tunnel.send(encodeData(patternBytes(1000)));
    tunnel.send(encodeData(patternBytes(2345)));
    tunnel.send(encodeData(patternBytes(1)));
    // The server answers only at FIN: nothing comes back before our END.
    await tunnel.expectSilence(100);
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe("received 3346 bytes");
  });

  it("accepts END straight after OPEN, and sends FIN after the early data", async () => {
    const tunnel = await openTunnel();
    tunnel.send(encodeOpen(loopback(inject("countThenReplyPort")), DEFAULT_WINDOW_BYTES, utf8("xyz")));
    tunnel.send(encodeEnd());
    const opened = await tunnel.expectFrame(FrameType.Opened);
    expect(opened.status).toBe(StreamStatus.Ok);
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe("received 3 bytes");
  });
});
