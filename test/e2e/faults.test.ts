// Faults around the agent: an edge that accepts TCP and then never answers (the client hears
// 0x06 / 504 within --open-timeout-ms, never a hang).

import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCurl } from "./curl-run.ts";
import { startAgent, type RunningAgent } from "./processes.ts";

const OPEN_TIMEOUT_MS = 1_000;

describe("an edge that accepts and never answers", () => {
  let hung: Server;
  const held: Socket[] = [];
  let agent: RunningAgent;
  beforeAll(async () => {
    hung = createServer((socket) => {
      held.push(socket);
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    const port = (hung.address() as { port: number }).port;
    agent = await startAgent(`http://127.0.0.1:${port}`, "hung-edge-token-0123456789abcdef", ["--pool-size", "0", "--open-timeout-ms", String(OPEN_TIMEOUT_MS)]);
  });
  afterAll(async () => {
    await agent?.stop();
    for (const socket of held) socket.destroy();
    await new Promise((resolve) => hung?.close(resolve));
  });

  it("answers SOCKS5 with 0x06 within the open timeout", async () => {
    const startedAt = Date.now();
    const run = await runCurl(["--silent", "--show-error", "--proxy", `socks5h://127.0.0.1:${agent.port}`, "http://127.0.0.1:9/"], 10);
    const elapsedMs = Date.now() - startedAt;
    expect(run.exitCode).toBe(97);
    expect(run.stderr).toMatch(/TTL expired|timed out|0x06|6\b/i);
    expect(elapsedMs).toBeGreaterThanOrEqual(OPEN_TIMEOUT_MS - 100);
    expect(elapsedMs).toBeLessThan(OPEN_TIMEOUT_MS + 3_000);
  });

  it("answers HTTP CONNECT with 504 within the open timeout", async () => {
    const startedAt = Date.now();
    const run = await runCurl(["--silent", "--show-error", "--proxy", `http://127.0.0.1:${agent.port}`, "--proxytunnel", "http://127.0.0.1:9/"], 10);
    expect(run.exitCode).toBe(56);
    expect(run.stderr).toMatch(/504/);
    expect(Date.now() - startedAt).toBeLessThan(OPEN_TIMEOUT_MS + 3_000);
  });
});
