// SOCKS5 username/password (RFC 1929) on the agent's port: the npm `socks` client with
// credentials, and the refusals a raw client sees.

import { createConnection } from "node:net";
import { SocksClient } from "socks";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { echo, startTcpOrigin, type Listening } from "./origins.ts";
import { startAgent, type RunningAgent } from "./processes.ts";
import { readAll } from "./socks-client.ts";
import type { Server } from "node:net";

const PASSWORD = "rfc1929-test-password";
let agent: RunningAgent;
let echoOrigin: Listening<Server>;

/** Sends raw bytes to the agent and collects what comes back until it closes. */
function exchange(bytes: number[]): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port: agent.port }, () => socket.write(Uint8Array.from(bytes)));
    const answer: number[] = [];
    socket.on("data", (chunk: Buffer) => answer.push(...chunk));
    socket.on("close", () => resolve(answer));
    socket.on("error", reject);
  });
}

function userPass(name: string, password: string): number[] {
  return [0x01, name.length, ...Buffer.from(name), password.length, ...Buffer.from(password)];
}

beforeAll(async () => {
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--user", `alice:${PASSWORD}`]);
  echoOrigin = await startTcpOrigin(echo);
});
afterAll(async () => {
  await agent?.stop();
  await echoOrigin?.close();
});

describe("SOCKS5 with users configured", () => {
  it("lets the npm socks client in with the right user name and password", async () => {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: "127.0.0.1", port: agent.port, type: 5, userId: "alice", password: PASSWORD },
      command: "connect",
      destination: { host: "127.0.0.1", port: echoOrigin.port },
      timeout: 20_000,
    });
    const answer = readAll(socket);
    socket.end("through with a password");
    expect((await answer).toString()).toBe("through with a password");
    await agent.waitForLog(new RegExp(`\\(alice\\) -> 127\\.0\\.0\\.1:${echoOrigin.port} via edge .* ok$`));
  });

  it("answers method 0xFF to a client that offers only no authentication", async () => {
    expect(await exchange([0x05, 0x01, 0x00])).toEqual([0x05, 0xff]);
  });

  it("answers status 0x01 to a wrong password and closes, without logging the password", async () => {
    expect(await exchange([0x05, 0x01, 0x02, ...userPass("alice", "not-the-password")])).toEqual([0x05, 0x02, 0x01, 0x01]);
    await agent.waitForLog(/wrong user name or password for "alice"/);
    expect(agent.log()).not.toContain("not-the-password");
    expect(agent.log()).not.toContain(PASSWORD);
  });

  it("answers status 0x01 to an unknown user", async () => {
    expect(await exchange([0x05, 0x01, 0x02, ...userPass("mallory", PASSWORD)])).toEqual([0x05, 0x02, 0x01, 0x01]);
  });
});
