// The agent against an edge that breaks the protocol (docs/protocol.md §3–§5, §7): a second
// OPENED, DATA (and WINDOW, END, OPEN, EARLY, malformed or text messages) before OPENED, DATA past
// the window the agent granted, WINDOW credit past the edge's own window, DATA after END, a
// second END, and frames on a tunnel that carries no stream (an idle warm spare, or a tunnel taken
// back after its stream). For each, the agent's Close as it came on the wire (code and reason),
// what the affected client got (its SOCKS reply, then a FIN or a TCP reset), and that the next
// connection works through a fresh tunnel. Each runs on a warm spare, a cold tunnel, a warm spare
// with --zero-rtt, and a tunnel reused after an earlier stream, where the last stream's leftovers
// (well-formed DATA, WINDOW, END before OPENED) are dropped instead (§4, "Streams one after another").
//
// The edge is scripted (scripted-edge.ts): the real Worker never sends these frames.

import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startAgent, type RunningAgent } from "./processes.ts";
import { startScriptedEdge, type ScriptedEdge, type ScriptedTunnel } from "./scripted-edge.ts";
import { AddressType, CloseCode, FrameType, StreamStatus, encodeData, encodeEarly, encodeEnd, encodeOpen, encodeOpened, encodeWindow } from "../../worker/protocol/index.ts";
import { Reply } from "../../worker/socks5-numbers.ts";

/** The agent's download window in these tests: the smallest the protocol allows, so a frame past it stays small. */
const AGENT_WINDOW_BYTES = 16 * 1024;
/** The window the scripted edge announces in its OPENED: the agent's upload credit. */
const EDGE_WINDOW_BYTES = 16 * 1024;
/** The agent returns credit once this much is delivered and not yet returned (worker/protocol/flow-control.ts: a quarter window). */
const GRANT_THRESHOLD_BYTES = Math.floor(AGENT_WINDOW_BYTES / 4);
/** Warm spares in the modes that keep a pool. */
const POOL_SIZE = 2;

/** A tunnel script that does nothing: the test sends every frame itself. */
const hold = (): void => {};

/** A raw SOCKS5 client: its reply code, everything after it, and how the connection ended. */
type Conversation = {
  socket: Socket;
  /** The CONNECT reply's REP field (RFC 1928 §6), once it has arrived. */
  reply: Promise<number>;
  /** Bytes that came after the reply so far. */
  received(): Buffer;
  /** Resolves once at least `count` bytes came after the reply. */
  receivedAtLeast(count: number): Promise<Buffer>;
  /** "end" for a FIN, else the error code (ECONNRESET for a reset). */
  ending: Promise<string>;
};

/** Greets the agent, asks for CONNECT 127.0.0.1:9 (which the scripted edge never dials) and reads on. */
function socksConversation(agentPort: number): Conversation {
  const socket = connect({ port: agentPort, host: "127.0.0.1", allowHalfOpen: true });
  let buffered = Buffer.alloc(0);
  let greeted = false;
  let replied = false;
  const waiters = new Set<() => void>();
  let resolveReply: (code: number) => void = () => {};
  let rejectReply: (error: Error) => void = () => {};
  const reply = new Promise<number>((resolve, reject) => {
    resolveReply = resolve;
    rejectReply = reject;
  });
  socket.once("connect", () => socket.write(Uint8Array.of(0x05, 0x01, 0x00)));
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    if (!greeted && buffered.byteLength >= 2) {
      greeted = true;
      buffered = buffered.subarray(2);
      socket.write(Uint8Array.of(0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 9));
    }
    // The reply to a CONNECT with BND 0.0.0.0:0 is 10 bytes: VER REP RSV ATYP, 4 address bytes, port.
    if (greeted && !replied && buffered.byteLength >= 10) {
      replied = true;
      resolveReply(buffered[1] ?? -1);
      buffered = buffered.subarray(10);
    }
    for (const waiter of [...waiters]) waiter();
  });
  const ending = new Promise<string>((resolve) => {
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    socket.once("end", () => resolve("end"));
  });
  void ending.then((how) => {
    rejectReply(new Error(`connection ended (${how}) before a SOCKS reply`));
    for (const waiter of [...waiters]) waiter();
  });
  return {
    socket,
    reply,
    received: () => (replied ? buffered : Buffer.alloc(0)),
    receivedAtLeast: (count) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (replied && buffered.byteLength >= count) {
            waiters.delete(check);
            resolve(buffered);
          } else if (socket.destroyed || socket.readableEnded) {
            waiters.delete(check);
            reject(new Error(`connection ended after ${buffered.byteLength} of ${count} bytes`));
          }
        };
        waiters.add(check);
        check();
      }),
    ending,
  };
}

/** Every stream on a tunnel of its own: the fresh-tunnel modes must not take a tunnel back. */
const ONE_STREAM_PER_TUNNEL = ["--max-streams-per-tunnel", "1"];

const MODES = [
  { mode: "warm", args: ["--pool-size", String(POOL_SIZE), ...ONE_STREAM_PER_TUNNEL], tunnelKind: "pooled", zeroRtt: false, reused: false },
  { mode: "cold", args: ["--pool-size", "0", ...ONE_STREAM_PER_TUNNEL], tunnelKind: "open", zeroRtt: false, reused: false },
  { mode: "warm --zero-rtt", args: ["--pool-size", String(POOL_SIZE), "--zero-rtt", ...ONE_STREAM_PER_TUNNEL], tunnelKind: "pooled", zeroRtt: true, reused: false },
  // A tunnel taken back after an echo stream carries the stream under test (§4 "Streams one
  // after another"); the limit is high enough that no test's tunnel is retired under it.
  { mode: "reused", args: ["--pool-size", "0", "--max-streams-per-tunnel", "1000"], tunnelKind: "open", zeroRtt: false, reused: true },
] as const;

/** The agent's line for a stream that ended ok (local-agent/tunnel/agent-stream.ts #finish), written after its tunnel went back. */
const STREAM_OK_LINE = /-> 127\.0\.0\.1:9 via edge up=.* ok$/;

/** `it` for the modes a case applies to; elsewhere the case is not declared at all (no skipped test). */
const itWhere = (applies: boolean): typeof it => (applies ? it : ((() => undefined) as unknown as typeof it));

describe.each(MODES)("an agent ($mode tunnels) facing an edge that breaks the protocol", ({ args, tunnelKind, zeroRtt, reused }) => {
  let edge: ScriptedEdge;
  let agent: RunningAgent;
  /** Every client of this block's tests: a test that fails midway leaves none open for the next. */
  const clients: Conversation[] = [];

  beforeAll(async () => {
    edge = await startScriptedEdge(randomBytes(24).toString("base64url"));
    agent = await startAgent(edge.url, edge.token, [...args, "--window-bytes", String(AGENT_WINDOW_BYTES)]);
    if (tunnelKind === "pooled") await edge.waitForIdleSpares(POOL_SIZE);
  });
  afterAll(async () => {
    await agent?.stop();
    await edge?.close();
  });
  // The pool refills 25 ms after a take (tunnel-pool.ts): back-to-back cases would otherwise empty it.
  beforeEach(async () => {
    if (tunnelKind === "pooled") await edge.waitForIdleSpares(1);
  });
  afterEach(() => {
    for (const client of clients.splice(0)) client.socket.destroy();
    edge.resetScripts();
  });

  function connectClient(): Conversation {
    const client = socksConversation(agent.port);
    clients.push(client);
    return client;
  }

  const okLines = () => agent.log().split("\n").filter((line) => STREAM_OK_LINE.test(line)).length;

  /** Resolves once the agent has logged `count` streams that ended ok. */
  async function untilOkLines(count: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (okLines() < count) {
      if (Date.now() > deadline) throw new Error(`the agent logged ${okLines()} ok streams, not ${count}; log:\n${agent.log()}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /**
   * One connection through the honest echo edge to a clean end (END both ways): resolves with its
   * tunnel once the agent has logged the stream, which it does after taking the tunnel back.
   */
  async function echoStream(): Promise<ScriptedTunnel> {
    const okBefore = okLines();
    const next = edge.nextStream();
    const client = connectClient();
    const tunnel = await next;
    expect(await client.reply).toBe(Reply.Succeeded);
    client.socket.end("ping");
    expect((await client.receivedAtLeast(4)).toString()).toBe("ping");
    expect(await client.ending).toBe("end");
    client.socket.destroy();
    await untilOkLines(okBefore + 1);
    return tunnel;
  }

  /** Opens a SOCKS5 stream whose tunnel the test drives frame by frame (in "reused", on a tunnel taken back). */
  async function heldStream(): Promise<{ client: Conversation; tunnel: ScriptedTunnel }> {
    const carrier = reused ? await echoStream() : undefined;
    edge.scriptNextStream(hold);
    const next = edge.nextStream();
    const client = connectClient();
    const tunnel = await next;
    expect(tunnel.kind).toBe(tunnelKind);
    if (carrier) expect(tunnel.index).toBe(carrier.index);
    else expect(tunnel.streamCount).toBe(1);
    return { client, tunnel };
  }

  /** OPENED Ok, and the client's success reply. */
  async function openedStream(): Promise<{ client: Conversation; tunnel: ScriptedTunnel }> {
    const stream = await heldStream();
    stream.tunnel.send(encodeOpened(StreamStatus.Ok, EDGE_WINDOW_BYTES));
    expect(await stream.client.reply).toBe(Reply.Succeeded);
    return stream;
  }

  /** The next connection gets a new tunnel, and the honest echo edge behind it serves it to a clean end. */
  async function expectStillServes(broken: ScriptedTunnel): Promise<void> {
    expect(broken.isClosed).toBe(true);
    const tunnel = await echoStream();
    expect(tunnel.index).not.toBe(broken.index);
    // One stream per tunnel: closed after it. Reused: kept for the next stream.
    if (!reused) expect(await tunnel.waitForClose()).toEqual({ code: CloseCode.Normal, reason: "stream finished" });
    else expect(tunnel.isClosed).toBe(false);
  }

  /** What a client sees of a fault before OPENED: 0x01 and a FIN, or with --zero-rtt (answered already) a reset. */
  async function expectFailedOpen(client: Conversation): Promise<void> {
    if (zeroRtt) {
      expect(await client.reply).toBe(Reply.Succeeded);
      expect(await client.ending).toBe("ECONNRESET");
    } else {
      expect(await client.reply).toBe(Reply.GeneralFailure);
      expect(await client.ending).toBe("end");
      expect(client.received().byteLength).toBe(0);
    }
  }

  it("closes with 4409 `second OPENED` and resets the client it had answered", async () => {
    const { client, tunnel } = await openedStream();
    tunnel.send(encodeOpened(StreamStatus.Ok, EDGE_WINDOW_BYTES));
    expect(await tunnel.waitForClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "second OPENED" });
    expect(await client.ending).toBe("ECONNRESET");
    await agent.waitForLog(/reset: edge broke the protocol: second OPENED/);
    await expectStillServes(tunnel);
  });

  // §4 "At the agent", item 5, and §3's decoding errors, before OPENED. On a tunnel taken back,
  // DATA, WINDOW and END before OPENED are the last stream's leftovers and are dropped (§4,
  // "Streams one after another"); a message that does not decode is refused everywhere.
  it.each([
    { fault: "DATA", message: encodeData(Buffer.from("too soon")), code: CloseCode.UnexpectedFrame, reason: "DATA before OPENED", leftoverOnReuse: true },
    { fault: "WINDOW", message: encodeWindow(1), code: CloseCode.UnexpectedFrame, reason: "WINDOW before OPENED", leftoverOnReuse: true },
    { fault: "END", message: encodeEnd(), code: CloseCode.UnexpectedFrame, reason: "END before OPENED", leftoverOnReuse: true },
    { fault: "an OPEN", message: encodeOpen({ type: AddressType.IPv4, host: "127.0.0.1", port: 9 }, AGENT_WINDOW_BYTES), code: CloseCode.UnexpectedFrame, reason: `frame type ${FrameType.Open} is sent by the agent, not to it`, leftoverOnReuse: false },
    { fault: "an EARLY", message: encodeEarly(Buffer.from("x")), code: CloseCode.UnexpectedFrame, reason: `frame type ${FrameType.Early} is sent by the agent, not to it`, leftoverOnReuse: false },
    { fault: "an unknown frame type", message: Uint8Array.of(0x0b), code: CloseCode.MalformedFrame, reason: "unknown frame type 0x0b", leftoverOnReuse: false },
    { fault: "a text message", message: "hello", code: CloseCode.MalformedFrame, reason: "text messages are not part of the protocol", leftoverOnReuse: false },
    { fault: "a WINDOW of 3 bytes", message: Uint8Array.of(FrameType.Window, 0x00, 0x01), code: CloseCode.MalformedFrame, reason: "WINDOW must be exactly 5 bytes", leftoverOnReuse: false },
    { fault: "an empty DATA", message: Uint8Array.of(FrameType.Data), code: CloseCode.MalformedFrame, reason: "DATA with no payload", leftoverOnReuse: false },
  ])("closes with $code when the edge sends $fault before OPENED", async ({ message, code, reason, leftoverOnReuse }) => {
    const { client, tunnel } = await heldStream();
    if (typeof message === "string") tunnel.sendText(message);
    else tunnel.send(message);
    if (reused && leftoverOnReuse) {
      // Dropped: the stream opens as if it had not come, and none of it reaches the client.
      tunnel.send(encodeOpened(StreamStatus.Ok, EDGE_WINDOW_BYTES));
      expect(await client.reply).toBe(Reply.Succeeded);
      tunnel.send(encodeData(Buffer.from("fresh")));
      expect((await client.receivedAtLeast(5)).toString()).toBe("fresh");
      expect(tunnel.isClosed).toBe(false);
      return;
    }
    expect(await tunnel.waitForClose()).toEqual({ code, reason });
    await expectFailedOpen(client);
    await agent.waitForLog(new RegExp(`edge broke the protocol: ${reason.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    await expectStillServes(tunnel);
  });

  it("closes with 4429 when one DATA frame is larger than the whole window the agent granted", async () => {
    const { client, tunnel } = await openedStream();
    expect(tunnel.open?.windowBytes).toBe(AGENT_WINDOW_BYTES);
    tunnel.send(encodeData(Buffer.alloc(AGENT_WINDOW_BYTES + 1, 0x61)));
    expect(await tunnel.waitForClose()).toEqual({
      code: CloseCode.WindowExceeded,
      reason: `peer sent ${AGENT_WINDOW_BYTES + 1} bytes with ${AGENT_WINDOW_BYTES} bytes of credit`,
    });
    expect(await client.ending).toBe("ECONNRESET");
    expect(client.received().byteLength).toBe(0); // the overrun is refused before a byte of it is written
    await agent.waitForLog(/reset: edge broke the protocol: peer sent 16385 bytes/);
    await expectStillServes(tunnel);
  });

  it("closes with 4429 when DATA overruns the credit left after bytes it delivered but has not yet returned", async () => {
    const { client, tunnel } = await openedStream();
    // Under the grant threshold: delivered to the client, yet no WINDOW comes back for it, so the
    // edge's credit is exactly the window less these bytes, and one byte more cannot race a grant.
    const firstBytes = GRANT_THRESHOLD_BYTES - 1;
    tunnel.send(encodeData(Buffer.alloc(firstBytes, 0x61)));
    await client.receivedAtLeast(firstBytes);
    const creditBytes = AGENT_WINDOW_BYTES - firstBytes;
    tunnel.send(encodeData(Buffer.alloc(creditBytes + 1, 0x62)));
    expect(await tunnel.waitForClose()).toEqual({ code: CloseCode.WindowExceeded, reason: `peer sent ${creditBytes + 1} bytes with ${creditBytes} bytes of credit` });
    expect(tunnel.streamFrames.some((frame) => frame.type === FrameType.Window)).toBe(false);
    expect(await client.ending).toBe("ECONNRESET");
    expect(client.received().byteLength).toBe(firstBytes);
    await expectStillServes(tunnel);
  });

  it("takes DATA that fills its window exactly and returns all of it as credit once delivered", async () => {
    // The boundary of the two tests above: the same bytes, one fewer, is no violation.
    const { client, tunnel } = await openedStream();
    const firstBytes = GRANT_THRESHOLD_BYTES - 1;
    tunnel.send(encodeData(Buffer.alloc(firstBytes, 0x61)));
    await client.receivedAtLeast(firstBytes);
    tunnel.send(encodeData(Buffer.alloc(AGENT_WINDOW_BYTES - firstBytes, 0x62)));
    await client.receivedAtLeast(AGENT_WINDOW_BYTES);
    const returned = () => tunnel.streamFrames.reduce((total, frame) => total + (frame.type === FrameType.Window ? frame.bytes : 0), 0);
    await tunnel.waitForFrame(() => returned() === AGENT_WINDOW_BYTES);
    expect(tunnel.isClosed).toBe(false);
    // And the stream still ends cleanly: END each way.
    client.socket.end();
    await tunnel.waitForFrame((frame) => frame.type === FrameType.End);
    tunnel.send(encodeEnd());
    expect(await client.ending).toBe("end");
    expect(client.received().byteLength).toBe(AGENT_WINDOW_BYTES);
    client.socket.destroy();
    if (!reused) expect(await tunnel.waitForClose()).toEqual({ code: CloseCode.Normal, reason: "stream finished" });
  });

  it("closes with 4429 when a WINDOW would raise its upload credit above the edge's announced window", async () => {
    const { client, tunnel } = await openedStream();
    // The client spends some credit; the edge returns exactly that (honest), then one byte more.
    client.socket.write(Buffer.alloc(1000, 0x63));
    const uploaded = () => tunnel.streamFrames.reduce((total, frame) => total + (frame.type === FrameType.Data ? frame.payload.byteLength : 0), 0);
    await tunnel.waitForFrame(() => uploaded() === 1000);
    tunnel.send(encodeWindow(1000));
    tunnel.send(encodeWindow(1));
    expect(await tunnel.waitForClose()).toEqual({ code: CloseCode.WindowExceeded, reason: `peer granted 1 bytes beyond its ${EDGE_WINDOW_BYTES}-byte window` });
    expect(await client.ending).toBe("ECONNRESET");
    await agent.waitForLog(/reset: edge broke the protocol: peer granted 1 bytes beyond/);
    await expectStillServes(tunnel);
  });

  // After the edge's END the agent has ended its client (FIN) before the fault arrives, so what
  // the client sees last depends on the kernel; the close on the wire is what is checked here.
  it.each([
    { fault: "DATA after its END", messages: [encodeEnd(), encodeData(Buffer.from("late"))], reason: "DATA after END" },
    { fault: "a second END", messages: [encodeEnd(), encodeEnd()], reason: "second END" },
  ])("closes with 4409 when the edge sends $fault", async ({ messages, reason }) => {
    const { client, tunnel } = await openedStream();
    for (const message of messages) tunnel.send(message);
    expect(await tunnel.waitForClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason });
    await client.ending;
    client.socket.destroy();
    await expectStillServes(tunnel);
  });

  itWhere(tunnelKind === "pooled")("closes an idle spare that gets a frame with 4409 and replaces it", async () => {
    const [spare] = await edge.waitForIdleSpares(POOL_SIZE);
    if (!spare) throw new Error("no idle spare");
    // An edge answering an OPEN nobody sent: the frame most likely from a confused edge.
    spare.send(encodeOpened(StreamStatus.Ok, EDGE_WINDOW_BYTES));
    expect(await spare.waitForClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "edge sent a frame to an idle tunnel" });
    const spares = await edge.waitForIdleSpares(POOL_SIZE);
    expect(spares.every((tunnel) => tunnel.index !== spare.index)).toBe(true);
    await expectStillServes(spare);
  });

  itWhere(reused)("closes a tunnel waiting for its next stream with 4409 when the edge sends it a frame that is no leftover", async () => {
    const idle = await echoStream();
    idle.send(encodeOpened(StreamStatus.Ok, EDGE_WINDOW_BYTES));
    expect(await idle.waitForClose()).toEqual({ code: CloseCode.UnexpectedFrame, reason: "edge sent a frame to an idle tunnel" });
    await expectStillServes(idle);
  });

  itWhere(reused)("keeps a tunnel waiting for its next stream when the edge sends it a leftover, and carries the next stream on it", async () => {
    const idle = await echoStream();
    // A WINDOW for upload bytes the edge delivered before our END reached it.
    idle.send(encodeWindow(4));
    const next = edge.nextStream();
    const client = connectClient();
    expect((await next).index).toBe(idle.index);
    expect(await client.reply).toBe(Reply.Succeeded);
    client.socket.end("pong");
    expect((await client.receivedAtLeast(4)).toString()).toBe("pong");
    expect(await client.ending).toBe("end");
  });
});
