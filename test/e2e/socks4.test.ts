// SOCKS4 and SOCKS4a on the agent's port, with curl and the npm `socks` client: clients nobody
// here wrote, through the real agent and the real Worker.

import { SocksClient } from "socks";
import { runCurl } from "./curl-run.ts";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { countThenReply, echo, startHttpOrigin, startTcpOrigin, type HttpOrigin, type Listening } from "./origins.ts";
import { freePort, startAgent, type RunningAgent } from "./processes.ts";
import { exchange } from "./raw-socket.ts";
import { readAll } from "./socks-client.ts";
import type { Server } from "node:net";

let agent: RunningAgent;
let origin: HttpOrigin;
let echoOrigin: Listening<Server>;

/** curl with `args`; async, since the origins live in this process's event loop. */
function curl(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return runCurl(args).then((run) => ({ ...run, stdout: run.stdout.toString() }));
}

beforeAll(async () => {
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"));
  origin = await startHttpOrigin();
  echoOrigin = await startTcpOrigin(echo);
});
afterAll(async () => {
  await agent?.stop();
  await origin?.close();
  await echoOrigin?.close();
});

describe("SOCKS4 and SOCKS4a through agent and edge", () => {
  it("curl --socks4a sends the host name to the edge, which resolves it", async () => {
    const result = await curl(["--socks4a", `127.0.0.1:${agent.port}`, `http://localhost:${origin.port}/data.json`]);
    expect(result).toMatchObject({ exitCode: 0, stdout: '{"answer":42}' });
    await agent.waitForLog(new RegExp(`-> localhost:${origin.port} via edge .* ok$`));
  });

  it("curl --socks4 connects to an IPv4 address", async () => {
    const result = await curl(["--socks4", `127.0.0.1:${agent.port}`, `http://127.0.0.1:${origin.port}/data.json`]);
    expect(result).toMatchObject({ exitCode: 0, stdout: '{"answer":42}' });
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} via edge .* ok$`));
  });

  it("the npm socks client (type 4) relays bytes intact both ways", async () => {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: "127.0.0.1", port: agent.port, type: 4 },
      command: "connect",
      destination: { host: "127.0.0.1", port: echoOrigin.port },
      timeout: 20_000,
    });
    const payload = Buffer.alloc(300_000, 0).map((_, index) => (index * 7) % 251);
    const answer = readAll(socket);
    socket.end(payload);
    expect(Buffer.compare(await answer, payload)).toBe(0);
  });

  it("answers 0x5B when the destination refuses the connection", async () => {
    const closedPort = await freePort();
    const answer = await exchange(agent.port, [0x04, 0x01, closedPort >> 8, closedPort & 0xff, 127, 0, 0, 1, 0x00]);
    expect(answer).toEqual([0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${closedPort} via edge .*connection refused`));
  });

  it("the npm socks client (type 4) reports the 0x5B refusal for a closed port", async () => {
    const closedPort = await freePort();
    const attempt = SocksClient.createConnection({
      proxy: { host: "127.0.0.1", port: agent.port, type: 4 },
      command: "connect",
      destination: { host: "127.0.0.1", port: closedPort },
      timeout: 20_000,
    });
    // The client names 0x5B "Failed" (0x5C is its "Rejected").
    await expect(attempt).rejects.toThrow("Socks4 Proxy rejected connection - (Failed)");
  });

  it("answers 0x5B to a 4a name over 255 bytes sent in one piece, and keeps serving others", async () => {
    const port = echoOrigin.port;
    const longName = `${"a".repeat(60)}.`.repeat(5) + "example";
    const answer = await exchange(agent.port, [0x04, 0x01, port >> 8, port & 0xff, 0, 0, 0, 1, 0x00, ...Buffer.from(longName), 0x00]);
    expect(answer).toEqual([0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
    await agent.waitForLog(/SOCKS4 handshake refused: SOCKS4a domain name is longer than 255 bytes/);
    const result = await curl(["--socks4a", `127.0.0.1:${agent.port}`, `http://localhost:${origin.port}/data.json`]);
    expect(result).toMatchObject({ exitCode: 0, stdout: '{"answer":42}' });
  });

  it("curl --socks4a with an IPv6 literal (sent as the name \"::1\") reaches an IPv6 loopback origin", async () => {
    const origin6 = await startHttpOrigin("::1");
    try {
      const result = await curl(["--socks4a", `127.0.0.1:${agent.port}`, `http://[::1]:${origin6.port}/data.json`]);
      expect(result).toMatchObject({ exitCode: 0, stdout: '{"answer":42}' });
      await agent.waitForLog(new RegExp(`-> \\[::1\\]:${origin6.port} via edge .* ok$`));
    } finally {
      await origin6.close();
    }
  });

  it("answers 0x5B to BIND", async () => {
    expect(await exchange(agent.port, [0x04, 0x02, 0x00, 0x50, 127, 0, 0, 1, 0x00])).toEqual([0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
  });
});

describe("SOCKS4 when users are configured", () => {
  let authAgent: RunningAgent;
  let halfCloseOrigin: Listening<Server>;
  beforeAll(async () => {
    authAgent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--user", "alice:socks4-cannot-say-this"]);
    halfCloseOrigin = await startTcpOrigin(countThenReply);
  });
  afterAll(async () => {
    await authAgent?.stop();
    await halfCloseOrigin?.close();
  });

  it("refuses SOCKS4, which carries no password, with 0x5B and says why", async () => {
    const port = halfCloseOrigin.port;
    const answer = await exchange(authAgent.port, [0x04, 0x01, port >> 8, port & 0xff, 127, 0, 0, 1, ...Buffer.from("alice"), 0x00]);
    expect(answer).toEqual([0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
    await authAgent.waitForLog(/SOCKS4 handshake refused: SOCKS4 cannot authenticate and users are configured/);
  });
});
