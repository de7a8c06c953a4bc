// What a client sees when the edge refuses it, stops answering, or dies: a precise SOCKS reply
// before the stream opens, a prompt TCP reset after; never a hang. And once a killed edge is
// back, the same agent serves again, its warm pool full within its retry cap.

import { createHash } from "node:crypto";
import type { Server, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { runCurl } from "./curl-run.ts";
import { startCurlTransfer, type CurlTransfer } from "./curl-transfer.ts";
import { startDripOrigin, type DripOrigin } from "./drip-origin.ts";
import { echo, startHttpOrigin, startTcpOrigin, type HttpOrigin, type Listening } from "./origins.ts";
import { findWorkerdPids, startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";
import { startOlderEdgeRelay, type OlderEdgeRelay } from "./older-edge-relay.ts";
import { exchange, socketEnding } from "./raw-socket.ts";
import { startRestartableEdge, type RestartableEdge } from "./restartable-edge.ts";
import { socksConnect } from "./socks-client.ts";

let echoOrigin: Listening<Server>;
beforeAll(async () => {
  echoOrigin = await startTcpOrigin(echo);
});
afterAll(async () => {
  await echoOrigin?.close();
});

async function echoRoundTrip(socket: Socket, text: string): Promise<string> {
  const answer = new Promise<string>((resolve) => socket.once("data", (chunk: Buffer) => resolve(chunk.toString())));
  socket.write(text);
  return answer;
}

describe("an edge that refuses the token", () => {
  let agent: RunningAgent;
  let relay: OlderEdgeRelay;
  beforeAll(async () => {
    // The agent refuses to start when the edge refuses its token at GET /check; an edge older
    // than /check (or one whose secret changed since) still refuses the tunnels themselves.
    relay = await startOlderEdgeRelay(inject("edgeUrl"));
    agent = await startAgent(relay.url, "not-the-edge-token-0123456789");
  });
  afterAll(async () => {
    await agent?.stop();
    await relay?.close();
  });

  it("gets the client a general-failure reply and logs the edge's 401", async () => {
    await expect(socksConnect(agent.port, "127.0.0.1", echoOrigin.port)).rejects.toThrow(/Failure/);
    const line = await agent.waitForLog(/general failure: edge refused the tunnel: HTTP 401 wrong token/);
    expect(line).not.toContain("not-the-edge-token");
  });
});

describe("an edge that stops answering and then dies", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  /** Both workerd processes (the Worker's and wrangler's dev proxy): the whole edge as the agent sees it. */
  let workerdPids: number[];
  const signalEdge = (signal: NodeJS.Signals) => {
    for (const pid of workerdPids) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
  };
  beforeAll(async () => {
    edge = await startEdge();
    const { workerPid, devProxyPid } = findWorkerdPids(edge);
    workerdPids = [workerPid, devProxyPid];
    agent = await startAgent(edge.url, edge.token, ["--ping-interval-ms", "300"]);
  });
  afterAll(async () => {
    signalEdge("SIGCONT");
    await agent?.stop();
    await edge?.stop();
  });

  it("resets a client within two ping intervals of the edge going silent", async () => {
    const socket = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    expect(await echoRoundTrip(socket, "before")).toBe("before");
    const ended = socketEnding(socket);
    const stoppedAt = Date.now();
    signalEdge("SIGSTOP");
    try {
      const { how, atMs } = await ended;
      expect(how).toBe("ECONNRESET");
      expect(atMs - stoppedAt).toBeLessThan(3 * 300 + 500);
    } finally {
      signalEdge("SIGCONT");
    }
    await agent.waitForLog(/reset: edge stopped answering pings/);
  });

  it("resets a client at once when the edge's processes die", async () => {
    const socket = await socksConnect(agent.port, "127.0.0.1", echoOrigin.port);
    expect(await echoRoundTrip(socket, "alive")).toBe("alive");
    const ended = socketEnding(socket);
    const killedAt = Date.now();
    signalEdge("SIGKILL");
    const { how, atMs } = await ended;
    expect(how).toBe("ECONNRESET");
    expect(atMs - killedAt).toBeLessThan(1_500);
  });
});

/** Agent log lines at or after character `from`, that match `pattern`. */
function linesSince(agent: RunningAgent, from: number, pattern: RegExp): string[] {
  return agent
    .log()
    .slice(from)
    .split("\n")
    .filter((line) => pattern.test(line));
}

/** Resolves with the first agent log line at or after character `from` that matches `pattern`; rejects after `timeoutMs`. */
async function waitForLogSince(agent: RunningAgent, from: number, pattern: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [line] = linesSince(agent, from, pattern);
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no agent log line matches ${pattern} within ${timeoutMs} ms; log since:\n${agent.log().slice(from)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** `promise`, or a rejection naming `what` once `timeoutMs` has passed without it. */
async function within<T>(timeoutMs: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The Date.now() of an agent log line, from its ISO timestamp (log.ts). */
const loggedAtMs = (line: string): number => Date.parse(line.slice(0, line.indexOf(" ")));

describe("an edge killed during transfers and brought back", () => {
  /** Pool size the agent runs with: every spare must be open again after the edge's return. */
  const POOL_SIZE = 4;
  /** Every in-flight client must have seen its reset this soon after the SIGKILL. */
  const RESET_WITHIN_MS = 2_000;
  /** A connection while the edge is down must have its answer this soon (a refused connect on loopback is immediate). */
  const REFUSED_WITHIN_MS = 1_000;
  /**
   * The warm pool must be full again this soon after the edge answers /healthz: bounded by the
   * pool's retry cap for an edge it cannot reach, not by how long the edge was gone.
   */
  const POOL_BACK_WITHIN_MS = 10_000;
  /** A new transfer after the edge is back needs no spare: it opens its own tunnel at once. */
  const CHECKED_WITHIN_MS = 3_000;

  let edge: RestartableEdge;
  let agent: RunningAgent;
  let drip: DripOrigin;
  let blobOrigin: HttpOrigin;
  const curls: CurlTransfer[] = [];
  const sockets: Socket[] = [];
  beforeAll(async () => {
    [edge, drip, blobOrigin] = await Promise.all([startRestartableEdge(), startDripOrigin(), startHttpOrigin()]);
    agent = await startAgent(edge.url, edge.token, ["--pool-size", String(POOL_SIZE), "--log-level", "debug"]);
  });
  afterAll(async () => {
    for (const curl of curls) curl.kill();
    for (const socket of sockets) socket.destroy();
    await agent?.stop();
    await edge?.stop();
    await drip?.close();
    await blobOrigin?.close();
  });

  it("resets every transfer within 2 s, refuses new ones with the documented answers while it is down, and recovers without an agent restart", async () => {
    await agent.waitForLog(new RegExp(`warm pool: ${POOL_SIZE} of ${POOL_SIZE} spares ready`));
    const proxy = `127.0.0.1:${agent.port}`;
    const dripUrl = `http://127.0.0.1:${drip.port}/drip`;

    // Four transfers of every kind the agent fronts, each provably under way before the kill.
    const socksDownload = startCurlTransfer(["--socks5-hostname", proxy, "-o", "-", dripUrl]);
    const forwardDownload = startCurlTransfer(["-x", `http://${proxy}`, "-o", "-", dripUrl]);
    const connectUpload = startCurlTransfer(["-p", "-x", `http://${proxy}`, "-T", "-", `http://127.0.0.1:${drip.port}/sink?id=connect`], { feedStdin: true });
    curls.push(socksDownload, forwardDownload, connectUpload);
    const socksClient = await socksConnect(agent.port, "127.0.0.1", drip.port);
    sockets.push(socksClient);
    const socksClientData = new Promise<void>((resolve) => socksClient.once("data", () => resolve()));
    socksClient.write(`GET /drip HTTP/1.1\r\nHost: 127.0.0.1:${drip.port}\r\n\r\n`);
    await Promise.all([socksDownload.firstBytes, forwardDownload.firstBytes, drip.uploadStarted("connect"), socksClientData]);
    const socksClientEnded = socketEnding(socksClient);

    const logBeforeKill = agent.log().length;
    const killedAtMs = edge.kill();

    const [socksEnd, forwardEnd, uploadEnd, clientEnd] = await within(
      RESET_WITHIN_MS,
      "every in-flight client's end",
      Promise.all([socksDownload.ended, forwardDownload.ended, connectUpload.ended, socksClientEnded]),
    );
    // A reset, never a clean end: curl 56 (receive failure) or, for the upload, 55 (send
    // failure), with the kernel's word for it; a FIN mid-body would be curl 18 instead.
    expect(socksEnd).toMatchObject({ exitCode: 56, stderr: expect.stringMatching(/reset by peer/) });
    expect(forwardEnd).toMatchObject({ exitCode: 56, stderr: expect.stringMatching(/reset by peer/) });
    expect([55, 56]).toContain(uploadEnd.exitCode);
    expect(uploadEnd.stderr).toMatch(/reset by peer/);
    expect(clientEnd.how).toBe("ECONNRESET");
    const resetAfterMs = [socksEnd.atMs, forwardEnd.atMs, uploadEnd.atMs, clientEnd.atMs].map((atMs) => atMs - killedAtMs);
    for (const ms of resetAfterMs) expect(ms).toBeLessThan(RESET_WITHIN_MS);

    // While the edge is down: README's failure table, "edge unreachable": SOCKS5 0x01 general
    // failure, HTTP 502, each answered at once and closed.
    const askedAtMs = Date.now();
    const [socksRefusal, connectRefusal, forwardRefusal] = await Promise.all([
      exchange(agent.port, [0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, drip.port >> 8, drip.port & 0xff]).then((answer) => ({ answer, atMs: Date.now() })),
      exchange(agent.port, [...Buffer.from(`CONNECT 127.0.0.1:${drip.port} HTTP/1.1\r\nHost: 127.0.0.1:${drip.port}\r\n\r\n`)]).then((answer) => ({ answer, atMs: Date.now() })),
      runCurl(["-o", "/dev/null", "-w", "%{http_code}", "-x", `http://${proxy}`, dripUrl], 10).then((run) => ({ run, atMs: Date.now() })),
    ]);
    expect(socksRefusal.answer).toEqual([0x05, 0x00, 0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    expect(Buffer.from(connectRefusal.answer).toString("latin1")).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/);
    expect(forwardRefusal.run.stdout.toString()).toBe("502");
    for (const { atMs } of [socksRefusal, connectRefusal, forwardRefusal]) expect(atMs - askedAtMs).toBeLessThan(REFUSED_WITHIN_MS);

    // The edge stays down until the pool's wait has reached its cap for an edge that does not
    // answer (1, 2, 4, then 5 s rather than 8): the outage is then long enough that only the cap,
    // not the doubling, bounds how long the pool stays empty after the edge is back.
    await waitForLogSince(agent, logBeforeKill, /debug warm pool: cannot open a spare tunnel: connect ECONNREFUSED .*; retrying in 5 s$/, 12_000);

    // Back on the same port; the agent is the same process.
    const logBeforeRestart = agent.log().length;
    const upAtMs = await edge.restart();
    const downMs = upAtMs - killedAtMs;

    // A new transfer works at once (it opens its own tunnel when no spare is ready), checked byte for byte.
    const checked = await runCurl(["--socks5-hostname", proxy, "-o", "-", `http://127.0.0.1:${blobOrigin.port}/blob?bytes=1048576&id=after-restart`], 10);
    const checkedAfterMs = Date.now() - upAtMs;
    expect(checked.exitCode).toBe(0);
    expect(checkedAfterMs).toBeLessThan(CHECKED_WITHIN_MS);
    expect(createHash("sha256").update(checked.stdout).digest("hex")).toBe(blobOrigin.sentHashes.get("after-restart"));

    // The pool is full again, bounded by its backoff's cap rather than by the length of the outage.
    const full = await waitForLogSince(agent, logBeforeRestart, new RegExp(`warm pool: ${POOL_SIZE} of ${POOL_SIZE} spares ready`), POOL_BACK_WITHIN_MS + 5_000);
    const poolBackAfterMs = loggedAtMs(full) - upAtMs;
    console.log(
      `edge down ${downMs} ms; resets ${resetAfterMs.join("/")} ms after the kill; refusals within ${Math.max(socksRefusal.atMs, connectRefusal.atMs, forwardRefusal.atMs) - askedAtMs} ms; ` +
        `checked transfer done ${checkedAfterMs} ms after the edge was back; ` +
        `pool full ${poolBackAfterMs} ms after (below 0: its attempt beat the test's /healthz poll)`,
    );
    expect(poolBackAfterMs).toBeLessThan(POOL_BACK_WITHIN_MS);
    // The same agent process did all of it: it never exited.
    expect(() => process.kill(agent.pid, 0)).not.toThrow();

    // Said once: one warning for the outage and one line for the recovery, however many
    // attempts the pool made in between (those are debug lines); one line per client connection.
    await waitForLogSince(agent, logBeforeRestart, / info warm pool: spares open again after \d+ failed attempts in [\d.]+ s$/, 5_000);
    const outage = agent.log().slice(logBeforeKill).split("\n");
    const poolLines = (level: string) => outage.filter((line) => line.includes(` ${level} warm pool:`));
    expect(poolLines("warn")).toHaveLength(1);
    expect(poolLines("warn")[0]).toMatch(/ warm pool: cannot open a spare tunnel: .*; retrying in 1 s$/);
    expect(poolLines("info")).toHaveLength(1);
    expect(poolLines("debug").filter((line) => line.includes("cannot open a spare tunnel")).length).toBeGreaterThanOrEqual(3);
    expect(outage.filter((line) => / info .* via edge .* reset: edge closed the tunnel \(1006\)/.test(line))).toHaveLength(4);
    expect(outage.filter((line) => / via edge up=0B down=0B .* general failure: .*ECONNREFUSED/.test(line))).toHaveLength(3);
  });
});
