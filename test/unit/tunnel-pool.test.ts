// The warm pool (local-agent/tunnel-pool.ts) against a loopback WebSocket server standing in for
// the edge: it fills, replaces what is taken, renews idle spares, backs off from an edge that
// refuses or drops them, and closes everything on close(). Timings are shortened, not faked:
// the sockets are real.

import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { parseAgentCommand } from "../../local-agent/config.ts";
import { createLogger } from "../../local-agent/log.ts";
import { TunnelPool, type PoolTimings } from "../../local-agent/tunnel-pool.ts";
import { POOLED_HEADER, SUBPROTOCOL, SUBPROTOCOLS } from "../../worker/protocol.ts";

const TOKEN = "pool-test-token-0123456789";
const FAST: PoolTimings = { maxIdleMs: 60_000, firstRetryMs: 100, maxRetryMs: 400, minHealthyLifetimeMs: 1_000 };

/** What the stand-in edge does with each upgrade. */
type EdgeMode = "accept" | "refuse" | "drop";

type FakeEdge = {
  port: number;
  mode: EdgeMode;
  /** Request heads of every upgrade, in order. */
  upgrades: IncomingMessage[];
  /** Close code and reason of every accepted socket the agent closed. */
  closes: { code: number; reason: string }[];
  close(): Promise<void>;
};

async function startFakeEdge(mode: EdgeMode): Promise<FakeEdge> {
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false) });
  const sockets = new Set<Socket>();
  const edge: FakeEdge = { port: 0, mode, upgrades: [], closes: [], close: async () => {} };
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
      ws.on("close", (code, reason) => edge.closes.push({ code, reason: reason.toString() }));
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

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function poolFor(edge: FakeEdge, poolSize: number, timings: PoolTimings = FAST): { pool: TunnelPool; log: string[] } {
  const command = parseAgentCommand(["--edge", `http://127.0.0.1:${edge.port}`, "--pool-size", String(poolSize)], { EDGESOCKS_TOKEN: TOKEN });
  if (command.kind !== "run") throw new Error("expected a run command");
  const log: string[] = [];
  const pool = new TunnelPool(command.config, createLogger("debug", (line) => log.push(line.trim())), timings);
  cleanups.push(() => pool.close());
  return { pool, log };
}

async function until(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("TunnelPool", () => {
  it("opens pool-size spares marked pooled and authenticated, and replaces one that is taken", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const { pool, log } = poolFor(edge, 2);
    expect(pool.take()).toBeUndefined(); // nothing is ready yet
    pool.start();
    await until(() => pool.readyCount === 2, "two spares");
    for (const request of edge.upgrades) {
      expect(request.headers[POOLED_HEADER.toLowerCase()]).toBe("1");
      expect(request.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(request.headers["sec-websocket-protocol"]).toBe(SUBPROTOCOLS.join(","));
    }
    expect(log.some((line) => line.includes("warm pool: 2 of 2 spares ready"))).toBe(true);
    const taken = pool.take();
    expect(taken?.readyState).toBe(WebSocket.OPEN);
    cleanups.push(() => taken?.terminate());
    await until(() => pool.readyCount === 2 && edge.upgrades.length === 3, "the replacement");
    await sleep(200);
    expect(edge.upgrades).toHaveLength(3); // bounded: no more than the one replacement
  });

  it("renews a spare that stays unused for maxIdleMs, closing it with 1000", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const { pool } = poolFor(edge, 1, { ...FAST, maxIdleMs: 300 });
    pool.start();
    await until(() => edge.closes.length >= 1 && pool.readyCount === 1 && edge.upgrades.length >= 2, "a renewal");
    expect(edge.closes[0]).toEqual({ code: 1000, reason: "renewed" });
  });

  it("backs off from an edge that refuses, doubling the wait, and warns once", async () => {
    const edge = await startFakeEdge("refuse");
    cleanups.push(() => edge.close());
    const { pool, log } = poolFor(edge, 2);
    pool.start();
    // Waits of 100, 200, 400, 400 ms after rounds of two: about 5 rounds in 1.2 s, never a storm.
    await sleep(1_200);
    const attempts = edge.upgrades.length;
    expect(attempts).toBeGreaterThanOrEqual(6);
    expect(attempts).toBeLessThanOrEqual(12);
    const warnings = log.filter((line) => line.includes(" warn "));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("warm pool: cannot open a spare tunnel: edge refused the tunnel: HTTP 401 wrong token; retrying in 100 ms");
    expect(log.some((line) => line.includes(" debug ") && line.includes("retrying in 400 ms"))).toBe(true);
    expect(log.join("\n")).not.toContain(TOKEN);
    expect(pool.take()).toBeUndefined();
  });

  it("counts a spare the edge drops at once as a failure, not a reason to reopen at once", async () => {
    const edge = await startFakeEdge("drop");
    cleanups.push(() => edge.close());
    const { pool, log } = poolFor(edge, 1);
    pool.start();
    await sleep(1_000);
    expect(edge.upgrades.length).toBeGreaterThanOrEqual(2);
    expect(edge.upgrades.length).toBeLessThanOrEqual(6);
    expect(log.some((line) => line.includes("warm pool: cannot open a spare tunnel: closed by the edge (1000)"))).toBe(true);
  });

  it("fills again once a refusing edge comes back", async () => {
    const edge = await startFakeEdge("refuse");
    cleanups.push(() => edge.close());
    const { pool } = poolFor(edge, 2);
    pool.start();
    await until(() => edge.upgrades.length >= 2, "the first refusals");
    edge.mode = "accept";
    await until(() => pool.readyCount === 2, "two spares after the edge came back");
  });

  it("close() closes every spare and stops refilling", async () => {
    const edge = await startFakeEdge("accept");
    cleanups.push(() => edge.close());
    const { pool } = poolFor(edge, 2);
    pool.start();
    await until(() => pool.readyCount === 2, "two spares");
    pool.close();
    await until(() => edge.closes.length === 2, "both spares closed");
    expect(edge.closes.every((close) => close.code === 1000 && close.reason === "agent closing")).toBe(true);
    const upgrades = edge.upgrades.length;
    expect(pool.take()).toBeUndefined();
    await sleep(300);
    expect(edge.upgrades).toHaveLength(upgrades);
  });
});
