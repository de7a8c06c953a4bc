// RFC 1928 corner cases against the real agent, byte by byte: these need a client that can send
// what no well-behaved client would, so the bytes are written by hand here.

import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { echo, startTcpOrigin, type Listening } from "./origins.ts";
import { startAgent, type RunningAgent } from "./processes.ts";
import type { Server } from "node:net";

let agent: RunningAgent;
let echoOrigin: Listening<Server>;

beforeAll(async () => {
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--handshake-timeout-ms", "500"]);
  echoOrigin = await startTcpOrigin(echo);
});
afterAll(async () => {
  await agent?.stop();
  await echoOrigin?.close();
});

/** A raw connection to the agent: every byte it answers, and whether it has closed. */
type RawConnection = { socket: Socket; answer: number[]; closed: Promise<void>; isClosed: () => boolean };

async function connectRaw(): Promise<RawConnection> {
  const socket = connect(agent.port, "127.0.0.1");
  socket.on("error", () => {});
  const answer: number[] = [];
  socket.on("data", (chunk: Buffer) => answer.push(...chunk));
  let closedYet = false;
  const closed = new Promise<void>((resolve) =>
    socket.once("close", () => {
      closedYet = true;
      resolve();
    }),
  );
  await new Promise((resolve) => socket.once("connect", resolve));
  return { socket, answer, closed, isClosed: () => closedYet };
}

/** Resolves once `connection` has received at least `count` bytes; rejects if it closes first. */
async function answerOf(connection: RawConnection, count: number): Promise<number[]> {
  while (connection.answer.length < count) {
    if (connection.isClosed()) throw new Error(`closed after ${connection.answer.length} of ${count} bytes: ${connection.answer}`);
    await Promise.race([once(connection.socket, "data"), connection.closed]);
  }
  return connection.answer;
}

/**
 * Connects to the agent, writes `bytes`, and resolves with all it answers once it closes the
 * connection. The bound is for a close that should come, not a quiet period: an agent that
 * keeps the connection open fails the test with closed: false.
 */
async function exchange(bytes: number[], closeWithinMs = 5_000): Promise<{ answer: number[]; closed: boolean }> {
  const connection = await connectRaw();
  connection.socket.write(Buffer.from(bytes));
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([connection.closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, closeWithinMs)))]);
  clearTimeout(timer);
  connection.socket.destroy();
  return { answer: connection.answer, closed: connection.isClosed() };
}

const GREETING = [0x05, 0x01, 0x00];
const METHOD_OK = [0x05, 0x00];
const reply = (code: number) => [0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
const connectTo = (port: number, command = 0x01) => [0x05, command, 0x00, 0x01, 127, 0, 0, 1, port >> 8, port & 0xff];

describe("SOCKS5 handshake edge cases (RFC 1928)", () => {
  it("answers 0xFF and closes when no offered method is acceptable", async () => {
    expect(await exchange([0x05, 0x02, 0x02, 0x80])).toEqual({ answer: [0x05, 0xff], closed: true });
  });

  it("replies 0x07 to BIND", async () => {
    expect(await exchange([...GREETING, ...connectTo(echoOrigin.port, 0x02)])).toEqual({ answer: [...METHOD_OK, ...reply(0x07)], closed: true });
  });

  it("replies 0x00 to UDP ASSOCIATE naming a relay on 127.0.0.1, and holds the connection open", async () => {
    // The relay's DNS behaviour is udp-dns.test.ts's; here only the reply's shape.
    const associate = await connectRaw();
    associate.socket.write(Buffer.from([...GREETING, ...connectTo(0, 0x03)]));
    const answer = await answerOf(associate, METHOD_OK.length + 10);
    expect(answer.slice(0, METHOD_OK.length + 8)).toEqual([...METHOD_OK, 0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1]);
    expect(answer).toHaveLength(METHOD_OK.length + 10);
    // The one timer that could still close it is the handshake timeout. A witness that stalls
    // mid-handshake, started after the reply, is closed by its own (equal, later) timeout: by
    // then the association's would have fired too, had answering it not cancelled it.
    const witness = await connectRaw();
    witness.socket.write(Buffer.from([0x05, 0x01]));
    await witness.closed;
    await new Promise((resolve) => setImmediate(resolve));
    expect(associate.isClosed()).toBe(false);
    expect(associate.socket.readableEnded).toBe(false);
    associate.socket.destroy();
  });

  it("replies 0x07 to a command RFC 1928 does not define", async () => {
    expect(await exchange([...GREETING, ...connectTo(echoOrigin.port, 0x09)])).toEqual({ answer: [...METHOD_OK, ...reply(0x07)], closed: true });
  });

  it("replies 0x08 to an unknown address type", async () => {
    expect(await exchange([...GREETING, 0x05, 0x01, 0x00, 0x02, 1, 2, 3, 4, 0, 80])).toEqual({ answer: [...METHOD_OK, ...reply(0x08)], closed: true });
  });

  it("closes without a reply when the first byte starts no protocol the port serves", async () => {
    // 0x16: a TLS ClientHello sent to the proxy port by mistake.
    expect(await exchange([0x16, 0x03, 0x01, 0x00, 0x05])).toEqual({ answer: [], closed: true });
  });

  it("closes a client that stalls mid-handshake once the handshake timeout passes", async () => {
    const started = Date.now();
    expect(await exchange([0x05, 0x01])).toEqual({ answer: [], closed: true });
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
  });

  it("closes a truncated request at the handshake timeout after choosing the method", async () => {
    expect(await exchange([...GREETING, 0x05, 0x01, 0x00, 0x03, 20, 0x61])).toEqual({ answer: METHOD_OK, closed: true });
  });

  it("accepts greeting and request in one write and relays the bytes that follow them", async () => {
    const socket: Socket = connect(agent.port, "127.0.0.1");
    const answer: number[] = [];
    socket.on("data", (chunk: Buffer) => answer.push(...chunk));
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.end(Buffer.from([...GREETING, ...connectTo(echoOrigin.port), ...Buffer.from("pipelined")]));
    await new Promise((resolve) => socket.once("close", resolve));
    expect(answer).toEqual([...METHOD_OK, ...reply(0x00), ...Buffer.from("pipelined")]);
  });

  it("keeps serving other connections while one sends garbage", async () => {
    const garbage = exchange([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x07]);
    const good = await connectRaw();
    good.socket.write(Buffer.from([...GREETING, ...connectTo(echoOrigin.port)]));
    expect(await answerOf(good, METHOD_OK.length + 10)).toEqual([...METHOD_OK, ...reply(0x00)]);
    good.socket.write("still served");
    expect(Buffer.from((await answerOf(good, METHOD_OK.length + 10 + 12)).slice(METHOD_OK.length + 10)).toString()).toBe("still served");
    good.socket.destroy();
    expect((await garbage).answer).toEqual([...METHOD_OK, ...reply(0x08)]);
  });
});
