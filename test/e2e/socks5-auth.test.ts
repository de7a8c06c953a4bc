// SOCKS5 username/password (RFC 1929) on the agent's port: the npm `socks` client with
// credentials, and the refusals a raw client sees.

import { createConnection } from "node:net";
import { SocksClient } from "socks";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { runCurl } from "./curl-run.ts";
import { echo, startHttpOrigin, startTcpOrigin, type HttpOrigin, type Listening } from "./origins.ts";
import { startAgent, type RunningAgent } from "./processes.ts";
import { exchange } from "./raw-socket.ts";
import { readAll } from "./socks-client.ts";
import type { Server } from "node:net";

const PASSWORD = "rfc1929-test-password";
let agent: RunningAgent;
let echoOrigin: Listening<Server>;
let origin: HttpOrigin;

function userPass(name: string, password: string): number[] {
  return [0x01, name.length, ...Buffer.from(name), password.length, ...Buffer.from(password)];
}

beforeAll(async () => {
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--user", `alice:${PASSWORD}`]);
  echoOrigin = await startTcpOrigin(echo);
  origin = await startHttpOrigin();
});
afterAll(async () => {
  await agent?.stop();
  await echoOrigin?.close();
  await origin?.close();
});

describe("SOCKS5 with users configured", () => {
  it("lets curl --socks5-hostname in with --proxy-user, and names the user in the log", async () => {
    const result = await runCurl(["--socks5-hostname", `127.0.0.1:${agent.port}`, "--proxy-user", `alice:${PASSWORD}`, `http://localhost:${origin.port}/data.json`]);
    expect(result.exitCode).toBe(0);
    expect(result.stdout.toString()).toBe('{"answer":42}');
    await agent.waitForLog(new RegExp(`\\(alice\\) -> localhost:${origin.port} via edge .* ok$`));
  });

  it("turns curl away with a wrong password (exit 97), logging the refusal but never the password", async () => {
    const wrongPassword = "curl-sent-this-wrong-password";
    const result = await runCurl(["--socks5-hostname", `127.0.0.1:${agent.port}`, "--proxy-user", `alice:${wrongPassword}`, `http://localhost:${origin.port}/data.json`]);
    expect(result.exitCode).toBe(97);
    expect(result.stdout.byteLength).toBe(0);
    await agent.waitForLog(/handshake refused: wrong user name or password for "alice"/);
    expect(agent.log()).not.toContain(wrongPassword);
    expect(agent.log()).not.toContain(PASSWORD);
  });

  it("turns curl away without --proxy-user: it offers no authentication only, and gets 0xFF", async () => {
    const result = await runCurl(["--socks5-hostname", `127.0.0.1:${agent.port}`, `http://localhost:${origin.port}/data.json`]);
    expect(result.exitCode).toBe(97);
    await agent.waitForLog(/handshake refused: the client did not offer username\/password \(0x02\)/);
  });

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
    expect(await exchange(agent.port, [0x05, 0x01, 0x00])).toEqual([0x05, 0xff]);
  });

  it("answers status 0x01 to a wrong password and closes, without logging the password", async () => {
    expect(await exchange(agent.port, [0x05, 0x01, 0x02, ...userPass("alice", "not-the-password")])).toEqual([0x05, 0x02, 0x01, 0x01]);
    await agent.waitForLog(/wrong user name or password for "alice"/);
    expect(agent.log()).not.toContain("not-the-password");
    expect(agent.log()).not.toContain(PASSWORD);
  });

  it("closes the connection outright after a failure status, not only its own half (RFC 1929)", async () => {
    const socket = createConnection({ host: "127.0.0.1", port: agent.port, allowHalfOpen: true });
    socket.write(Uint8Array.from([0x05, 0x01, 0x02, ...userPass("alice", "wrong-again")]));
    const answer: number[] = [];
    socket.on("data", (chunk: Buffer) => answer.push(...chunk));
    await new Promise((resolve) => socket.once("end", resolve));
    expect(answer).toEqual([0x05, 0x02, 0x01, 0x01]);
    // Our side is still open; a socket the agent has really closed answers more bytes with a reset.
    const outcome = new Promise<string>((resolve) => {
      socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
      socket.on("close", () => resolve("closed"));
    });
    const writeMore = setInterval(() => socket.write("still here?"), 50);
    try {
      expect(await outcome).toMatch(/^(ECONNRESET|EPIPE)$/);
    } finally {
      clearInterval(writeMore);
      socket.destroy();
    }
  });

  it("answers status 0x01 to an unknown user", async () => {
    expect(await exchange(agent.port, [0x05, 0x01, 0x02, ...userPass("mallory", PASSWORD)])).toEqual([0x05, 0x02, 0x01, 0x01]);
  });

  it("the npm socks client reports a wrong password as an authentication failure", async () => {
    const attempt = SocksClient.createConnection({
      proxy: { host: "127.0.0.1", port: agent.port, type: 5, userId: "alice", password: "npm-client-wrong-password" },
      command: "connect",
      destination: { host: "127.0.0.1", port: echoOrigin.port },
      timeout: 20_000,
    });
    await expect(attempt).rejects.toThrow("Socks5 Authentication failed");
    expect(agent.log()).not.toContain("npm-client-wrong-password");
  });

  it("reads greeting, credentials and request sent in one write, and relays the bytes behind them", async () => {
    const port = echoOrigin.port;
    const request = [0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, port >> 8, port & 0xff];
    const answer = await exchange(agent.port, [0x05, 0x01, 0x02, ...userPass("alice", PASSWORD), ...request, ...Buffer.from("early")], { thenEnd: true });
    expect(answer.slice(0, 14)).toEqual([0x05, 0x02, 0x01, 0x00, 0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    expect(Buffer.from(answer.slice(14)).toString()).toBe("early");
  });
});
