// How the agent opens streams (docs/protocol.md §4, "At the agent"): on warm pooled tunnels when it has them, on
// new tunnels whose upgrade carries the OPEN when it has not, and with --zero-rtt before the edge
// has answered at all, resetting the client when the open then fails.

import { connect, type Server, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { countThenReply, echo, startTcpOrigin, type Listening } from "./origins.ts";
import { freePort, startAgent, type RunningAgent } from "./processes.ts";
import { socketEnding } from "./raw-socket.ts";
import { readAll, socksConnect } from "./socks-client.ts";
import { headerValue, startUpgradeRecorder, type UpgradeRecorder } from "./upgrade-recorder.ts";
import { AddressType, OPEN_HEADER, POOLED_HEADER, decodeHeaderOpen } from "../../worker/protocol/index.ts";

let echoOrigin: Listening<Server>;
let countingOrigin: Listening<Server>;
let recorder: UpgradeRecorder;
beforeAll(async () => {
  echoOrigin = await startTcpOrigin(echo);
  countingOrigin = await startTcpOrigin(countThenReply);
  recorder = await startUpgradeRecorder(Number(new URL(inject("edgeUrl")).port));
});
afterAll(async () => {
  await echoOrigin?.close();
  await countingOrigin?.close();
  await recorder?.close();
});

const agents: RunningAgent[] = [];
afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop();
});

/** An agent whose tunnels pass through the recorder (or go to `edgeUrl`), started with `args`. */
async function agentWith(args: string[], edgeUrl = `http://127.0.0.1:${recorder.port}`): Promise<RunningAgent> {
  const agent = await startAgent(edgeUrl, inject("edgeToken"), args);
  agents.push(agent);
  return agent;
}

/**
 * A raw SOCKS5 CONNECT to 127.0.0.1:port with `payload` in the same write as the request, as an
 * optimistic client sends it; resolves with the socket and the reply's code once it arrives.
 */
async function connectWithPayload(agentPort: number, port: number, payload: Buffer): Promise<{ socket: Socket; reply: number }> {
  const socket = connect({ port: agentPort, host: "127.0.0.1" });
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const request = Buffer.from([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, port >> 8, port & 0xff]);
  socket.write(Buffer.concat([request, payload]));
  const reply = await readBytes(socket, 2 + 10);
  return { socket, reply: reply[3] ?? -1 };
}

/** Reads exactly `count` bytes (the rest stays in the socket for the next reader). */
function readBytes(socket: Socket, count: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.byteLength < count) return;
      socket.off("data", onData);
      socket.pause();
      if (buffered.byteLength > count) socket.unshift(buffered.subarray(count));
      resolve(buffered.subarray(0, count));
    };
    socket.on("data", onData);
    socket.resume();
    socket.once("error", reject);
    socket.once("end", () => reject(new Error(`connection ended after ${buffered.byteLength} of ${count} bytes`)));
  });
}

describe("the warm pool", () => {
  it("opens --pool-size spares before any client asks, and a new connection's OPEN rides one of them", async () => {
    const before = recorder.heads().length;
    const agent = await agentWith(["--pool-size", "2", "--log-level", "debug"]);
    await agent.waitForLog(/warm pool: 2 of 2 spares ready/);
    const spares = recorder.heads().slice(before);
    expect(spares).toHaveLength(2);
    for (const head of spares) {
      expect(headerValue(head, POOLED_HEADER)).toBe("1");
      expect(headerValue(head, OPEN_HEADER)).toBeUndefined();
    }
    const socket = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    socket.end("warm hello");
    expect((await readAll(socket)).toString()).toBe("warm hello");
    // The taken spare is replaced, and no tunnel was opened cold for the connection.
    const heads = (await recorder.waitForHeads(before + 3)).slice(before);
    expect(heads.map((head) => headerValue(head, POOLED_HEADER))).toEqual(["1", "1", "1"]);
  });

  it("with --pool-size 0 opens no tunnel until a client asks", async () => {
    const before = recorder.heads().length;
    const agent = await agentWith(["--pool-size", "0"]);
    // No quiet period: a pool opens its spares at start, before the agent prints the line
    // startAgent waits for (server.ts starts the pool, then cli.ts prints), so a spare's upgrade
    // would leave before this client connects; by the time the client's own cold tunnel has
    // carried a whole echo, that earlier upgrade would have reached the recorder too.
    const socket = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    socket.end("cold hello");
    expect((await readAll(socket)).toString()).toBe("cold hello");
    const heads = (await recorder.waitForHeads(before + 1)).slice(before);
    expect(heads).toHaveLength(1);
    expect(headerValue(heads[0] ?? "", POOLED_HEADER)).toBeUndefined();
    expect(decodeHeaderOpen(headerValue(heads[0] ?? "", OPEN_HEADER) ?? "").destination.port).toBe(echoOrigin.port);
  });
});

describe("a cold open", () => {
  it("carries the destination and the client's early bytes in the upgrade request", async () => {
    const before = recorder.heads().length;
    const agent = await agentWith(["--pool-size", "0"]);
    const { socket, reply } = await connectWithPayload(agent.port, echoOrigin.port, Buffer.from("early bytes"));
    expect(reply).toBe(0x00);
    expect((await readBytes(socket, 11)).toString()).toBe("early bytes");
    socket.destroy();
    const [head] = (await recorder.waitForHeads(before + 1)).slice(before);
    const open = decodeHeaderOpen(headerValue(head ?? "", OPEN_HEADER) ?? "");
    expect(open.destination).toEqual({ type: AddressType.IPv4, host: "127.0.0.1", port: echoOrigin.port });
    expect(Buffer.from(open.earlyData).toString()).toBe("early bytes");
  });
});

describe("an optimistic client's bytes beyond what the OPEN carries", () => {
  it.each([["a warm tunnel", "2"], ["a cold tunnel", "0"]])("arrive intact and in order, on %s", async (_, poolSize) => {
    const agent = await agentWith(["--pool-size", poolSize, "--log-level", "debug"]);
    if (poolSize !== "0") await agent.waitForLog(/warm pool: 2 of 2 spares ready/);
    // 100 KB: more than an OPEN in the upgrade (8 KiB) or on a warm tunnel (64 KiB) carries.
    const payload = Buffer.from(Array.from({ length: 100_000 }, (_, index) => index % 251));
    const { socket, reply } = await connectWithPayload(agent.port, echoOrigin.port, payload);
    expect(reply).toBe(0x00);
    expect((await readBytes(socket, payload.byteLength)).equals(payload)).toBe(true);
    socket.destroy();
  });
});

describe("--zero-rtt", () => {
  let silentEdge: Listening<Server>;
  const heldSockets = new Set<Socket>();
  beforeAll(async () => {
    // Accepts the agent's TCP connection and never answers: no edge answer can ever arrive.
    silentEdge = await startTcpOrigin((socket) => {
      heldSockets.add(socket);
      socket.on("data", () => {});
    });
  });
  afterAll(async () => {
    for (const socket of heldSockets) socket.destroy();
    await silentEdge?.close();
  });

  it("answers success before the edge has answered, and resets the client when the open then times out", async () => {
    const agent = await agentWith(["--pool-size", "0", "--zero-rtt", "--open-timeout-ms", "1000"], `http://127.0.0.1:${silentEdge.port}`);
    const { socket, reply } = await connectWithPayload(agent.port, echoOrigin.port, Buffer.from("GET / HTTP/1.1\r\n\r\n"));
    expect(reply).toBe(0x00);
    expect((await socketEnding(socket)).how).toBe("ECONNRESET");
    await agent.waitForLog(/timed out after a 0-RTT answer, client reset: edge did not answer the open within 1000 ms/);
  });

  it("opens a cold tunnel on its own when a client waits for the server to speak first", async () => {
    const greeter = await startTcpOrigin((socket) => socket.end("220 hello from the server\r\n"));
    try {
      const before = recorder.heads().length;
      const agent = await agentWith(["--pool-size", "0", "--zero-rtt"]);
      const { socket, reply } = await connectWithPayload(agent.port, greeter.port, Buffer.alloc(0));
      expect(reply).toBe(0x00);
      socket.resume();
      expect((await readAll(socket)).toString()).toBe("220 hello from the server\r\n");
      const [head] = (await recorder.waitForHeads(before + 1)).slice(before);
      const open = decodeHeaderOpen(headerValue(head ?? "", OPEN_HEADER) ?? "");
      expect(open.destination.port).toBe(greeter.port);
      expect(open.earlyData.byteLength).toBe(0);
    } finally {
      await greeter.close();
    }
  });

  it("without it, the same silent edge gets the client the SOCKS reply 0x06 instead", async () => {
    const agent = await agentWith(["--pool-size", "0", "--open-timeout-ms", "1000"], `http://127.0.0.1:${silentEdge.port}`);
    const { reply } = await connectWithPayload(agent.port, echoOrigin.port, Buffer.alloc(0));
    expect(reply).toBe(0x06);
  });

  it.each([["a warm tunnel", "2"], ["a cold tunnel", "0"]])("resets the client when the destination refuses, on %s", async (_, poolSize) => {
    const closedPort = await freePort();
    const agent = await agentWith(["--pool-size", poolSize, "--zero-rtt", "--log-level", "debug"]);
    if (poolSize !== "0") await agent.waitForLog(/warm pool: 2 of 2 spares ready/);
    const { socket, reply } = await connectWithPayload(agent.port, closedPort, Buffer.from("hello"));
    expect(reply).toBe(0x00);
    expect((await socketEnding(socket)).how).toBe("ECONNRESET");
    await agent.waitForLog(/connection refused after a 0-RTT answer, client reset/);
  });

  it.each([
    ["SOCKS4", (port: number) => Buffer.from([0x04, 0x01, port >> 8, port & 0xff, 127, 0, 0, 1, 0x00]), Buffer.from([0x00, 0x5a])],
    ["HTTP CONNECT", (port: number) => Buffer.from(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`), Buffer.from("HTTP/1.1 200")],
  ])("answers %s success at once, then resets the client when the destination refuses", async (_, request, success) => {
    const closedPort = await freePort();
    const agent = await agentWith(["--pool-size", "0", "--zero-rtt"]);
    const socket = connect({ port: agent.port, host: "127.0.0.1" });
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    socket.write(request(closedPort));
    expect(await readBytes(socket, success.byteLength)).toEqual(success);
    expect((await socketEnding(socket)).how).toBe("ECONNRESET");
  });

  it("still answers a forwarded http:// request 502 when the destination refuses", async () => {
    const closedPort = await freePort();
    const agent = await agentWith(["--pool-size", "0", "--zero-rtt"]);
    const socket = connect({ port: agent.port, host: "127.0.0.1" });
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    socket.write(`GET http://127.0.0.1:${closedPort}/ HTTP/1.1\r\nHost: 127.0.0.1:${closedPort}\r\n\r\n`);
    expect((await readBytes(socket, 12)).toString()).toBe("HTTP/1.1 502");
    socket.destroy();
  });

  it.each([["a warm tunnel", "2"], ["a cold tunnel", "0"]])(
    "relays an upload far beyond the early budget intact, on %s",
    async (_, poolSize) => {
      const agent = await agentWith(["--pool-size", poolSize, "--zero-rtt", "--log-level", "debug"]);
      if (poolSize !== "0") await agent.waitForLog(/warm pool: 2 of 2 spares ready/);
      const uploadBytes = 3 * 1024 * 1024 + 17;
      const { socket, reply } = await connectWithPayload(agent.port, countingOrigin.port, Buffer.alloc(100_000, 0x61));
      expect(reply).toBe(0x00);
      socket.resume();
      socket.end(Buffer.alloc(uploadBytes - 100_000, 0x62));
      expect((await readAll(socket)).toString()).toBe(`received ${uploadBytes} bytes`);
    },
  );
});
