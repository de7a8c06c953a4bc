// The warm pool (local-agent/tunnel/tunnel-pool.ts) against a loopback WebSocket server standing in for
// the edge: it fills, replaces what is taken, renews idle spares, drops a spare that misses a
// pong, skips a dead spare when one is taken, backs off from an edge that refuses or drops
// spares (doubling up to its cap), and closes everything on close().
//
// The sockets are real; the clock is not. The pool is driven by timers (retire, retry, keepalive
// ping), so each test fakes setTimeout/setInterval/Date and moves time itself: a retry that comes
// 1 ms early or a storm of opens shows up as a count, not as a race against a sleep. I/O still
// runs on the real event loop, and the tests wait for it with events and conditions
// (`until`, polling on real timers captured before any faking).

import { createServer, type IncomingMessage, type Server } from "node:http";
import net, { type AddressInfo, type Socket } from "node:net";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { parseAgentCommand } from "../../local-agent/config/config.ts";
import { createLogger } from "../../local-agent/log.ts";
import { TunnelPool, type PoolTimings } from "../../local-agent/tunnel/tunnel-pool.ts";
import { FrameType, POOLED_HEADER, REUSED_MAX_IDLE_MS, StreamStatus, SUBPROTOCOL, SUBPROTOCOLS, encodeData, encodeEnd, encodeOpened, encodeReset, encodeWindow } from "../../worker/protocol/index.ts";

const TOKEN = "pool-test-token-0123456789";
/** 0 refill delay: a take() dials its replacement at once, so the tests count dials without moving the clock. */
const FAST: PoolTimings = { maxIdleMs: 60_000, firstRetryMs: 100, maxRetryMs: 400, minHealthyLifetimeMs: 1_000, refillDelayMs: 0 };
/** The keepalive interval of the ping tests; longer than minHealthyLifetimeMs, so a spare dropped after two is no failure. */
const PING_INTERVAL_MS = 1_000;
/**
 * The keepalive interval of every other test: the largest the agent accepts, so no ping fires
 * while a test moves the clock in one synchronous step (a spare gets no chance to answer then).
 */
const NO_PING_MS = 600_000;

// Captured before any test fakes them: the waits below run on the real clock.
const realSetTimeout = globalThis.setTimeout;
const realNow = () => performance.now();

/** What the stand-in edge does with each upgrade. */
type EdgeMode = "accept" | "refuse" | "drop";

type FakeEdge = {
  port: number;
  mode: EdgeMode;
  /** Request heads of every upgrade, in order. */
  upgrades: IncomingMessage[];
  /** The edge's end of every accepted tunnel, in order of acceptance. */
  tunnels: WebSocket[];
  /** Close code and reason of every accepted tunnel once it closed, by its index in `tunnels`. */
  closes: Map<number, { code: number; reason: string }>;
  /** Pings each accepted tunnel has received from the agent, by index. */
  pings: Map<number, number>;
  /** Indexes of tunnels whose pings the edge does not answer. */
  unanswered: Set<number>;
  /** Index of every tunnel that received a message, in order. */
  messagesOn: number[];
  close(): Promise<void>;
};

async function startFakeEdge(mode: EdgeMode): Promise<FakeEdge> {
  // Pongs are the edge's to give or withhold (autoPong off), as a hung Worker withholds them.
  const wss = new WebSocketServer({ noServer: true, autoPong: false, handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false) });
  const sockets = new Set<Socket>();
  const edge: FakeEdge = {
    port: 0,
    mode,
    upgrades: [],
    tunnels: [],
    closes: new Map(),
    pings: new Map(),
    unanswered: new Set(),
    messagesOn: [],
    close: async () => {},
  };
  const server: Server = createServer((_, response) => response.writeHead(404).end());
  server.on("connection", (socket) => sockets.add(socket));
  server.on("upgrade", (request, socket, head) => {
    edge.upgrades.push(request);
    if (edge.mode === "refuse") {
      socket.end("HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nwrong token\n");
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      if (edge.mode === "drop") {
        ws.close(1000, "");
        return;
      }
      const index = edge.tunnels.push(ws) - 1;
      ws.on("close", (code, reason) => edge.closes.set(index, { code, reason: reason.toString() }));
      // The spare's own PING (v4, its idle round trip) is not a message the tests count.
      ws.on("message", (data: Buffer) => data[0] !== FrameType.Ping && edge.messagesOn.push(index));
      ws.on("ping", (data) => {
        edge.pings.set(index, (edge.pings.get(index) ?? 0) + 1);
        if (!edge.unanswered.has(index)) ws.pong(data);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  edge.port = (server.address() as AddressInfo).port;
  edge.close = () =>
    new Promise<void>((resolve) => {
      for (const client of wss.clients) client.terminate();
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return edge;
}

/**
 * Resolves once the agent has read every pong the edge sent on tunnel `index` so far: the edge
 * pings, and the agent answers a ping only after the frames ahead of it on the same connection.
 */
function agentReadPongs(edge: FakeEdge, index: number): Promise<void> {
  const tunnel = edge.tunnels[index];
  if (!tunnel) throw new Error(`no tunnel ${index}`);
  return new Promise((resolve) => {
    tunnel.once("pong", () => resolve());
    tunnel.ping();
  });
}

/**
 * The fake-clock time, from now, of every connection the pool dials to `port`, seen where `ws` makes it
 * (net.connect, called synchronously from the pool's timer or take()): the moment of each attempt,
 * with no network delay to wait out before counting it.
 */
function recordDials(port: number): number[] {
  const dials: number[] = [];
  const startMs = Date.now();
  const original = net.connect;
  vi.spyOn(net, "connect").mockImplementation(((...args: unknown[]) => {
    const options = args[0];
    if (typeof options === "object" && options !== null && Number((options as { port?: unknown }).port) === port) dials.push(Date.now() - startMs);
    return Reflect.apply(original, net, args) as Socket;
  }) as typeof net.connect);
  return dials;
}

const cleanups: (() => unknown)[] = [];
beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
});
afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function poolFor(edge: FakeEdge, poolSize: number, timings?: PoolTimings, pingIntervalMs = NO_PING_MS, extraArgs: string[] = []): { pool: TunnelPool; log: string[] } {
  const command = parseAgentCommand(
    ["--edge", `http://127.0.0.1:${edge.port}`, "--pool-size", String(poolSize), "--ping-interval-ms", String(pingIntervalMs), ...extraArgs],
    { EDGESOCKS_TOKEN: TOKEN },
  );
  if (command.kind !== "run") throw new Error("expected a run command");
  const log: string[] = [];
  // `timings` undefined: the pool's own defaults, the numbers its documentation promises.
  const pool = new TunnelPool(command.config, createLogger("debug", (line) => log.push(line.trim())), timings);
  cleanups.push(() => pool.close());
  return { pool, log };
}

/** Waits (on the real clock) until `condition` holds: for I/O, which the fake clock does not drive. */
async function until(condition: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const deadline = realNow() + timeoutMs;
  while (!condition()) {
    if (realNow() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => realSetTimeout(resolve, 5));
  }
}

const failureLines = (log: string[]) => log.filter((line) => line.includes("warm pool: cannot open a spare tunnel"));

describe("TunnelPool", () => {
  it("opens pool-size spares marked pooled and authenticated, and replaces one that is taken, and only that one", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool, log } = poolFor(edge, 2, FAST);
    expect(pool.take()).toBeUndefined(); // nothing is ready yet
    pool.start();
    await until(() => pool.readyCount === 2, "two spares");
    for (const request of edge.upgrades) {
      expect(request.headers[POOLED_HEADER.toLowerCase()]).toBe("1");
      expect(request.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(request.headers["sec-websocket-protocol"]).toBe(SUBPROTOCOLS.join(","));
    }
    expect(log.some((line) => line.includes("warm pool: 2 of 2 spares ready"))).toBe(true);
    // The take() above, with nothing ready, dialled nothing of its own beyond the pool size.
    expect(dials).toHaveLength(2);
    const taken = pool.take();
    expect(taken?.readyState).toBe(WebSocket.OPEN);
    cleanups.push(() => taken?.terminate());
    expect(dials).toHaveLength(3); // the replacement, dialled by take() itself
    await until(() => pool.readyCount === 2, "the replacement");
    // Bounded: the replacement's open dialled nothing more, and neither does any timer short of
    // the first renewal.
    vi.advanceTimersByTime(FAST.maxIdleMs - 1);
    expect(dials).toHaveLength(3);
    expect(edge.upgrades).toHaveLength(3);
  });

  it("dials the replacements for takes in a row once, 25 ms after the first, not beside the taking streams' opens; none after close()", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { refillDelayMs: _zero, ...ownRefillDelay } = FAST; // the pool's own 25 ms
    const { pool } = poolFor(edge, 3, ownRefillDelay);
    pool.start();
    await until(() => pool.readyCount === 3, "three spares");
    for (const taken of [pool.take(), pool.take()]) cleanups.push(() => taken?.terminate());
    vi.advanceTimersByTime(24);
    expect(dials).toHaveLength(3);
    vi.advanceTimersByTime(1);
    expect(dials).toHaveLength(5); // both replacements, in one refill
    await until(() => pool.readyCount === 3, "the replacements");
    const last = pool.take();
    cleanups.push(() => last?.terminate());
    pool.close();
    vi.advanceTimersByTime(1_000);
    expect(dials).toHaveLength(5);
  });

  it("renews a spare that stays unused for maxIdleMs, closing it with 1000, not a millisecond sooner", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool } = poolFor(edge, 1, { ...FAST, maxIdleMs: 300 });
    pool.start();
    await until(() => pool.readyCount === 1, "a spare");
    vi.advanceTimersByTime(299);
    expect(dials).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(dials).toEqual([0, 300]);
    await until(() => edge.closes.has(0) && pool.readyCount === 1, "a renewal");
    expect(edge.closes.get(0)).toEqual({ code: 1000, reason: "renewed" });
  });

  it("leaves no timer behind for a spare the edge refused", async () => {
    const edge = await startFakeEdge("refuse");
    cleanups.push(() => edge.close());
    const { pool, log } = poolFor(edge, 1, FAST);
    pool.start();
    const pendingTimers: number[] = [];
    for (let failure = 0; failure < 5; failure++) {
      await until(() => failureLines(log).length === failure + 1, `refusal ${failure + 1}`);
      pendingTimers.push(vi.getTimerCount());
      vi.advanceTimersByTime(FAST.maxRetryMs);
    }
    expect(pendingTimers).toEqual([1, 1, 1, 1, 1]); // the retry timer only: no keepalive of a refused spare
  });

  it("retries an edge nothing answers at least every 5 s, since such an attempt costs no Worker request", async () => {
    const edge = await startFakeEdge("accept");
    await edge.close(); // its port now refuses connections: no HTTP answer at all
    const dials = recordDials(edge.port);
    const { pool, log } = poolFor(edge, 1); // the pool's own timings
    pool.start();
    const waitsMs = [1_000, 2_000, 4_000, 5_000, 5_000];
    for (const [failure, waitMs] of waitsMs.entries()) {
      await until(() => failureLines(log).length === failure + 1, `failure ${failure + 1}`);
      vi.advanceTimersByTime(waitMs - 1);
      expect(dials).toHaveLength(failure + 1);
      vi.advanceTimersByTime(1);
      expect(dials).toHaveLength(failure + 2);
    }
    expect(failureLines(log)[0]).toMatch(/ECONNREFUSED.*retrying in 1 s/);
  });

  it("backs off from an edge that refuses, doubling the wait from 1 s up to its 60 s cap, and warns once", async () => {
    const edge = await startFakeEdge("refuse");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool, log } = poolFor(edge, 1); // the pool's own timings: 1 s first, 60 s at most
    pool.start();
    const waitsMs = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000];
    for (const [failure, waitMs] of waitsMs.entries()) {
      await until(() => failureLines(log).length === failure + 1, `refusal ${failure + 1}`);
      expect(failureLines(log)[failure]).toContain(`retrying in ${waitMs / 1000} s`);
      // The clock stands still while the refusal travels: the wait starts at the last dial.
      vi.advanceTimersByTime(waitMs - 1);
      expect(dials).toHaveLength(failure + 1);
      vi.advanceTimersByTime(1);
      expect(dials).toHaveLength(failure + 2);
    }
    const gapsMs = dials.slice(1).map((dialMs, index) => dialMs - (dials[index] ?? 0));
    expect(gapsMs).toEqual(waitsMs);
    const warnings = log.filter((line) => line.includes(" warn "));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("warm pool: cannot open a spare tunnel: edge refused the tunnel: HTTP 401 wrong token; retrying in 1 s");
    expect(log.join("\n")).not.toContain(TOKEN);
    expect(pool.take()).toBeUndefined();
  });

  it("counts a spare the edge drops at once as a failure, not a reason to reopen at once", async () => {
    const edge = await startFakeEdge("drop");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool, log } = poolFor(edge, 1, FAST);
    pool.start();
    for (const [failure, waitMs] of [100, 200, 400, 400].entries()) {
      await until(() => failureLines(log).length === failure + 1, `drop ${failure + 1}`);
      expect(failureLines(log)[failure]).toContain(`closed by the edge (1000); retrying in ${waitMs} ms`);
      vi.advanceTimersByTime(waitMs - 1);
      expect(dials).toHaveLength(failure + 1);
      vi.advanceTimersByTime(1);
      expect(dials).toHaveLength(failure + 2);
    }
  });

  it("fills again once a refusing edge comes back", async () => {
    const edge = await startFakeEdge("refuse");
    cleanups.push(() => edge.close());
    const { pool, log } = poolFor(edge, 2, FAST);
    pool.start();
    await until(() => edge.upgrades.length === 2 && failureLines(log).length === 1, "the first refusals");
    edge.mode = "accept";
    // Time goes on while the edge is back: the second refusal may still be on its way to the
    // pool and start a retry of its own, so the clock moves until both spares are open.
    await until(() => {
      if (pool.readyCount < 2) vi.advanceTimersByTime(FAST.firstRetryMs);
      return pool.readyCount === 2;
    }, "two spares after the edge came back");
    expect(edge.upgrades.length).toBeLessThanOrEqual(4);
  });

  it("drops a spare whose pong is missed and opens a replacement", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool } = poolFor(edge, 1, FAST, PING_INTERVAL_MS);
    pool.start();
    await until(() => pool.readyCount === 1, "a spare");
    edge.unanswered.add(0);
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    await until(() => edge.pings.get(0) === 1, "the agent's ping");
    expect(dials).toHaveLength(1);
    // No pong by the next ping: the agent terminates the tunnel (no close frame: 1006 here).
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    await until(() => edge.closes.has(0), "the silent spare dropped");
    expect(edge.closes.get(0)?.code).toBe(1006);
    // It lived two intervals, past minHealthyLifetimeMs: replaced at once, no backoff.
    await until(() => pool.readyCount === 1 && edge.tunnels.length === 2, "the replacement");
    expect(dials).toEqual([0, 2 * PING_INTERVAL_MS]);
    const taken = pool.take();
    cleanups.push(() => taken?.terminate());
    expect(taken?.readyState).toBe(WebSocket.OPEN);
    taken?.send("which tunnel");
    await until(() => edge.messagesOn.length === 1, "the message on the taken tunnel");
    expect(edge.messagesOn).toEqual([1]);
  });

  it("keeps a spare that answers every ping", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool } = poolFor(edge, 1, FAST, PING_INTERVAL_MS);
    pool.start();
    await until(() => pool.readyCount === 1, "a spare");
    for (let ping = 1; ping <= 3; ping++) {
      vi.advanceTimersByTime(PING_INTERVAL_MS);
      await until(() => edge.pings.get(0) === ping, `ping ${ping}`);
      await agentReadPongs(edge, 0);
    }
    // A fourth ping, not a terminate, proves the third pong counted.
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    await until(() => edge.pings.get(0) === 4, "ping 4");
    expect(edge.closes.has(0)).toBe(false);
    expect(dials).toHaveLength(1);
    expect(pool.readyCount).toBe(1);
  });

  it("skips a spare that died while waiting when one is taken: the caller gets a live tunnel", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const { pool } = poolFor(edge, 2, FAST, PING_INTERVAL_MS);
    pool.start();
    await until(() => pool.readyCount === 2, "two spares");
    // Which spare is first in line is the agent's order of opens, not the edge's: take the first
    // and see where it lands; the other is then first, and its replacement behind it.
    const first = pool.take();
    first?.send("which tunnel");
    await until(() => edge.messagesOn.length === 1, "the message on the first tunnel");
    first?.terminate();
    const firstIndex = edge.messagesOn[0];
    const waiting = firstIndex === 0 ? 1 : 0;
    await until(() => pool.readyCount === 2 && edge.tunnels.length === 3, "the replacement");
    const behind = 2;
    edge.unanswered.add(waiting);
    // The clock has not moved since start: both spares ping on the same tick.
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    await until(() => edge.pings.get(waiting) === 1 && edge.pings.get(behind) === 1, "both pings");
    await agentReadPongs(edge, behind);
    // This tick terminates the silent spare; take() runs before its close event can.
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    const taken = pool.take();
    cleanups.push(() => taken?.terminate());
    expect(taken?.readyState).toBe(WebSocket.OPEN);
    taken?.send("which tunnel");
    await until(() => edge.messagesOn.length === 2, "the message on the taken tunnel");
    expect(edge.messagesOn[1]).toBe(behind);
    await until(() => edge.closes.has(waiting), "the dead spare closed");
    expect(edge.closes.get(waiting)?.code).toBe(1006);
  });

  it("skips a dead spare when it is the only one: the caller opens a fresh tunnel, and the pool refills", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool } = poolFor(edge, 1, FAST, PING_INTERVAL_MS);
    pool.start();
    await until(() => pool.readyCount === 1, "a spare");
    edge.unanswered.add(0);
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    await until(() => edge.pings.get(0) === 1, "the agent's ping");
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    expect(pool.take()).toBeUndefined();
    expect(dials).toHaveLength(2); // the refill, dialled by take() itself
    await until(() => pool.readyCount === 1 && edge.closes.has(0), "a live spare in its place");
  });

  it("takes back a tunnel after its stream and hands it out first, dropping the last stream's leftovers, and closes it 4409 for any other frame", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const { pool } = poolFor(edge, 1, FAST);
    pool.start();
    await until(() => pool.readyCount === 1, "a spare");
    const tunnel = pool.take() as WebSocket;
    await until(() => pool.readyCount === 1, "its replacement");
    expect(pool.streamsCarriedBefore(tunnel)).toBe(0);
    expect(pool.giveBack(tunnel, 1)).toBe(true);
    expect(pool.readyCount).toBe(2);
    // What the edge may still send the stream that is over: a WINDOW, DATA, END, RESET.
    const edgeEnd = edge.tunnels[0] as WebSocket;
    for (const frame of [encodeWindow(4096), encodeData(new Uint8Array(10)), encodeEnd(), encodeReset(StreamStatus.GeneralFailure, "late")]) edgeEnd.send(frame);
    await agentReadPongs(edge, 0); // the agent has read every frame sent before the pong
    expect(edge.closes.has(0)).toBe(false);
    // The taken-back tunnel goes out ahead of the fresh spare, counted.
    expect(pool.take()).toBe(tunnel);
    expect(pool.streamsCarriedBefore(tunnel)).toBe(1);
    expect(pool.giveBack(tunnel, 2)).toBe(true);
    edgeEnd.send(encodeOpened(StreamStatus.Ok, 65_536));
    await until(() => edge.closes.has(0), "the tunnel closed");
    expect(edge.closes.get(0)).toEqual({ code: 4409, reason: "edge sent a frame to an idle tunnel" });
    expect(pool.readyCount).toBe(1);
  });

  it("closes a taken-back tunnel that waited REUSED_MAX_IDLE_MS, before the edge's own timeout", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const { pool } = poolFor(edge, 0);
    const tunnel = new WebSocket(`ws://127.0.0.1:${edge.port}/tunnel`, [...SUBPROTOCOLS]);
    cleanups.push(() => tunnel.terminate());
    await new Promise((resolve) => tunnel.once("open", resolve));
    expect(pool.giveBack(tunnel, 1)).toBe(true);
    vi.advanceTimersByTime(REUSED_MAX_IDLE_MS - 1);
    expect(pool.readyCount).toBe(1);
    vi.advanceTimersByTime(1);
    expect(pool.readyCount).toBe(0);
    await until(() => edge.closes.has(0), "the tunnel closed");
    expect(edge.closes.get(0)).toEqual({ code: 1000, reason: "idle after its stream" });
  });

  it("will not take back a tunnel that has carried --max-streams-per-tunnel streams, nor once closing", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const { pool } = poolFor(edge, 0, FAST, NO_PING_MS, ["--max-streams-per-tunnel", "2"]);
    const tunnel = new WebSocket(`ws://127.0.0.1:${edge.port}/tunnel`, [...SUBPROTOCOLS]);
    cleanups.push(() => tunnel.terminate());
    await new Promise((resolve) => tunnel.once("open", resolve));
    expect(pool.giveBack(tunnel, 2)).toBe(false);
    expect(pool.giveBack(tunnel, 1)).toBe(true);
    expect(pool.take()).toBe(tunnel);
    pool.close();
    expect(pool.giveBack(tunnel, 1)).toBe(false);
  });

  it("lets its spares lapse while no client comes, and refills on the next take()", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool } = poolFor(edge, 1, { ...FAST, maxIdleMs: 1_000, idleShrinkMs: 2_500 });
    pool.start();
    await until(() => pool.readyCount === 1, "a spare");
    for (const renewal of [1, 2]) {
      vi.advanceTimersByTime(1_000);
      await until(() => pool.readyCount === 1 && edge.closes.size === renewal, `renewal ${renewal}`);
    }
    expect(dials).toHaveLength(3);
    // 3 s without a take(), past idleShrinkMs: the spare lapses and no replacement is dialled.
    vi.advanceTimersByTime(1_000);
    await until(() => edge.closes.size === 3, "the lapsed spare closed");
    expect(edge.closes.get(2)).toEqual({ code: 1000, reason: "idle" });
    vi.advanceTimersByTime(24 * 3_600_000);
    expect(dials).toHaveLength(3);
    expect(pool.take()).toBeUndefined();
    expect(dials).toHaveLength(4);
    await until(() => pool.readyCount === 1, "the refill");
  });

  it("close() closes every spare and stops refilling", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const dials = recordDials(edge.port);
    const { pool } = poolFor(edge, 2, FAST);
    pool.start();
    await until(() => pool.readyCount === 2, "two spares");
    pool.close();
    await until(() => edge.closes.size === 2, "both spares closed");
    expect([...edge.closes.values()]).toEqual([
      { code: 1000, reason: "agent closing" },
      { code: 1000, reason: "agent closing" },
    ]);
    expect(pool.take()).toBeUndefined();
    // Past every timer the pool could have left: renewal, retry at its cap.
    vi.advanceTimersByTime(FAST.maxIdleMs + 60_000);
    expect(dials).toHaveLength(2);
  });
});
