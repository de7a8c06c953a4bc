// A destination that resets mid-transfer, on every front door (plain http:// forwarding, CONNECT,
// SOCKS5) and both routes (through the edge, direct from this machine): the client must see a TCP
// reset, never a clean end that would make a cut-off body look whole.

import { spawn } from "node:child_process";
import { connect, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startTcpOrigin, type Listening } from "./origins.ts";
import { startAgent, type RunningAgent } from "./processes.ts";
import { socketEnding } from "./raw-socket.ts";
import { socksConnect } from "./socks-client.ts";

/** Body bytes the origin sends before it resets. */
const SENT_BYTES = 1000;
const BODY = "x".repeat(SENT_BYTES);

type ResettingOrigin = Listening<Server> & {
  /** Resets every connection the origin has answered so far (RST, SO_LINGER 0). */
  resetAll(): void;
};

/**
 * A TCP origin that answers the first bytes of each connection with `answer` and then holds the
 * connection until the test resets it, so the reset always comes after the client has bytes.
 */
async function startResettingOrigin(answer: string): Promise<ResettingOrigin> {
  const answered = new Set<Socket>();
  const listening = await startTcpOrigin((socket) => {
    socket.once("data", () => {
      socket.write(answer);
      answered.add(socket);
    });
    socket.once("close", () => answered.delete(socket));
  });
  return {
    ...listening,
    resetAll: () => {
      for (const socket of answered) socket.resetAndDestroy();
      answered.clear();
    },
  };
}

/** Reads from `socket` until `done(received)` holds; the bytes stay counted, the socket keeps flowing. */
function readUntil(socket: Socket, done: (received: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = "";
    const onData = (chunk: Buffer) => {
      received += chunk.toString("latin1");
      if (!done(received)) return;
      socket.off("data", onData);
      resolve(received);
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.once("end", () => reject(new Error(`connection ended after ${JSON.stringify(received.slice(0, 200))}`)));
  });
}

async function rawConnect(port: number): Promise<Socket> {
  const socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  return socket;
}

/** The body bytes that follow the head in `answer`. */
function bodyOf(answer: string): string {
  const end = answer.indexOf("\r\n\r\n");
  return end < 0 ? "" : answer.slice(end + 4);
}

let lengthOrigin: ResettingOrigin;
let chunkedOrigin: ResettingOrigin;
let rawOrigin: ResettingOrigin;
beforeAll(async () => {
  // An answer with a length the origin never reaches, and one with chunked framing cut inside a chunk.
  lengthOrigin = await startResettingOrigin(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${BODY}`);
  chunkedOrigin = await startResettingOrigin(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${(SENT_BYTES * 2).toString(16)}\r\n${BODY}`);
  // For CONNECT and SOCKS5: bytes with no HTTP in them, answering whatever the client sends.
  rawOrigin = await startResettingOrigin(BODY);
});
afterAll(async () => {
  await lengthOrigin?.close();
  await chunkedOrigin?.close();
  await rawOrigin?.close();
});

describe.each([
  // --bypass none (startAgent's default): loopback destinations cross the edge.
  { route: "edge", args: [] as string[], logRoute: "via edge" },
  { route: "direct", args: ["--bypass", "private"], logRoute: "direct" },
])("a destination that resets mid-transfer, route $route", ({ args, logRoute }) => {
  let agent: RunningAgent;
  beforeAll(async () => {
    agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), args);
  });
  afterAll(async () => {
    await agent?.stop();
  });

  it("resets a plain http:// client (HTTP/1.1, Content-Length answer) instead of ending it", async () => {
    const client = await rawConnect(agent.port);
    client.write(`GET http://127.0.0.1:${lengthOrigin.port}/ HTTP/1.1\r\nHost: 127.0.0.1:${lengthOrigin.port}\r\n\r\n`);
    const received = await readUntil(client, (answer) => bodyOf(answer).length >= SENT_BYTES);
    expect(received).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    const ending = socketEnding(client);
    lengthOrigin.resetAll();
    expect((await ending).how).toBe("ECONNRESET");
    await agent.waitForLog(new RegExp(`HTTP GET -> 127\\.0\\.0\\.1:${lengthOrigin.port} ${logRoute}.* reset: `));
  });

  it("resets an HTTP/1.0 client, whose body has no length and would look whole after a FIN", async () => {
    const client = await rawConnect(agent.port);
    client.write(`GET http://127.0.0.1:${chunkedOrigin.port}/ HTTP/1.0\r\nHost: 127.0.0.1:${chunkedOrigin.port}\r\n\r\n`);
    const received = await readUntil(client, (answer) => bodyOf(answer).length >= SENT_BYTES);
    // Node answers a 1.0 client without chunked: the body runs to the connection's end.
    expect(received).not.toMatch(/\r\n(transfer-encoding|content-length):/i);
    const ending = socketEnding(client);
    chunkedOrigin.resetAll();
    expect((await ending).how).toBe("ECONNRESET");
  });

  it("makes curl --http1.0 fail with a receive error, not exit 0 with a short body", async () => {
    const curl = spawn("curl", ["--silent", "--show-error", "--no-buffer", "--max-time", "30", "--http1.0", "-x", `http://127.0.0.1:${agent.port}`, `http://127.0.0.1:${chunkedOrigin.port}/`]);
    let stdoutBytes = 0;
    let stderr = "";
    curl.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exitCode = new Promise<number | null>((resolve) => curl.once("close", resolve));
    // The reset comes once curl has written the first body bytes out: a mid-body cut, by construction.
    await new Promise<void>((resolve) =>
      curl.stdout.on("data", (chunk: Buffer) => {
        stdoutBytes += chunk.byteLength;
        if (stdoutBytes >= SENT_BYTES) resolve();
      }),
    );
    chunkedOrigin.resetAll();
    expect(await exitCode).toBe(56); // CURLE_RECV_ERROR; a FIN would have been exit 0
    expect(stderr).toMatch(/reset/i);
    expect(stdoutBytes).toBe(SENT_BYTES);
  });

  it("resets a CONNECT client", async () => {
    const client = await rawConnect(agent.port);
    client.write(`CONNECT 127.0.0.1:${rawOrigin.port} HTTP/1.1\r\nHost: 127.0.0.1:${rawOrigin.port}\r\n\r\n`);
    await readUntil(client, (answer) => answer.includes("\r\n\r\n"));
    client.write("hello");
    await readUntil(client, (answer) => answer.length >= SENT_BYTES);
    const ending = socketEnding(client);
    rawOrigin.resetAll();
    expect((await ending).how).toBe("ECONNRESET");
  });

  it("resets a SOCKS5 client", async () => {
    const client = await socksConnect(agent.port, "127.0.0.1", rawOrigin.port);
    client.write("hello");
    await readUntil(client, (answer) => answer.length >= SENT_BYTES);
    const ending = socketEnding(client);
    rawOrigin.resetAll();
    expect((await ending).how).toBe("ECONNRESET");
  });
});
