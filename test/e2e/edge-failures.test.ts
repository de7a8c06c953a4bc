// What a client sees when the edge refuses it, stops answering, or dies: a precise SOCKS reply
// before the stream opens, a prompt TCP reset after; never a hang.

import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { echo, startTcpOrigin, type Listening } from "./origins.ts";
import { findWorkerdPids, startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";
import { socketEnding } from "./raw-socket.ts";
import { socksConnect } from "./socks-client.ts";
import type { Server, Socket } from "node:net";

let echoOrigin: Listening<Server>;
beforeAll(async () => {
  echoOrigin = await startTcpOrigin(echo);
});
afterAll(async () => {
  await echoOrigin?.close();
});

async function echoRoundTrip(socket: Socket, text: string): Promise<string> {
  const answer = new Promise<string>((resolve) => socket.once("data", (chunk: Buffer) => resolve(chunk.toString())));
  socket.write(text);
  return answer;
}

describe("an edge that refuses the token", () => {
  let agent: RunningAgent;
  beforeAll(async () => {
    agent = await startAgent(inject("edgeUrl"), "not-the-edge-token-0123456789");
  });
  afterAll(async () => {
    await agent?.stop();
  });

  it("gets the client a general-failure reply and logs the edge's 401", async () => {
    await expect(socksConnect(agent.port, "127.0.0.1", echoOrigin.port)).rejects.toThrow(/Failure/);
    const line = await agent.waitForLog(/general failure: edge refused the tunnel: HTTP 401 wrong token/);
    expect(line).not.toContain("not-the-edge-token");
  });
});

describe("an edge that stops answering and then dies", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  /** Both workerd processes (the Worker's and wrangler's dev proxy): the whole edge as the agent sees it. */
  let workerdPids: number[];
  const signalEdge = (signal: NodeJS.Signals) => {
    for (const pid of workerdPids) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
  };
  beforeAll(async () => {
    edge = await startEdge();
    const { workerPid, devProxyPid } = findWorkerdPids(edge);
    workerdPids = [workerPid, devProxyPid];
    agent = await startAgent(edge.url, edge.token, ["--ping-interval-ms", "300"]);
  });
  afterAll(async () => {
    signalEdge("SIGCONT");
    await agent?.stop();
    await edge?.stop();
  });

  it("resets a client within two ping intervals of the edge going silent", async () => {
    const socket = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    expect(await echoRoundTrip(socket, "before")).toBe("before");
    const ended = socketEnding(socket);
    const stoppedAt = Date.now();
    signalEdge("SIGSTOP");
    try {
      const { how, atMs } = await ended;
      expect(how).toBe("ECONNRESET");
      expect(atMs - stoppedAt).toBeLessThan(3 * 300 + 500);
    } finally {
      signalEdge("SIGCONT");
    }
    await agent.waitForLog(/reset: edge stopped answering pings/);
  });

  it("resets a client at once when the edge's processes die", async () => {
    const socket = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    expect(await echoRoundTrip(socket, "alive")).toBe("alive");
    const ended = socketEnding(socket);
    const killedAt = Date.now();
    signalEdge("SIGKILL");
    const { how, atMs } = await ended;
    expect(how).toBe("ECONNRESET");
    expect(atMs - killedAt).toBeLessThan(1_500);
  });
});
