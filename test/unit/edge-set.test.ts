// Several edges (local-agent/tunnel/edge-set.ts, open-attempts.ts): which edge a new stream goes
// to, how a failing edge is avoided, backed off from, probed and taken back, and which failed
// opens may be tried again.
//
// The chooser is pure and tested as such. The rest runs against loopback WebSocket servers
// standing in for two edges, on a fake clock as in tunnel-pool.test.ts: the sockets are real,
// timers and Date are not, so a probe that comes 1 ms early shows up as a count, not a race.

import { createServer, type Server } from "node:http";
import net, { type AddressInfo, type Socket } from "node:net";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { WebSocketServer } from "ws";
import { parseAgentCommand } from "../../local-agent/config/config.ts";
import { createLogger } from "../../local-agent/log.ts";
import { EdgeSet, chooseEdge, type EdgeStanding } from "../../local-agent/tunnel/edge-set.ts";
import { OpenAttempts, mayRetry, neverConnected } from "../../local-agent/tunnel/open-attempts.ts";
import { SUBPROTOCOL } from "../../worker/protocol/index.ts";

const TOKEN = "edge-set-test-token-0123456789";
/** No keepalive ping within any test: the clock jumps in steps that would starve the pongs. */
const NO_PING_MS = 600_000;

const realSetTimeout = globalThis.setTimeout;
const realNow = () => performance.now();

const healthy = (openStreams: number): EdgeStanding => ({ healthy: true, consecutiveFailures: 0, nextRetryAtMs: undefined, openStreams });
const failing = (consecutiveFailures: number, nextRetryAtMs: number | undefined, openStreams = 0): EdgeStanding => ({ healthy: false, consecutiveFailures, nextRetryAtMs, openStreams });

describe("chooseEdge", () => {
  it("picks the healthy edge with the fewest open streams, whatever the turn", () => {
    expect(chooseEdge([healthy(3), healthy(1), healthy(2)], 0)).toBe(1);
    expect(chooseEdge([healthy(3), healthy(1), healthy(2)], 2)).toBe(1);
  });

  it("gives ties to the first at or after the turn, so equal edges take turns", () => {
    const equal = [healthy(0), healthy(0), healthy(0)];
    expect([0, 1, 2, 3, 4].map((turn) => chooseEdge(equal, turn))).toEqual([0, 1, 2, 0, 1]);
  });

  it("never picks a failing edge while one is healthy, however loaded the healthy one is", () => {
    expect(chooseEdge([failing(1, 5_000), healthy(100)], 0)).toBe(1);
  });

  it("with none healthy picks the one failing the shortest: fewest failures, then the soonest retry", () => {
    expect(chooseEdge([failing(3, 1_000), failing(1, 9_000)], 0)).toBe(1);
    expect(chooseEdge([failing(2, 9_000), failing(2, 1_000)], 0)).toBe(1);
    // A retry under way (no wait pending) is sooner than any wait.
    expect(chooseEdge([failing(2, 1_000), failing(2, undefined)], 0)).toBe(1);
  });

  it("has nothing to pick from no edges", () => {
    expect(chooseEdge([], 0)).toBeUndefined();
  });
});

describe("mayRetry", () => {
  const reached = { cause: "closed", kind: "unreachable" as const, mayHaveReachedDestination: true };
  const notReached = { cause: "refused", kind: "answered" as const, mayHaveReachedDestination: false };

  it("tries again any open that sent no client bytes, and one whose request never reached an edge", () => {
    expect(mayRetry(reached, 0)).toBe(true);
    expect(mayRetry(notReached, 0)).toBe(true);
    expect(mayRetry(notReached, 517)).toBe(true);
  });

  it("never tries again an open whose client bytes the destination may already have (--zero-rtt's first bytes)", () => {
    expect(mayRetry(reached, 517)).toBe(false);
  });

  it("counts only a connect that never completed as a request that never left", () => {
    for (const code of ["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]) expect(neverConnected(code)).toBe(true);
    for (const code of [undefined, "ECONNRESET", "EPIPE", "ETIMEDOUT"]) expect(neverConnected(code)).toBe(false);
  });
});

/** A stand-in edge on a fixed loopback port: accepts (or refuses with 401) tunnels, and can go away and come back. */
type FakeEdge = {
  port: number;
  url: string;
  mode: "accept" | "refuse";
  upgrades: number;
  /** Stops listening and drops every connection: the port then refuses, as a killed edge's does. */
  kill(): Promise<void>;
  /** Listens on the same port again. */
  revive(): Promise<void>;
};

async function startFakeEdge(): Promise<FakeEdge> {
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false) });
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  const edge: FakeEdge = {
    port: 0,
    url: "",
    mode: "accept",
    upgrades: 0,
    kill: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        for (const socket of sockets) socket.destroy();
        if (server) server.close(() => resolve());
        else resolve();
        server = undefined;
      }),
    revive: async () => {
      server = createServer((_, response) => response.writeHead(404).end());
      server.on("connection", (socket) => {
        sockets.add(socket);
        socket.once("close", () => sockets.delete(socket));
      });
      server.on("upgrade", (request, socket, head) => {
        edge.upgrades++;
        if (edge.mode === "refuse") {
          socket.end("HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\nConnection: close\r\n\r\nwrong token\n");
          return;
        }
        wss.handleUpgrade(request, socket, head, () => {});
      });
      const listening = server;
      await new Promise<void>((resolve) => listening.listen(edge.port, "127.0.0.1", resolve));
      edge.port = (listening.address() as AddressInfo).port;
      edge.url = `http://127.0.0.1:${edge.port}`;
    },
  };
  await edge.revive();
  return edge;
}

/** The fake-clock time, from now, of every connection the agent dials to `port`. */
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

async function until(condition: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const deadline = realNow() + timeoutMs;
  while (!condition()) {
    if (realNow() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => realSetTimeout(resolve, 5));
  }
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

async function twoEdges(poolSize: number): Promise<{ a: FakeEdge; b: FakeEdge; edges: EdgeSet; log: string[] }> {
  const [a, b] = await Promise.all([startFakeEdge(), startFakeEdge()]);
  cleanups.push(() => a.kill(), () => b.kill());
  const command = parseAgentCommand(["--edge", a.url, "--edge", b.url, "--pool-size", String(poolSize), "--ping-interval-ms", String(NO_PING_MS)], { EDGESOCKS_TOKEN: TOKEN });
  if (command.kind !== "run") throw new Error("expected a run command");
  const log: string[] = [];
  // The pool's own timings: 1 s first wait, 5 s at most for an edge nothing answers, 1 s to prove a spare.
  const edges = new EdgeSet(command.config, createLogger("debug", (line) => log.push(line.trim())));
  cleanups.push(() => edges.close());
  return { a, b, edges, log };
}

const labelOf = (edge: FakeEdge) => edge.url;

describe("EdgeSet", () => {
  it("spreads streams over healthy edges: the one carrying fewer, in turn when equal", async () => {
    const { a, b, edges } = await twoEdges(1);
    edges.start();
    await until(() => edges.edges.every((edge) => edge.pool.readyCount === 1), "a spare on each edge");
    const chosen: string[] = [];
    for (let stream = 0; stream < 6; stream++) {
      const edge = edges.choose();
      if (!edge) throw new Error("no edge");
      edge.openStreams++;
      chosen.push(edge.edgeLabel);
    }
    expect(chosen).toEqual([a, b, a, b, a, b].map(labelOf));
    // One edge's streams end: the next go to it until the two carry the same again.
    const [edgeA] = edges.edges;
    if (!edgeA) throw new Error("no edge A");
    edgeA.openStreams -= 2;
    expect([edges.choose(), edges.choose()].map((edge) => edge?.edgeLabel)).toEqual([a.url, a.url]);
  });

  it("avoids an edge from its first failure, probes it at 1, 2, 4, 5 and 5 s, and takes it back once a tunnel to it has lived 1 s", async () => {
    const { a, b, edges, log } = await twoEdges(1);
    edges.start();
    await until(() => edges.edges.every((edge) => edge.pool.readyCount === 1), "a spare on each edge");
    // The spares prove themselves: one that closes before it has lived 1 s counts as a failure of its own.
    vi.advanceTimersByTime(1_000);
    const dials = recordDials(a.port);
    await a.kill();
    // A's spare dies with it; its replacement finds the port refusing.
    await until(() => edges.status()[0]?.healthy === false, "edge A failing");
    const failedAtMs = Date.now();
    expect(edges.status()).toEqual([
      { edgeLabel: a.url, healthy: false, consecutiveFailures: 1, nextRetryAt: failedAtMs + 1_000, openStreams: 0, poolSpares: 0 },
      { edgeLabel: b.url, healthy: true, consecutiveFailures: 0, openStreams: 0, poolSpares: 1 },
    ]);
    for (let stream = 0; stream < 4; stream++) expect(edges.choose()?.edgeLabel).toBe(b.url);

    const waitsMs = [1_000, 2_000, 4_000, 5_000, 5_000];
    for (const [failure, waitMs] of waitsMs.entries()) {
      await until(() => edges.status()[0]?.consecutiveFailures === failure + 1 && edges.status()[0]?.nextRetryAt !== undefined, `failure ${failure + 1}`);
      const before = dials.length;
      vi.advanceTimersByTime(waitMs - 1);
      expect(dials).toHaveLength(before);
      vi.advanceTimersByTime(1);
      expect(dials).toHaveLength(before + 1);
    }
    // Said once each way, naming the edge, never with the token; the attempts between are debug.
    const aLines = (level: string) => log.filter((line) => line.includes(` ${level} edge ${a.url}:`));
    expect(aLines("warn")).toHaveLength(1);
    expect(aLines("warn")[0]).toMatch(/cannot open a spare tunnel: connect ECONNREFUSED .*; retrying in 1 s; new connections go to the other edges meanwhile$/);

    await until(() => edges.status()[0]?.consecutiveFailures === 6 && edges.status()[0]?.nextRetryAt !== undefined, "failure 6");
    await a.revive();
    vi.advanceTimersByTime(5_000);
    await until(() => edges.edges[0]?.pool.readyCount === 1, "a spare on edge A again");
    // Open is not yet well: until it has lived 1 s, streams still go to B.
    expect(edges.status()[0]?.healthy).toBe(false);
    expect(edges.choose()?.edgeLabel).toBe(b.url);
    vi.advanceTimersByTime(1_000);
    expect(edges.status()[0]).toMatchObject({ healthy: true, consecutiveFailures: 0, poolSpares: 1 });
    expect(edges.status()[0]?.nextRetryAt).toBeUndefined();
    expect(aLines("info")).toHaveLength(1);
    expect(aLines("info")[0]).toMatch(/spares open again after 6 failed attempts in [\d.]+ s; it takes new connections again$/);
    expect(edges.choose()?.edgeLabel).toBe(a.url);
    expect(log.join("\n")).not.toContain(TOKEN);
  });

  it("with --pool-size 0, marks an edge failing when a connection's tunnel to it fails, probes it with one tunnel, and takes it back", async () => {
    const { a, b, edges, log } = await twoEdges(0);
    edges.start();
    const dials = recordDials(a.port);
    const [edgeA] = edges.edges;
    if (!edgeA) throw new Error("no edge A");
    a.mode = "refuse";
    edgeA.pool.noteFailure("edge refused the tunnel: HTTP 401 wrong token", "answered");
    expect(edges.status()[0]).toMatchObject({ healthy: false, consecutiveFailures: 1 });
    expect(edges.choose()?.edgeLabel).toBe(b.url);
    // The probe, one tunnel, once the first wait is over; refused, it doubles the wait (an edge
    // that answers is waited on up to 60 s: each attempt there is a Worker request).
    vi.advanceTimersByTime(999);
    expect(dials).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(dials).toHaveLength(1);
    await until(() => edges.status()[0]?.consecutiveFailures === 2, "the refused probe");
    expect(edges.status()[0]?.nextRetryAt).toBe(Date.now() + 2_000);
    a.mode = "accept";
    vi.advanceTimersByTime(2_000);
    expect(dials).toHaveLength(2);
    await until(() => edgeA.pool.readyCount === 1, "the probe's tunnel open");
    vi.advanceTimersByTime(1_000);
    expect(edges.status()[0]).toMatchObject({ healthy: true, consecutiveFailures: 0 });
    expect(log.filter((line) => line.includes(` warn edge ${a.url}: a connection's tunnel failed: edge refused the tunnel: HTTP 401 wrong token; retrying in 1 s;`))).toHaveLength(1);
    // The probe stays as a spare for the next stream; no more are opened for a pool of 0.
    vi.advanceTimersByTime(10_000);
    expect(dials).toHaveLength(2);
  });

  it("takes a failing edge back at once when it answers a connection's OPEN", async () => {
    const { a, edges, log } = await twoEdges(0);
    const [edgeA] = edges.edges;
    if (!edgeA) throw new Error("no edge A");
    edgeA.pool.noteFailure("edge closed the tunnel (1006)", "unreachable");
    expect(edges.status()[0]?.healthy).toBe(false);
    edgeA.pool.noteAnswered();
    expect(edges.status()[0]).toEqual({ edgeLabel: a.url, healthy: true, consecutiveFailures: 0, openStreams: 0, poolSpares: 0 });
    expect(log.filter((line) => line.includes(` info edge ${a.url}: connections open again after 1 failed attempt in`))).toHaveLength(1);
  });
});

describe("OpenAttempts", () => {
  it("tries each edge at most once warm and once with a new tunnel, healthy edges first, then gives up", async () => {
    const { a, b, edges } = await twoEdges(0);
    const command = parseAgentCommand(["--edge", a.url, "--edge", b.url, "--open-timeout-ms", "15000"], { EDGESOCKS_TOKEN: TOKEN });
    if (command.kind !== "run") throw new Error("expected a run command");
    const attempts = new OpenAttempts(command.config, edges);
    const tried: string[] = [];
    let attempt = attempts.next();
    while (attempt) {
      const warm = attempt.route.pool !== undefined;
      tried.push(`${attempt.edge?.edgeLabel === a.url ? "A" : "B"} ${warm ? "warm" : "new"} ${attempt.route.handshakeTimeoutMs}`);
      attempts.tunnelIs(warm);
      // Each failure marks its edge failing, as the stream's report does.
      attempt.edge?.pool.noteFailure("edge closed the tunnel (1006)", "unreachable");
      expect(edges.edges.map((edge) => edge.openStreams)).toEqual(attempt.edge === edges.edges[0] ? [1, 0] : [0, 1]);
      attempt = attempts.retry(warm);
    }
    // A warm tunnel's handshake is no concern; a new tunnel leaves the rest of the budget for an
    // edge still untried, and the last one has all of --open-timeout-ms.
    expect(tried).toEqual(["A warm 5000", "B warm 5000", "A new 5000", "B new 15000"]);
    expect(attempts.describeFailures()).toBe(` (after edge ${a.url}'s warm tunnel, then edge ${b.url}'s warm tunnel, then edge ${a.url}'s new tunnel failed)`);
    attempts.done();
    expect(edges.edges.map((edge) => edge.openStreams)).toEqual([0, 0]);
  });
});
