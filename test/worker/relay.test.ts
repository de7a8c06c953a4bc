// One stream end to end through connect(): OPEN, OPENED with the dial's outcome, DATA relayed
// byte-exact both ways, and END carried as a TCP half-close in each direction on its own.

import { afterEach, beforeEach, describe, expect, inject, it, vi, type MockInstance } from "vitest";
import {
  AddressType,
  DEFAULT_WINDOW_BYTES,
  FrameType,
  StreamStatus,
  encodeData,
  encodeEnd,
  encodeOpen,
} from "../../worker/protocol/index.ts";
import { SOURCE_BYTES, patternBytes } from "./pattern.ts";
import { DEFAULT_WAIT_MS, closeAllTunnels, concatBytes, describeFrame, firstDifference, fromUtf8, loopback, openTunnel, utf8, type TunnelClient } from "./tunnel-client.ts";

// The edge runs in this isolate: its console.log lines (one per finished stream) are readable here.
let edgeLog: MockInstance<typeof console.log>;
beforeEach(() => {
  edgeLog = vi.spyOn(console, "log");
});
afterEach(() => {
  closeAllTunnels();
  vi.restoreAllMocks();
});

/** Resolves once the edge has logged a finished stream's line matching `line` (tunnel-session.ts logOutcome). */
async function edgeLogged(line: RegExp): Promise<void> {
  const deadline = Date.now() + DEFAULT_WAIT_MS;
  while (!edgeLog.mock.calls.some((call) => line.test(String(call[0])))) {
    if (Date.now() > deadline) throw new Error(`the edge logged no line matching ${line} within ${DEFAULT_WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Proves the tunnel's last stream is over and sent nothing after what the test read, without a
 * quiet period: once the edge has logged the stream's outcome (`finishedLine`) it can send
 * nothing more (TunnelSession lets only its current stream speak), so anything it sent is
 * already on the way, ahead of the OPENED of the next OPEN on the same tunnel. That OPENED must
 * be the very next frame, and the tunnel must still carry the new stream.
 */
async function expectNothingMoreThenNextStream(tunnel: TunnelClient, finishedLine: RegExp): Promise<void> {
  await edgeLogged(finishedLine);
  const opened = await tunnel.open(loopback(inject("echoPort")));
  expect(opened.status).toBe(StreamStatus.Ok);
  tunnel.send(encodeData(utf8("next stream")));
  expect(fromUtf8(await tunnel.readData(11))).toBe("next stream");
}

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
    await expectNothingMoreThenNextStream(tunnel, new RegExp(`^stream 127\\.0\\.0\\.1:${inject("closedPort")} not opened up=0B down=0B status=5 `));
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
    await expectNothingMoreThenNextStream(tunnel, /^stream 127\.0\.0\.1:25 not opened up=0B down=0B status=2 /);
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
    // The echo server sends FIN only after ours: no END may come before we send one. A later
    // echo, read as DATA, would have had to come after any such END.
    tunnel.send(encodeData(utf8("still open")));
    expect(fromUtf8(await tunnel.readData(10))).toBe("still open");
    tunnel.send(encodeEnd());
    await tunnel.expectFrame(FrameType.End);
    await expectNothingMoreThenNextStream(tunnel, new RegExp(`^stream 127\\.0\\.0\\.1:${inject("echoPort")} direct up=21B down=21B ok$`));
  });

  it("echoes a 700 KiB upload sent as one DATA frame, content intact", async () => {
    const payload = patternBytes(700 * 1024);
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("echoPort")));
    tunnel.send(encodeData(payload));
    tunnel.send(encodeEnd());
    // The edge may grant credit for the upload once it is written, before it has read our END
    // (a separate message): a WINDOW among the echo is allowed here, nothing else is.
    const chunks: Uint8Array[] = [];
    for (;;) {
      const frame = await tunnel.nextFrame();
      if (frame.type === FrameType.End) break;
      if (frame.type === FrameType.Window) continue;
      if (frame.type !== FrameType.Data) throw new Error(`expected DATA, WINDOW or END, got ${describeFrame(frame)}`);
      chunks.push(frame.payload);
    }
    expect(firstDifference(concatBytes(chunks), payload)).toBeUndefined();
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
    // Neither a RESET nor a close for DATA after the edge's END: the next stream is served.
    await expectNothingMoreThenNextStream(tunnel, new RegExp(`^stream 127\\.0\\.0\\.1:${inject("sourcePort")} direct up=14B down=${SOURCE_BYTES}B ok$`));
  });
});

describe("half-close", () => {
  it("passes the agent's END on as FIN after every byte, while the reply still flows back", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("countThenReplyPort")));
    tunnel.send(encodeData(patternBytes(1000)));
    tunnel.send(encodeData(patternBytes(2345)));
    tunnel.send(encodeData(patternBytes(1)));
    // The server answers only at FIN, and its count is of every byte before it: an END passed on
    // early, or any frame but DATA before the edge's END, fails the read below.
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
