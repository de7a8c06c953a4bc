// The SOCKS4 and HTTP proxy columns of the README's failure table, for the rows SOCKS5's tests
// cover elsewhere (edge-failures.test.ts): a wrong token answers before any stream opens, and an
// edge that dies while a stream is open resets the client, never a clean end.

import { createConnection, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { runCurl } from "./curl-run.ts";
import { echo, startTcpOrigin, type Listening } from "./origins.ts";
import { findWorkerdPids, startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";
import { startOlderEdgeRelay, type OlderEdgeRelay } from "./older-edge-relay.ts";
import { exchange, socketEnding } from "./raw-socket.ts";

const WRONG_TOKEN = "not-the-edge-token-0123456789";

let echoOrigin: Listening<Server>;
beforeAll(async () => {
  echoOrigin = await startTcpOrigin(echo);
});
afterAll(async () => {
  await echoOrigin?.close();
});

/** A SOCKS4 CONNECT to 127.0.0.1:`port` with an empty user id. */
function socks4Connect(port: number): number[] {
  return [0x04, 0x01, port >> 8, port & 0xff, 127, 0, 0, 1, 0x00];
}

/** Opens a raw connection to the agent, writes `request`, and resolves once the reply is `complete`. */
function openAndRead(agentPort: number, request: string | Uint8Array, complete: (reply: Buffer) => boolean): Promise<{ socket: Socket; reply: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port: agentPort }, () => socket.write(request));
    let reply = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      if (!complete(reply)) return;
      socket.off("data", onData);
      socket.pause();
      resolve({ socket, reply });
    };
    socket.on("data", onData);
    socket.once("error", reject);
  });
}

/** Writes `text` to an open tunnelled echo connection and resolves with the echo. */
function echoRoundTrip(socket: Socket, text: string): Promise<string> {
  const answer = new Promise<string>((resolve) => socket.once("data", (chunk: Buffer) => resolve(chunk.toString())));
  socket.resume();
  socket.write(text);
  return answer;
}

describe("an edge that refuses the token, seen by SOCKS4 and HTTP clients", () => {
  let agent: RunningAgent;
  let relay: OlderEdgeRelay;
  beforeAll(async () => {
    // The agent refuses to start when the edge refuses its token at GET /check; an edge older
    // than /check (or one whose secret changed since) still refuses the tunnels themselves.
    relay = await startOlderEdgeRelay(inject("edgeUrl"));
    agent = await startAgent(relay.url, WRONG_TOKEN);
  });
  afterAll(async () => {
    await agent?.stop();
    await relay?.close();
  });

  it("answers SOCKS4 with 0x5B", async () => {
    const answer = await exchange(agent.port, socks4Connect(echoOrigin.port));
    expect(answer.slice(0, 2)).toEqual([0x00, 0x5b]);
    expect(answer).toHaveLength(8);
  });

  it("answers a plain http:// request and a CONNECT with 502 naming the edge's refusal, not the token", async () => {
    const plain = await runCurl(["-sS", "-o", "-", "-w", "\n%{http_code}", "-x", `http://127.0.0.1:${agent.port}`, `http://127.0.0.1:${echoOrigin.port}/`]);
    const [body, code] = plain.stdout.toString().split(/\n(?=\d+$)/);
    expect(code).toBe("502");
    expect(body).toMatch(/edge refused the tunnel: HTTP 401 wrong token/);
    expect(body).not.toContain(WRONG_TOKEN);

    const { socket, reply } = await openAndRead(
      agent.port,
      `CONNECT 127.0.0.1:${echoOrigin.port} HTTP/1.1\r\nHost: 127.0.0.1:${echoOrigin.port}\r\n\r\n`,
      (reply) => reply.length >= "HTTP/1.1 502".length,
    );
    socket.destroy();
    expect(reply.toString("latin1")).toMatch(/^HTTP\/1\.1 502 /);
    const line = await agent.waitForLog(/edge refused the tunnel: HTTP 401 wrong token/);
    expect(line).not.toContain(WRONG_TOKEN);
  });
});

describe("an edge that dies while SOCKS4 and HTTP CONNECT streams are open", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  beforeAll(async () => {
    edge = await startEdge();
    agent = await startAgent(edge.url, edge.token);
  });
  afterAll(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  it("resets both clients at once", async () => {
    const socks4 = await openAndRead(agent.port, Uint8Array.from(socks4Connect(echoOrigin.port)), (reply) => reply.length >= 8);
    expect([...socks4.reply.subarray(0, 2)]).toEqual([0x00, 0x5a]);
    const connect = await openAndRead(
      agent.port,
      `CONNECT 127.0.0.1:${echoOrigin.port} HTTP/1.1\r\nHost: 127.0.0.1:${echoOrigin.port}\r\n\r\n`,
      (reply) => reply.includes("\r\n\r\n"),
    );
    expect(connect.reply.toString("latin1")).toMatch(/^HTTP\/1\.1 200 .*\r\n\r\n$/s);
    expect(await echoRoundTrip(socks4.socket, "four")).toBe("four");
    expect(await echoRoundTrip(connect.socket, "connect")).toBe("connect");

    const endings = [socketEnding(socks4.socket), socketEnding(connect.socket)];
    const { workerPid, devProxyPid } = findWorkerdPids(edge);
    const killedAt = Date.now();
    for (const pid of [workerPid, devProxyPid]) process.kill(pid, "SIGKILL");
    for (const { how, atMs } of await Promise.all(endings)) {
      expect(how).toBe("ECONNRESET");
      expect(atMs - killedAt).toBeLessThan(2_000);
    }
  });
});
