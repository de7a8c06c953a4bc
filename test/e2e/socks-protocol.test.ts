// RFC 1928 corner cases against the real agent, byte by byte: these need a client that can send
// what no well-behaved client would, so the bytes are written by hand here.

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

/** Connects to the agent, writes `bytes`, and resolves with all it answers until it closes. */
async function exchange(bytes: number[], settleMs = 3_000): Promise<{ answer: number[]; closed: boolean }> {
  const socket = connect(agent.port, "127.0.0.1");
  socket.on("error", () => {});
  const answer: number[] = [];
  socket.on("data", (chunk: Buffer) => answer.push(...chunk));
  await new Promise((resolve) => socket.once("connect", resolve));
  socket.write(Buffer.from(bytes));
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), settleMs);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  socket.destroy();
  return { answer, closed };
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
    const { answer, closed } = await exchange([...GREETING, ...connectTo(0, 0x03)], 500);
    expect(answer.slice(0, METHOD_OK.length + 8)).toEqual([...METHOD_OK, 0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1]);
    expect(answer).toHaveLength(METHOD_OK.length + 10);
    expect(closed).toBe(false);
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
    const good = exchange([...GREETING, ...connectTo(echoOrigin.port)], 1_000);
    expect((await garbage).answer).toEqual([...METHOD_OK, ...reply(0x08)]);
    expect((await good).answer).toEqual([...METHOD_OK, ...reply(0x00)]);
  });
});
