// The real Worker with a fallback variable that does not parse: the tunnel endpoint answers 500
// with a message naming the variable, never the upstream's password, and the agent's client
// hears a general failure (the agent logs the edge's status and message).

import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";
import { socksConnect } from "./socks-client.ts";

const PASSWORD = "s3cret-upstream-pass";

describe("an edge whose EDGESOCKS_UPSTREAM does not parse", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  beforeAll(async () => {
    edge = await startEdge({ EDGESOCKS_UPSTREAM: `ftp://user:${PASSWORD}@127.0.0.1:21` });
    agent = await startAgent(edge.url, edge.token);
  }, 120_000);
  afterAll(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  it("answers /tunnel with 500 naming the variable, and the client with 0x01", async () => {
    // node:http, not fetch: fetch will not send an Upgrade header.
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const upgrade = request(`${edge.url}/tunnel`, {
        headers: { Authorization: `Bearer ${edge.token}`, Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "edgesocks.v3" },
      });
      upgrade.once("response", (response) => {
        let text = "";
        response.on("data", (chunk: Buffer) => (text += chunk.toString()));
        response.once("end", () => resolve({ status: response.statusCode ?? 0, body: text }));
      });
      upgrade.once("upgrade", () => reject(new Error("the edge upgraded")));
      upgrade.once("error", reject);
      upgrade.end();
    });
    expect(status).toBe(500);
    expect(body).toMatch(/EDGESOCKS_UPSTREAM/);
    expect(body).not.toContain(PASSWORD);
    await expect(socksConnect(agent.port, "127.0.0.1", 9)).rejects.toThrow(/Failure/);
    const line = await agent.waitForLog(/HTTP 500 .*EDGESOCKS_UPSTREAM/);
    expect(line).not.toContain(PASSWORD);
    expect(agent.log()).not.toContain(PASSWORD);
  });
});
