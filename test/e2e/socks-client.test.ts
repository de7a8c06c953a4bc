// The npm `socks` client through the real agent and the real Worker: half-close, concurrency,
// mid-stream failures and a reader that stalls.

import { createHash, randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { countThenReply, echo, startTcpOrigin, writeRandom, type Listening } from "./origins.ts";
import { findWorkerdPids, freePort, rssBytes, startAgent, type RunningAgent } from "./processes.ts";
import { readAll, socksConnect } from "./socks-client.ts";
import { DEFAULT_WINDOW_BYTES } from "../../worker/protocol/index.ts";
import { DEFAULT_MAX_WINDOW_BYTES } from "../../worker/protocol/flow-control.ts";
import type { IsolateHold } from "../../worker/tunnel/held-bytes.ts";
import type { Server } from "node:net";

const KIB = 1024;
const MIB = 1024 * KIB;

let agent: RunningAgent;
const origins: Listening<Server>[] = [];
async function origin(handle: (socket: Socket) => void, host?: string): Promise<number> {
  const listening = await startTcpOrigin(handle, host);
  origins.push(listening);
  return listening.port;
}

beforeAll(async () => {
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"));
});
afterAll(async () => {
  await agent?.stop();
  await Promise.all(origins.map((listening) => listening.close()));
});

describe("socks client through agent and edge", () => {
  it("gets the full answer after it shuts down its write side (half-close)", async () => {
    const port = await origin(countThenReply);
    const socket = await socksConnect(agent.port, "127.0.0.1", port);
    const answer = readAll(socket);
    socket.end(randomBytes(3 * MIB + 17));
    expect((await answer).toString()).toBe(`received ${3 * MIB + 17} bytes`);
  });

  it("speaks IPv6 address type to [::1]", async () => {
    const port = await origin(echo, "::1");
    const socket = await socksConnect(agent.port, "::1", port);
    const answer = readAll(socket);
    socket.end("over ipv6");
    expect((await answer).toString()).toBe("over ipv6");
  });

  it("relays 200 concurrent connections, each byte-exact", async () => {
    const port = await origin(echo);
    const results = await Promise.all(
      Array.from({ length: 200 }, async () => {
        const payload = randomBytes(64 * KIB);
        const socket = await socksConnect(agent.port, "127.0.0.1", port, 60_000);
        const answer = readAll(socket);
        socket.end(payload);
        return Buffer.compare(await answer, payload) === 0;
      }),
    );
    expect(results.filter((ok) => ok)).toHaveLength(200);
  });

  it("is refused with ConnectionRefused for a closed port", async () => {
    const closedPort = await freePort();
    await expect(socksConnect(agent.port, "127.0.0.1", closedPort)).rejects.toThrow(/ConnectionRefused/);
  });

  it("resets the client when the destination resets mid-stream", async () => {
    const port = await origin((socket) => {
      socket.write(randomBytes(256 * KIB), () => setTimeout(() => socket.resetAndDestroy(), 100));
    });
    const socket = await socksConnect(agent.port, "127.0.0.1", port);
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      socket.on("data", () => {});
      socket.once("error", resolve);
      socket.once("end", () => resolve(undefined));
    });
    // A cut must not look like a clean end: the client sees a reset, not FIN.
    expect(error?.code).toBe("ECONNRESET");
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${port} .* reset: edge reset the stream`));
  });
});

type RelayMemory = { workerd: number; agent: number };

/**
 * Samples the RSS of the Worker's own workerd (not wrangler's dev proxy in front of it: the Worker
 * is what must stay bounded) and of the agent every 200 ms for 6 s, long enough that an unbounded
 * relay would have buffered a whole 512 MiB transfer; resolves with each one's peak growth over
 * `baseline` (from relayRss).
 */
async function peakGrowthOverStall(baseline: RelayMemory & { workerdPid: number }): Promise<RelayMemory> {
  const peak = { workerd: 0, agent: 0 };
  for (let sample = 0; sample < 30; sample++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    peak.workerd = Math.max(peak.workerd, rssBytes(baseline.workerdPid));
    peak.agent = Math.max(peak.agent, rssBytes(agent.pid));
  }
  return { workerd: peak.workerd - baseline.workerd, agent: peak.agent - baseline.agent };
}

/** What the edge's isolate holds for its streams now, by flow control's count (GET /dev/counters). */
async function edgeHold(): Promise<IsolateHold & { peakWindowBytes: number }> {
  const response = await fetch(`${inject("edgeUrl")}/dev/counters`, { headers: { Authorization: `Bearer ${inject("edgeToken")}` } });
  expect(response.status).toBe(200);
  return (await response.json()) as IsolateHold & { peakWindowBytes: number };
}

/** What the agent holds for its streams now: the line its SIGUSR2 logs. */
async function agentHold(): Promise<{ streams: number; download: number; upload: number; peakWindow: number }> {
  const before = agent.log().length;
  process.kill(agent.pid, "SIGUSR2");
  for (const deadline = Date.now() + 5_000; Date.now() < deadline; ) {
    const match = /held: (\d+) streams through the edge; download (\d+) bytes not yet taken by clients, upload (\d+) bytes not yet sent; peak window (\d+) bytes/.exec(
      agent.log().slice(before),
    );
    if (match) return { streams: Number(match[1]), download: Number(match[2]), upload: Number(match[3]), peakWindow: Number(match[4]) };
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error("the agent logged no held line after SIGUSR2");
}

/** The RSS of the Worker's own workerd and of the agent now, with workerd's pid for later samples. */
function relayRss(): RelayMemory & { workerdPid: number } {
  const workerdPid = findWorkerdPids({ wranglerPid: inject("edgeWranglerPid"), url: inject("edgeUrl") }).workerPid;
  return { workerdPid, workerd: rssBytes(workerdPid), agent: rssBytes(agent.pid) };
}

describe("a client that stops reading a 512 MiB download", () => {
  it("keeps workerd's and the agent's memory bounded, then finishes intact", async () => {
    const totalBytes = 512 * MIB;
    let sentSha256: Promise<string> | undefined;
    const port = await origin((socket) => {
      sentSha256 = writeRandom(socket, totalBytes).then(
        (sha) => {
          socket.end();
          return sha;
        },
        (error: Error) => `origin write failed: ${error.message}`,
      );
    });
    const baseline = relayRss();

    const socket = await socksConnect(agent.port, "127.0.0.1", port);
    const hash = createHash("sha256");
    let receivedBytes = 0;
    socket.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      receivedBytes += chunk.byteLength;
      if (receivedBytes >= 4 * MIB && receivedBytes - chunk.byteLength < 4 * MIB) socket.pause();
    });
    const ended = new Promise<void>((resolve, reject) => {
      socket.once("end", resolve);
      socket.once("error", reject);
    });

    const growth = await peakGrowthOverStall(baseline);
    const stalledAt = receivedBytes;
    expect(stalledAt).toBeLessThan(totalBytes / 4);
    expect(growth.workerd).toBeLessThan(128 * MIB);
    expect(growth.agent).toBeLessThan(128 * MIB);
    // The promise itself, by flow control's counters: the edge has sent one window it has not had
    // credited back (more than half of it: the stall is the window's doing, not a slow origin),
    // and the agent holds no more than that window for a client that does not read. The window
    // is the one auto-tuning reached before the stall (even loopback may double it once or twice;
    // a stalled stream grows it no further, since growth needs bytes delivered).
    const edge = await edgeHold();
    const held = await agentHold();
    const window = Math.max(DEFAULT_WINDOW_BYTES, held.peakWindow);
    expect(window).toBeLessThanOrEqual(DEFAULT_MAX_WINDOW_BYTES);
    expect(edge.streams).toBe(1);
    expect(edge.downloadUncreditedBytes).toBeGreaterThan(DEFAULT_WINDOW_BYTES / 2);
    expect(edge.downloadUncreditedBytes).toBeLessThanOrEqual(window);
    expect(held.streams).toBe(1);
    expect(held.download).toBeLessThanOrEqual(window);

    socket.resume();
    await ended;
    expect(receivedBytes).toBe(totalBytes);
    expect(hash.digest("hex")).toBe(await sentSha256);
    console.log(
      `stalled at ${(stalledAt / MIB).toFixed(1)} MiB; RSS growth while stalled: workerd ${(growth.workerd / MIB).toFixed(1)} MiB, agent ${(growth.agent / MIB).toFixed(1)} MiB`,
    );
  });
});

describe("a destination that stops reading a 512 MiB upload", () => {
  it("keeps workerd's and the agent's memory bounded and holds the client back, then delivers every byte", async () => {
    const totalBytes = 512 * MIB;
    let destinationSocket: Socket | undefined;
    let receivedBytes = 0;
    let stalled!: () => void;
    const reachedStall = new Promise<void>((resolve) => (stalled = resolve));
    let received!: Promise<string>;
    const port = await origin((socket) => {
      destinationSocket = socket;
      const hash = createHash("sha256");
      received = new Promise((resolve, reject) => {
        socket.on("data", (chunk: Buffer) => {
          hash.update(chunk);
          receivedBytes += chunk.byteLength;
          if (receivedBytes >= 4 * MIB && receivedBytes - chunk.byteLength < 4 * MIB) {
            socket.pause();
            stalled();
          }
        });
        socket.once("end", () => {
          resolve(hash.digest("hex"));
          socket.end();
        });
        socket.once("error", reject);
      });
    });
    const baseline = relayRss();

    const socket = await socksConnect(agent.port, "127.0.0.1", port);
    const closed = new Promise<void>((resolve, reject) => {
      socket.once("close", () => resolve());
      socket.once("error", reject);
    });
    socket.resume();
    const sentSha256 = writeRandom(socket, totalBytes).then((sha) => {
      socket.end();
      return sha;
    });
    await reachedStall;

    const growth = await peakGrowthOverStall(baseline);
    // What the client got into the kernel: the destination's 4 MiB, socket buffers on three hops,
    // and the windows; not the file.
    const clientWroteWhileStalled = socket.bytesWritten;
    expect(clientWroteWhileStalled).toBeLessThan(totalBytes / 4);
    expect(growth.workerd).toBeLessThan(128 * MIB);
    expect(growth.agent).toBeLessThan(128 * MIB);
    // By the counters: the edge holds at most its window of upload for a destination that does
    // not read, and the agent at most one frame it may send plus one frame's read-ahead.
    const edge = await edgeHold();
    expect(edge.peakWindowBytes).toBeLessThanOrEqual(DEFAULT_MAX_WINDOW_BYTES);
    expect(edge.streams).toBe(1);
    expect(edge.uploadHeldBytes).toBeGreaterThan(0);
    expect(edge.uploadHeldBytes).toBeLessThanOrEqual(Math.max(DEFAULT_WINDOW_BYTES, edge.peakWindowBytes));
    const held = await agentHold();
    expect(held.streams).toBe(1);
    expect(held.upload).toBeLessThanOrEqual(2 * 256 * 1024);

    destinationSocket?.resume();
    const [sent, got] = await Promise.all([sentSha256, received]);
    await closed;
    expect(receivedBytes).toBe(totalBytes);
    expect(got).toBe(sent);
    console.log(
      `client held at ${(clientWroteWhileStalled / MIB).toFixed(1)} MiB written; RSS growth while stalled: workerd ${(growth.workerd / MIB).toFixed(1)} MiB, agent ${(growth.agent / MIB).toFixed(1)} MiB`,
    );
  });
});

describe("GET /dev/counters on the dev edge (EDGESOCKS_DEV_COUNTERS=1)", () => {
  it("answers 401 without the token, and the counts with it", async () => {
    const refused = await fetch(`${inject("edgeUrl")}/dev/counters`);
    expect(refused.status).toBe(401);
    expect(await edgeHold()).toMatchObject({ streams: expect.any(Number), uploadHeldBytes: expect.any(Number), downloadUncreditedBytes: expect.any(Number) });
  });

  it("reports the budget and the peak window, and starts the peaks over on ?reset=peaks after answering", async () => {
    const read = async (query = "") => {
      const response = await fetch(`${inject("edgeUrl")}/dev/counters${query}`, { headers: { Authorization: `Bearer ${inject("edgeToken")}` } });
      return (await response.json()) as { budgetBytes: number; peakWindowBytes: number; peakBudgetInUseBytes: number; budgetInUseBytes: number };
    };
    // The stall tests above grew windows and filled part of the budget.
    const before = await read("?reset=peaks");
    expect(before.budgetBytes).toBe(64 * MIB);
    expect(before.peakWindowBytes).toBeGreaterThan(0);
    expect(before.peakBudgetInUseBytes).toBeGreaterThan(0);
    const after = await read();
    expect(after.peakWindowBytes).toBe(0);
    expect(after.peakBudgetInUseBytes).toBe(after.budgetInUseBytes);
  });
});
