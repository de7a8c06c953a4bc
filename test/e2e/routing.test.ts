// Routing rules with real clients: block, direct (from this machine, half-close included) and
// edge, chosen by --rule and --bypass, and what the client hears for each.

import type { Server } from "node:net";
import { runCurl } from "./curl-run.ts";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { countThenReply, startHttpOrigin, startTcpOrigin, type HttpOrigin, type Listening } from "./origins.ts";
import { freePort, startAgent, type RunningAgent } from "./processes.ts";
import { readAll, socksConnect } from "./socks-client.ts";

let origin: HttpOrigin;
let halfCloseOrigin: Listening<Server>;

/** curl through the agent; async, since the origins live in this process's event loop. */
function curl(agentPort: number, url: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return runCurl(["--proxy", `socks5h://127.0.0.1:${agentPort}`, url]).then((run) => ({ ...run, stdout: run.stdout.toString() }));
}

beforeAll(async () => {
  origin = await startHttpOrigin();
  halfCloseOrigin = await startTcpOrigin(countThenReply);
});
afterAll(async () => {
  await origin?.close();
  await halfCloseOrigin?.close();
});

describe("--rule block", () => {
  let agent: RunningAgent;
  beforeAll(async () => {
    agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--rule", `block:port=${origin.port}`]);
  });
  afterAll(() => agent?.stop());

  it("answers SOCKS5 0x02 (not allowed by ruleset) and logs the rule", async () => {
    const result = await curl(agent.port, `http://127.0.0.1:${origin.port}/data.json`);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(2)");
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} block: blocked by rule block:port=${origin.port}`));
  });

  it("leaves other ports alone", async () => {
    const socket = await socksConnect(agent.port, "127.0.0.1", halfCloseOrigin.port);
    const reply = readAll(socket);
    socket.end("four");
    expect((await reply).toString()).toBe("received 4 bytes");
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${halfCloseOrigin.port} via edge`));
  });
});

describe("--bypass private (the default)", () => {
  let agent: RunningAgent;
  beforeAll(async () => {
    agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--bypass", "private"]);
  });
  afterAll(() => agent?.stop());

  it("sends a loopback destination direct, from this machine", async () => {
    const result = await curl(agent.port, `http://127.0.0.1:${origin.port}/data.json`);
    expect(result).toMatchObject({ exitCode: 0, stdout: '{"answer":42}' });
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} direct .* ok$`));
  });

  it("sends localhost direct by name", async () => {
    const result = await curl(agent.port, `http://localhost:${origin.port}/data.json`);
    expect(result).toMatchObject({ exitCode: 0, stdout: '{"answer":42}' });
    await agent.waitForLog(new RegExp(`-> localhost:${origin.port} direct .* ok$`));
  });

  it("keeps half-close on the direct route: the reply follows the client's FIN", async () => {
    const socket = await socksConnect(agent.port, "127.0.0.1", halfCloseOrigin.port);
    const reply = readAll(socket);
    socket.end(Buffer.alloc(123_456, 1));
    expect((await reply).toString()).toBe("received 123456 bytes");
  });

  it("answers 0x05 for a refused port on the direct route", async () => {
    const closedPort = await freePort();
    const result = await curl(agent.port, `http://127.0.0.1:${closedPort}/`);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(5)");
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${closedPort} direct .*connection refused: ECONNREFUSED`));
  });
});

describe("rules against the bypass", () => {
  it("--rule direct:host=localhost sends that name direct under --bypass none, and nothing else", async () => {
    const agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--rule", "direct:host=localhost"]);
    try {
      expect((await curl(agent.port, `http://localhost:${origin.port}/data.json`)).exitCode).toBe(0);
      expect((await curl(agent.port, `http://127.0.0.1:${origin.port}/data.json`)).exitCode).toBe(0);
      await agent.waitForLog(new RegExp(`-> localhost:${origin.port} direct .* ok$`));
      await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} via edge .* ok$`));
    } finally {
      await agent.stop();
    }
  });

  it("--rule edge:cidr=127.0.0.0/8 comes before the private rules and keeps loopback on the edge", async () => {
    const agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--bypass", "private", "--rule", "edge:cidr=127.0.0.0/8"]);
    try {
      expect((await curl(agent.port, `http://127.0.0.1:${origin.port}/data.json`)).exitCode).toBe(0);
      await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} via edge .* ok$`));
    } finally {
      await agent.stop();
    }
  });
});
