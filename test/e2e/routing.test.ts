// Routing rules with real clients: block, direct (from this machine, half-close included) and
// edge, chosen by --rule and --bypass, and what the client hears for each.

import { createConnection, type Server } from "node:net";
import { runCurl } from "./curl-run.ts";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { countThenReply, startHttpOrigin, startTcpOrigin, type HttpOrigin, type Listening } from "./origins.ts";
import { freePort, startAgent, type RunningAgent } from "./processes.ts";
import { exchange } from "./raw-socket.ts";
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

  it("answers SOCKS4 0x5B (curl exit 97) on the same rule", async () => {
    const result = await runCurl(["--socks4", `127.0.0.1:${agent.port}`, `http://127.0.0.1:${origin.port}/data.json`]);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(91)");
    expect(await exchange(agent.port, [0x04, 0x01, origin.port >> 8, origin.port & 0xff, 127, 0, 0, 1, 0x00], { thenEnd: true })).toEqual([0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
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

  it("keeps half-close the other way: the destination's FIN reaches the client, whose upload still arrives whole", async () => {
    let report: (outcome: string) => void = () => {};
    const originSaw = new Promise<string>((resolve) => (report = resolve));
    const speaksFirst = await startTcpOrigin((socket) => {
      let receivedBytes = 0;
      socket.on("data", (chunk: Buffer) => (receivedBytes += chunk.byteLength));
      socket.on("end", () => report(`end after ${receivedBytes} bytes`));
      socket.on("error", (error: NodeJS.ErrnoException) => report(`${error.code} after ${receivedBytes} bytes`));
      socket.end("done talking");
    });
    try {
      // Half-open on our side too (the socks client's sockets are not): our FIN waits for us.
      const socket = createConnection({ host: "127.0.0.1", port: agent.port, allowHalfOpen: true });
      const port = speaksFirst.port;
      socket.write(Uint8Array.of(0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, port >> 8, port & 0xff));
      const answer = await readAll(socket);
      expect(answer.subarray(0, 12)).toEqual(Buffer.from([0x05, 0x00, 0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]));
      expect(answer.subarray(12).toString()).toBe("done talking");
      socket.end(Buffer.alloc(2_000_000, 7));
      expect(await originSaw).toBe("end after 2000000 bytes");
    } finally {
      await speaksFirst.close();
    }
  });

  it("answers 0x05 for a refused port on the direct route", async () => {
    const closedPort = await freePort();
    const result = await curl(agent.port, `http://127.0.0.1:${closedPort}/`);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(5)");
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${closedPort} direct .*connection refused: ECONNREFUSED`));
  });

  it("sends an IPv6 loopback destination direct", async () => {
    const origin6 = await startHttpOrigin("::1");
    try {
      const result = await curl(agent.port, `http://[::1]:${origin6.port}/data.json`);
      expect(result).toMatchObject({ exitCode: 0, stdout: '{"answer":42}' });
      await agent.waitForLog(new RegExp(`-> \\[::1\\]:${origin6.port} direct .* ok$`));
    } finally {
      await origin6.close();
    }
  });

  it("sends bytes that came with the request once the direct destination is open, and counts them", async () => {
    const port = halfCloseOrigin.port;
    const answer = await exchange(agent.port, [0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, port >> 8, port & 0xff, ...Buffer.from("early")], { thenEnd: true });
    expect(answer.slice(0, 12)).toEqual([0x05, 0x00, 0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    expect(Buffer.from(answer.slice(12)).toString()).toBe("received 5 bytes");
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${port} direct up=5B down=16B .* ok$`));
  });

  it("resets the client when the direct destination resets mid-stream", async () => {
    const resetting = await startTcpOrigin((socket) => socket.once("data", () => socket.resetAndDestroy()));
    try {
      const socket = await socksConnect(agent.port, "127.0.0.1", resetting.port);
      const outcome = new Promise<string>((resolve) => {
        socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
        socket.on("end", () => resolve("clean end"));
      });
      socket.write("go");
      expect(await outcome).toBe("ECONNRESET");
      await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${resetting.port} direct .* reset: destination ECONNRESET$`));
    } finally {
      await resetting.close();
    }
  });

  it("resets the direct destination when the client resets mid-stream", async () => {
    let seen: (outcome: string) => void = () => {};
    const originSaw = new Promise<string>((resolve) => (seen = resolve));
    const watching = await startTcpOrigin((socket) => {
      socket.on("error", (error: NodeJS.ErrnoException) => seen(error.code ?? error.message));
      socket.on("end", () => seen("clean end"));
      socket.once("data", () => socket.write("ready"));
    });
    try {
      const socket = await socksConnect(agent.port, "127.0.0.1", watching.port);
      socket.on("error", () => {});
      socket.write("hello");
      await new Promise((resolve) => socket.once("data", resolve));
      socket.resetAndDestroy();
      expect(await originSaw).toBe("ECONNRESET");
      await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${watching.port} direct .* client closed the connection$`));
    } finally {
      await watching.close();
    }
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
