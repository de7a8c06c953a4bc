// --max-connections as a limit, with real clients: past it each client hears its own protocol's
// refusal (SOCKS5 0x01, SOCKS4 0x5B, HTTP 503 with Retry-After) or a reset, refusals are logged
// once per interval with a count, and a freed slot serves the next client.

import type { Server } from "node:net";
import { SocksClient } from "socks";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { runCurl } from "./curl-run.ts";
import { echo, startTcpOrigin, type Listening } from "./origins.ts";
import { startAgent, type RunningAgent } from "./processes.ts";
import { socketEnding } from "./raw-socket.ts";
import { socksConnect } from "./socks-client.ts";
import { connect } from "node:net";

let echoOrigin: Listening<Server>;
let agent: RunningAgent;
beforeAll(async () => {
  echoOrigin = await startTcpOrigin(echo);
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--max-connections", "1"]);
});
afterAll(async () => {
  await agent?.stop();
  await echoOrigin?.close();
});

describe("--max-connections 1, with one client holding the slot", () => {
  it("refuses each protocol in its own terms, resets the silent, logs one line, and serves again once the slot is free", async () => {
    const holder = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    const echoed = new Promise<string>((resolve) => holder.once("data", (chunk: Buffer) => resolve(chunk.toString())));
    holder.write("held");
    expect(await echoed).toBe("held");

    const plain = await runCurl(["-x", `http://127.0.0.1:${agent.port}`, "-D", "-", "-o", "/dev/null", `http://127.0.0.1:${echoOrigin.port}/`]);
    expect(plain.stdout.toString()).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/);
    expect(plain.stdout.toString()).toContain("\r\nRetry-After: 1\r\n");

    const tunnel = await runCurl(["-x", `http://127.0.0.1:${agent.port}`, "-w", "[%{http_connect}]", `https://127.0.0.1:${echoOrigin.port}/`]);
    expect(tunnel.stdout.toString()).toBe("[503]");

    await expect(
      SocksClient.createConnection({ proxy: { host: "127.0.0.1", port: agent.port, type: 5 }, command: "connect", destination: { host: "127.0.0.1", port: echoOrigin.port }, timeout: 5_000 }),
    ).rejects.toThrow(/Socks5 proxy rejected connection - Failure/);
    await expect(
      SocksClient.createConnection({ proxy: { host: "127.0.0.1", port: agent.port, type: 4 }, command: "connect", destination: { host: "127.0.0.1", port: echoOrigin.port }, timeout: 5_000 }),
    ).rejects.toThrow(/Socks4 Proxy rejected connection/);

    const silent = connect(agent.port, "127.0.0.1");
    const startedAtMs = Date.now();
    const { how, atMs } = await socketEnding(silent);
    expect(how).toBe("ECONNRESET");
    expect(atMs - startedAtMs).toBeLessThan(1_500);

    // Five refusals, one line (the first); the rest are counted for the interval's line.
    const lines = agent.log().split("\n").filter((line) => /--max-connections 1 reached/.test(line));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ warn 127\.0\.0\.1:\d+ refused \(HTTP 503\): --max-connections 1 reached; further refusals are counted, one line per 10 s at most$/);

    holder.end();
    await new Promise((resolve) => holder.once("close", resolve));
    const next = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    const again = new Promise<string>((resolve) => next.once("data", (chunk: Buffer) => resolve(chunk.toString())));
    next.write("served");
    expect(await again).toBe("served");
    next.destroy();
    await agent.waitForLog(/ warn refused 4 more connections in 10\.\d s \(1 HTTP 503, 1 SOCKS5 refusal, 1 SOCKS4 0x5B, 1 reset\): --max-connections 1 reached$/, 15_000);
  });
});
