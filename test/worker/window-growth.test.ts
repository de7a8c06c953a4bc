// Protocol v4 at the edge (docs/protocol.md §5, "Windows that grow"): PING and PONG measure the
// tunnel's round trip, the edge grows its upload window with GROW while the agent's bytes come
// faster than the window allows per round trip, it uses the agent's GROW for the download only as
// far as its isolate's budget lets it hold the bytes, and a v3 tunnel sees none of it.

import { afterEach, describe, expect, inject, it } from "vitest";
import {
  CloseCode,
  DEFAULT_WINDOW_BYTES,
  FrameType,
  MAX_DATA_BYTES,
  MIN_WINDOW_BYTES,
  StreamStatus,
  encodeData,
  encodeGrow,
  encodePing,
  encodePong,
  encodeWindow,
  type Frame,
} from "../../worker/protocol/index.ts";
import { BUDGET_FLOOR_BYTES, creditBatchBytes } from "../../worker/protocol/flow-control.ts";
import { TEST_TOKEN, TunnelClient, closeAllTunnels, describeFrame, loopback, openTunnel } from "./tunnel-client.ts";

afterEach(closeAllTunnels);

/** What the PONG is held back by: a long link's round trip, as the edge will measure it. */
const ROUND_TRIP_MS = 80;
const V3 = { "Sec-WebSocket-Protocol": "edgesocks.v3" };

/** Opens a stream to the echo origin with a download window the test never fills, and answers the edge's first PING after ROUND_TRIP_MS. */
async function openWithRoundTrip(tunnel: TunnelClient): Promise<void> {
  tunnel.pings = "show";
  const opened = await tunnel.open(loopback(inject("echoPort")), 64 * 1024 * 1024);
  expect(opened).toMatchObject({ status: StreamStatus.Ok, windowBytes: DEFAULT_WINDOW_BYTES });
  const ping = await tunnel.expectFrame(FrameType.Ping);
  await new Promise((resolve) => setTimeout(resolve, ROUND_TRIP_MS));
  tunnel.send(encodePong(ping.id));
}

/** Sends `byteCount` upload bytes in full-size DATA frames. */
function upload(tunnel: TunnelClient, byteCount: number): void {
  for (let sent = 0; sent < byteCount; ) {
    const size = Math.min(MAX_DATA_BYTES, byteCount - sent, 256 * 1024);
    tunnel.send(encodeData(new Uint8Array(size).fill(0x61)));
    sent += size;
  }
}

/** Reads frames until one the predicate takes, skipping the echo's DATA and later PINGs; returns it and every WINDOW seen before it. */
async function frameWhere(tunnel: TunnelClient, wanted: (frame: Frame) => boolean, timeoutMs?: number): Promise<{ frame: Frame; grantsBefore: number[] }> {
  const grantsBefore: number[] = [];
  for (;;) {
    const frame = await tunnel.nextFrame(timeoutMs);
    if (wanted(frame)) return { frame, grantsBefore };
    if (frame.type === FrameType.Window) grantsBefore.push(frame.bytes);
    else if (frame.type !== FrameType.Data && frame.type !== FrameType.Ping && frame.type !== FrameType.Grow) throw new Error(`unexpected ${describeFrame(frame)}`);
  }
}

describe("the round trip: PING and PONG", () => {
  it("answers an agent's PING with a PONG of the same id, with or without a stream", async () => {
    const tunnel = await openTunnel();
    tunnel.send(encodePing(0xfeedbeef));
    expect(await tunnel.nextFrame()).toEqual({ type: FrameType.Pong, id: 0xfeedbeef });
    await tunnel.open(loopback(inject("echoPort")));
    tunnel.send(encodePing(7));
    expect(await tunnel.nextFrame()).toEqual({ type: FrameType.Pong, id: 7 });
  });

  it("PINGs once a stream is open, and ignores a PONG for an id it did not send", async () => {
    const tunnel = await openTunnel();
    tunnel.pings = "show";
    await tunnel.open(loopback(inject("echoPort")));
    const ping = await tunnel.expectFrame(FrameType.Ping);
    tunnel.send(encodePong(ping.id + 1));
    tunnel.send(encodeData(Uint8Array.of(1, 2, 3)));
    expect(await tunnel.nextFrame()).toMatchObject({ type: FrameType.Data, payload: Uint8Array.of(1, 2, 3) });
  });
});

describe("upload: the edge grows its window (v4)", () => {
  it("sends GROW to twice the window, before a WINDOW, when a window's worth arrives within a few round trips", async () => {
    const tunnel = await openTunnel();
    await openWithRoundTrip(tunnel);
    upload(tunnel, DEFAULT_WINDOW_BYTES);
    const { frame, grantsBefore } = await frameWhere(tunnel, (candidate) => candidate.type === FrameType.Grow);
    expect(frame).toEqual({ type: FrameType.Grow, windowBytes: 2 * DEFAULT_WINDOW_BYTES });
    // GROW comes with the credit return that found the window too small, ahead of its WINDOW.
    const window = await tunnel.expectFrame(FrameType.Window);
    const returned = grantsBefore.reduce((total, bytes) => total + bytes, 0) + window.bytes;
    expect(returned).toBeLessThanOrEqual(DEFAULT_WINDOW_BYTES);
    // The grown window is ours to use: a window and a half more goes through without a 4429.
    upload(tunnel, returned + DEFAULT_WINDOW_BYTES);
    tunnel.send(encodePing(1));
    await frameWhere(tunnel, (candidate) => candidate.type === FrameType.Pong);
  });

  it("keeps the window when no PONG has told it the round trip", async () => {
    const tunnel = await openTunnel(); // the client drops PINGs: the edge has no round trip
    await tunnel.open(loopback(inject("echoPort")), 64 * 1024 * 1024);
    upload(tunnel, DEFAULT_WINDOW_BYTES);
    tunnel.send(encodePing(9));
    const { grantsBefore } = await frameWhere(tunnel, (candidate) => candidate.type === FrameType.Pong);
    expect(grantsBefore.length).toBeGreaterThan(0);
    // A GROW would come with a credit return, and the last of them follows the delivery by milliseconds.
    await expect(frameWhere(tunnel, (candidate) => candidate.type === FrameType.Grow, 300)).rejects.toThrow(/no message from the edge/);
  });

});

describe("download: the agent grows its window (v4)", () => {
  it("sends what GROW adds, and nothing beyond", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("sourcePort")), MIN_WINDOW_BYTES);
    await tunnel.readData(MIN_WINDOW_BYTES);
    await tunnel.expectSilence(200);
    tunnel.send(encodeGrow(4 * MIN_WINDOW_BYTES));
    await tunnel.readData(3 * MIN_WINDOW_BYTES);
    await tunnel.expectSilence(300);
    tunnel.send(encodeWindow(MIN_WINDOW_BYTES));
    await tunnel.readData(MIN_WINDOW_BYTES);
  });

  it.each([MIN_WINDOW_BYTES, MIN_WINDOW_BYTES * 2])("closes 4409 on a GROW that does not grow the 32768-byte window (to %i)", async (windowBytes) => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("echoPort")), MIN_WINDOW_BYTES * 2);
    tunnel.send(encodeGrow(windowBytes));
    expect(await tunnel.expectClose()).toEqual({
      code: CloseCode.UnexpectedFrame,
      reason: `GROW to ${windowBytes} bytes does not grow the ${MIN_WINDOW_BYTES * 2}-byte window`,
    });
  });

  it("closes 4409 on a GROW before any OPEN", async () => {
    const tunnel = await openTunnel();
    tunnel.send(encodeGrow(2 * DEFAULT_WINDOW_BYTES));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "frame type 8 before OPEN" });
  });
});

describe("the isolate's window budget", () => {
  /** A budget that holds one default upload window and one floor. */
  const BUDGET_BYTES = DEFAULT_WINDOW_BYTES + BUDGET_FLOOR_BYTES;
  const env = { EDGESOCKS_TOKEN: TEST_TOKEN, EDGESOCKS_WINDOW_BUDGET_BYTES: String(BUDGET_BYTES) };

  it("shrinks what a stream may hold to the floor while the budget is taken, and gives it back when the stream ends", async () => {
    const first = await openTunnel(env);
    expect(await first.open(loopback(inject("sourcePort")), DEFAULT_WINDOW_BYTES)).toMatchObject({ windowBytes: DEFAULT_WINDOW_BYTES });
    // Its upload window took a full window of the budget: its download may have only the rest in
    // flight, raised to the floor: the agent's credit batch (a quarter of its 1 MiB), or it would never return credit.
    await first.readData(creditBatchBytes(DEFAULT_WINDOW_BYTES, true));
    await first.expectSilence(300);
    const second = await openTunnel(env);
    expect(await second.open(loopback(inject("echoPort")), DEFAULT_WINDOW_BYTES)).toMatchObject({ windowBytes: BUDGET_FLOOR_BYTES });
    first.close();
    second.close();
    await Promise.all([first.closed, second.closed]);
    // The streams return their claims as they finish, a turn or two after the close: wait for that.
    for (let attempt = 0; ; attempt++) {
      const third = await openTunnel(env);
      const opened = await third.open(loopback(inject("echoPort")), DEFAULT_WINDOW_BYTES);
      third.close();
      if (opened.windowBytes === DEFAULT_WINDOW_BYTES) break;
      if (attempt === 20) throw new Error(`the budget was not given back: OPENED announced ${opened.windowBytes}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  });
});

describe("the edge's own bound as a sender", () => {
  it("holds at most its budget for ten agents that announce 64 MiB windows and never read, on v4 and v3 tunnels", async () => {
    const budgetBytes = 4 * 1024 * 1024;
    const windowBytes = 256 * 1024;
    const env = { EDGESOCKS_TOKEN: TEST_TOKEN, EDGESOCKS_WINDOW_BUDGET_BYTES: String(budgetBytes), EDGESOCKS_WINDOW_BYTES: String(windowBytes) };
    const tunnels = await Promise.all(Array.from({ length: 10 }, (_, index) => openTunnel(env, index % 2 === 0 ? {} : V3)));
    for (const tunnel of tunnels) expect(await tunnel.open(loopback(inject("sourcePort")), 64 * 1024 * 1024)).toMatchObject({ status: StreamStatus.Ok });
    // Each origin has 2 MiB ready (20 MiB in all) and the agents' windows would take all of it:
    // what arrives before every tunnel falls silent is what the edge let itself send.
    const received = await Promise.all(
      tunnels.map(async (tunnel) => {
        let bytes = 0;
        for (;;) {
          const frame = await tunnel.nextFrame(500).catch(() => undefined);
          if (!frame) return bytes;
          if (frame.type === FrameType.Data) bytes += frame.payload.byteLength;
          else if (frame.type === FrameType.End) return bytes; // all 2 MiB: a v3 agent's batch floor allows it
          else if (frame.type !== FrameType.Ping) throw new Error(`unexpected ${describeFrame(frame)}`);
        }
      }),
    );
    const total = received.reduce((sum, bytes) => sum + bytes, 0);
    // Over the budget only by the floors: each stream may always have one agent credit batch
    // (256 KiB for a v4 agent; a quarter of 64 MiB for a v3 one, whose batch is uncapped) in flight.
    const v3Batch = (64 * 1024 * 1024) / 4;
    expect(Math.min(...received)).toBeGreaterThan(0);
    expect(total).toBeLessThanOrEqual(budgetBytes + 5 * 256 * 1024 + 5 * Math.min(v3Batch, 2 * 1024 * 1024));
    // The v4 streams (even indexes) are held to their share; without the budget each would get all 2 MiB.
    expect(received.filter((_, index) => index % 2 === 0).reduce((sum, bytes) => sum + bytes, 0)).toBeLessThan(5 * 2 * 1024 * 1024);
  });
});

describe("a v3 tunnel", () => {
  it("sees no PING and no GROW, and closes 4400 on a GROW the v3 protocol does not have", async () => {
    const tunnel = await openTunnel(undefined, V3);
    tunnel.pings = "show";
    await tunnel.open(loopback(inject("echoPort")), 64 * 1024 * 1024);
    upload(tunnel, DEFAULT_WINDOW_BYTES);
    const frames: Frame[] = [];
    let echoed = 0;
    while (echoed < DEFAULT_WINDOW_BYTES) {
      const frame = await tunnel.nextFrame();
      frames.push(frame);
      if (frame.type === FrameType.Data) echoed += frame.payload.byteLength;
    }
    expect(frames.filter((frame) => frame.type !== FrameType.Data && frame.type !== FrameType.Window).map(describeFrame)).toEqual([]);
    tunnel.send(encodeGrow(2 * DEFAULT_WINDOW_BYTES));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "unknown frame type 0x08" });
  });
});
