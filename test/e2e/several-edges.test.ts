// The agent with two real edges (--edge A --edge B, each the Worker under wrangler dev, one
// token): new connections spread over both; edge A killed outright (SIGKILL of its process group)
// while clients keep connecting costs no connection that was not already relaying through A,
// since a failed open is tried again on B before its client hears of it; A restarted rejoins
// within its backoff and takes connections again; and clients whose opens hang on a stopped A
// when it is killed all get through B. Every byte is checked. B counts its own streams
// (/dev/counters), so the spread is the edges' word, not only the agent's log.

import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { connect, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { echo, startTcpOrigin, type Listening } from "./origins.ts";
import { startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";
import { startRestartableEdge, type RestartableEdge } from "./restartable-edge.ts";
import { socksConnect } from "./socks-client.ts";

/** Client loops connecting at once while A is killed. */
const LOOPS = 8;
/** What each connection echoes: small, so that most of a connection's life is its open. */
const ECHO_BYTES = 4 * 1024;
/** How long the loops run before the kill, and after it. */
const BEFORE_KILL_MS = 1_500;
const AFTER_KILL_MS = 2_500;
/**
 * A killed edge is retried at least every 5 s (tunnel-pool.ts: an edge nothing answers), and
 * takes connections again once a tunnel has lived 1 s: back within 6 s of answering, plus
 * slack for a loaded 2-core machine.
 */
const REJOIN_WITHIN_MS = 9_000;

/** One client connection's story. */
type Check = {
  startedAtMs: number;
  /** When the SOCKS success reply came: the open was done. */
  repliedAtMs: number | undefined;
  endedAtMs: number;
  /** The client's own port: its address in the agent's line for the connection. */
  localPort: number | undefined;
  ok: boolean;
  error?: string;
};

let echoOrigin: Listening<Server>;
let edgeA: RestartableEdge;
let edgeB: RunningEdge;
/** The default pool (4 spares per edge). */
let agent: RunningAgent;
/** --pool-size 0: every open is a new tunnel, so the first to a dead edge is sure to find it dead. */
let coldAgent: RunningAgent;
/** --zero-rtt --pool-size 0: a client's first bytes leave with the OPEN, in the upgrade. */
let zeroRttAgent: RunningAgent;
const held: Socket[] = [];

beforeAll(async () => {
  [echoOrigin, edgeA] = await Promise.all([startTcpOrigin(echo), startRestartableEdge()]);
  // One token for both edges, as one agent has one.
  edgeB = await startEdge({ EDGESOCKS_TOKEN: edgeA.token, EDGESOCKS_DEV_COUNTERS: "1" });
  [agent, coldAgent, zeroRttAgent] = await Promise.all([
    startAgent(edgeA.url, edgeA.token, ["--edge", edgeB.url, "--log-level", "debug"]),
    startAgent(edgeA.url, edgeA.token, ["--edge", edgeB.url, "--pool-size", "0", "--log-level", "debug"]),
    startAgent(edgeA.url, edgeA.token, ["--edge", edgeB.url, "--pool-size", "0", "--zero-rtt", "--log-level", "debug"]),
  ]);
});
afterAll(async () => {
  for (const socket of held) socket.destroy();
  signalGroupServing(edgeA?.url, "SIGCONT");
  await Promise.all([agent?.stop(), coldAgent?.stop(), zeroRttAgent?.stop()]);
  await Promise.all([edgeA?.stop(), edgeB?.stop()]);
  await echoOrigin?.close();
});

/**
 * A SOCKS5 connection through `agentPort` to the echo origin: ECHO_BYTES of random bytes there
 * and back, compared; then, once `release` resolves (at once without it), a clean close.
 */
async function echoCheck(agentPort: number, release?: Promise<void>): Promise<Check> {
  const startedAtMs = Date.now();
  let repliedAtMs: number | undefined;
  let localPort: number | undefined;
  try {
    const socket = await socksConnect(agentPort, "127.0.0.1", echoOrigin.port, 20_000);
    repliedAtMs = Date.now();
    localPort = socket.localPort;
    held.push(socket);
    // Any error, up to the close: a reset after the echo is a lost connection too.
    let socketError: NodeJS.ErrnoException | undefined;
    socket.on("error", (error: NodeJS.ErrnoException) => (socketError ??= error));
    const payload = randomBytes(ECHO_BYTES);
    const back = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let length = 0;
      const onData = (chunk: Buffer) => {
        chunks.push(chunk);
        length += chunk.byteLength;
        if (length >= payload.byteLength) {
          socket.off("data", onData);
          resolve(Buffer.concat(chunks));
        }
      };
      socket.on("data", onData);
      socket.once("error", reject);
      socket.once("end", () => reject(new Error(`end after ${length} of ${payload.byteLength} bytes`)));
      socket.write(payload);
    });
    if (!back.equals(payload)) throw new Error("the echo differs from what was sent");
    if (release) await release;
    await new Promise<void>((resolve) => {
      socket.once("close", () => resolve());
      socket.end();
    });
    if (socketError) throw socketError;
    return { startedAtMs, repliedAtMs, endedAtMs: Date.now(), localPort, ok: true };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { startedAtMs, repliedAtMs, endedAtMs: Date.now(), localPort, ok: false, error: code ?? (error instanceof Error ? error.message : String(error)) };
  }
}

/** What an optimistic client saw: its SOCKS5 CONNECT reply code, whether its bytes came back whole, and how it ended. */
type OptimisticCheck = { reply: number | undefined; echoed: boolean; ending: string };

/**
 * A raw SOCKS5 client that sends its greeting, its CONNECT to the echo origin and ECHO_BYTES of
 * its own in one write, before any answer: its bytes are in the agent's hands, and so in the
 * OPEN, from the start. Once `release` resolves (at once without it), it ends cleanly.
 */
function optimisticEcho(agentPort: number, release?: Promise<void>): Promise<OptimisticCheck> {
  const payload = randomBytes(ECHO_BYTES);
  const request = Buffer.from([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, echoOrigin.port >> 8, echoOrigin.port & 0xff]);
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port: agentPort });
    held.push(socket);
    let received = Buffer.alloc(0);
    let echoed = false;
    const done = (ending: string) => resolve({ reply: received.byteLength >= 4 ? received[3] : undefined, echoed, ending });
    socket.once("connect", () => socket.write(Buffer.concat([request, payload])));
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      // 2 bytes of method selection, 10 of CONNECT reply, then the echo.
      if (!echoed && received.byteLength >= 12 + payload.byteLength) {
        echoed = received.subarray(12, 12 + payload.byteLength).equals(payload);
        void (release ?? Promise.resolve()).then(() => socket.end());
      }
    });
    socket.once("error", (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
    socket.once("end", () => done("end"));
  });
}

/** Streams edge B's isolate carries now, by its own count. */
async function streamsOnB(): Promise<number> {
  const response = await fetch(`${edgeB.url}/dev/counters`, { headers: { Authorization: `Bearer ${edgeA.token}` } });
  const counters = (await response.json()) as { streams: number };
  return counters.streams;
}

/** Polls until B carries `expected` streams; resolves with the last count. */
async function untilStreamsOnB(expected: number, timeoutMs = 5_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const streams = await streamsOnB();
    if (streams === expected || Date.now() > deadline) return streams;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** `count` connections opened one after another through `agentPort` and held open; resolves with their release. */
async function holdConnections(agentPort: number, count: number): Promise<{ release(): void; checks: Promise<Check[]> }> {
  let release = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  const checks: Promise<Check>[] = [];
  for (let index = 0; index < count; index++) {
    const replied = held.length;
    checks.push(echoCheck(agentPort, released));
    // The next opens once this one is open, so each edge's count is settled when it is chosen.
    const deadline = Date.now() + 10_000;
    while (held.length === replied && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return { release, checks: Promise.all(checks) };
}

/** Agent log lines from character `from` on that match `pattern`. */
function linesSince(running: RunningAgent, from: number, pattern: RegExp): string[] {
  return running
    .log()
    .slice(from)
    .split("\n")
    .filter((line) => pattern.test(line));
}

/** Resolves with the lines from character `from` on that match `pattern` once there are `count` of them, or with those there are after `timeoutMs`. */
async function untilLines(running: RunningAgent, from: number, pattern: RegExp, count: number, timeoutMs = 5_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lines = linesSince(running, from, pattern);
    if (lines.length >= count || Date.now() > deadline) return lines;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function waitForLogSince(running: RunningAgent, from: number, pattern: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [line] = linesSince(running, from, pattern);
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no agent log line matches ${pattern} within ${timeoutMs} ms; log since:\n${running.log().slice(from)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
/** A stream's log line, ended ok, through the edge at `url` (agent-stream.ts #finish: "via edge URL"). */
const okVia = (url: string) => new RegExp(`-> 127\\.0\\.0\\.1:\\d+ via edge ${escaped(url)}(?: \\(after .*\\))? up=.* ok$`);
const loggedAtMs = (line: string): number => Date.parse(line.slice(0, line.indexOf(" ")));

/**
 * Sends `signal` to the process group of the wrangler dev serving `url` (restartable-edge.ts runs
 * it in a group of its own, led by wrangler): found by its command line, as the edge's handle
 * does not give its pid.
 */
function signalGroupServing(url: string | undefined, signal: NodeJS.Signals): void {
  if (url === undefined) return;
  const portArgument = `\0--port\0${new URL(url).port}\0`;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let command: string;
    try {
      command = readFileSync(`/proc/${entry}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (!command.includes("wrangler") || !command.includes("\0dev\0") || !`\0${command}`.includes(portArgument)) continue;
    try {
      process.kill(-Number(entry), signal);
    } catch {
      // not a group leader, or gone already
    }
  }
}

describe("an agent with two edges", () => {
  it("names both edges in its ready line", () => {
    expect(agent.output()).toContain(`proxy on 127.0.0.1:${agent.port} -> edges ${edgeA.url}, ${edgeB.url}`);
  });

  it("spreads new connections over both: of 8 held open, each edge carries 4", async () => {
    const logFrom = agent.log().length;
    const { release, checks } = await holdConnections(agent.port, 8);
    // B's own count, not the agent's.
    expect(await untilStreamsOnB(4)).toBe(4);
    release();
    for (const check of await checks) expect(check).toMatchObject({ ok: true });
    await untilLines(agent, logFrom, / ok$/, 8);
    expect(linesSince(agent, logFrom, okVia(edgeA.url))).toHaveLength(4);
    expect(linesSince(agent, logFrom, okVia(edgeB.url))).toHaveLength(4);
  });

  it("loses no connection to edge A's SIGKILL but those already relaying through it: every open under way or after goes through B, byte for byte", async () => {
    const logFrom = agent.log().length;
    const coldLogFrom = coldAgent.log().length;
    const zeroRttLogFrom = zeroRttAgent.log().length;
    const checks: Check[] = [];
    let running = true;
    const loops = Array.from({ length: LOOPS }, async () => {
      while (running) checks.push(await echoCheck(agent.port));
    });
    await new Promise((resolve) => setTimeout(resolve, BEFORE_KILL_MS));

    const killedAtMs = edgeA.kill();
    // The agent without a pool has no tunnel to A that could tell it A is gone: its next open
    // that chooses A (the first, by turn) finds the port refusing.
    const coldChecks: Check[] = [];
    for (let index = 0; index < 4; index++) coldChecks.push(await echoCheck(coldAgent.port));

    await new Promise((resolve) => setTimeout(resolve, AFTER_KILL_MS));
    running = false;
    await Promise.all(loops);
    // With --zero-rtt a client's first bytes leave with the OPEN, in the upgrade: tried again on B
    // only because the upgrade to A never left (its port refuses by now), the same bytes with it.
    const zeroRttChecks = [await optimisticEcho(zeroRttAgent.port), await optimisticEcho(zeroRttAgent.port)];

    const relayingAtKill = checks.filter((check) => check.repliedAtMs !== undefined && check.repliedAtMs < killedAtMs && check.endedAtMs >= killedAtMs);
    const openingAtKill = checks.filter((check) => check.startedAtMs < killedAtMs && (check.repliedAtMs === undefined || check.repliedAtMs >= killedAtMs));
    const afterKill = checks.filter((check) => check.startedAtMs >= killedAtMs);
    const lost = checks.filter((check) => !check.ok);
    const failovers = linesSince(agent, logFrom, new RegExp(`via edge ${escaped(edgeB.url)} \\(after edge ${escaped(edgeA.url)}'s (warm|new) tunnel failed\\)`));
    console.log(
      `${checks.length} connections: ${openingAtKill.length} opening at the kill, ${afterKill.length} after it, ${relayingAtKill.length} relaying at it; ` +
        `${lost.length} lost (${lost.map((check) => check.error).join(", ") || "none"}); ${failovers.length} opened on B after a failed attempt on A`,
    );
    expect(afterKill.length).toBeGreaterThan(20);
    // The only connections lost are those A had opened before it died, which were relaying
    // through it: each was answered, then reset (README: "connection breaks after it was open"),
    // never cut short cleanly or given wrong bytes, and its line in the agent's log says so. (A
    // may answer an open a few ms after the kill's timestamp, while its processes die: the
    // client's clock cannot tell those apart, the agent's line can.) Every open A had not
    // answered, under way at the kill or started after it, got through whole.
    for (const check of lost) {
      const context = `${JSON.stringify({ ...check, killedAtMs })}\n${agent.log().slice(logFrom)}`;
      expect(check.repliedAtMs, context).toBeDefined();
      expect(check.error, context).toBe("ECONNRESET");
      const lines = linesSince(agent, logFrom, new RegExp(`^\\S+ info 127\\.0\\.0\\.1:${check.localPort} -> `));
      // (Its port may have served another connection of the run too: one of the lines is its.)
      const resetOnA = new RegExp(`via edge ${escaped(edgeA.url)} up=.* reset: edge closed the tunnel \\(1006\\)`);
      expect(lines.some((line) => resetOnA.test(line)), context).toBe(true);
    }
    for (const check of coldChecks) expect(check).toMatchObject({ ok: true });
    expect(zeroRttChecks).toEqual([
      { reply: 0, echoed: true, ending: "end" },
      { reply: 0, echoed: true, ending: "end" },
    ]);
    expect(linesSince(zeroRttAgent, zeroRttLogFrom, new RegExp(`via edge ${escaped(edgeB.url)} \\(after edge ${escaped(edgeA.url)}'s new tunnel failed\\) up=4\\.0KiB down=4\\.0KiB .* ok$`))).toHaveLength(1);
    expect(linesSince(coldAgent, coldLogFrom, new RegExp(`via edge ${escaped(edgeB.url)} \\(after edge ${escaped(edgeA.url)}'s new tunnel failed\\) up=.* ok$`))).toHaveLength(1);

    // A's outage is one warning per agent, naming A; the attempts after it are debug lines.
    for (const [running, from] of [[agent, logFrom], [coldAgent, coldLogFrom], [zeroRttAgent, zeroRttLogFrom]] as const) {
      const warnings = linesSince(running, from, new RegExp(` warn edge ${escaped(edgeA.url)}: `));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/; retrying in 1 s; new connections go to the other edges meanwhile$/);
      expect(running.log()).not.toContain(edgeA.token);
    }
  });

  it("takes A back within its backoff once it is restarted, and spreads new connections over both again", async () => {
    const logFrom = agent.log().length;
    const coldLogFrom = coldAgent.log().length;
    const zeroRttLogFrom = zeroRttAgent.log().length;
    const upAtMs = await edgeA.restart();
    const back = new RegExp(` info edge ${escaped(edgeA.url)}: .* again after \\d+ failed attempts? in [\\d.]+ s; it takes new connections again$`);
    const [rejoined, coldRejoined, zeroRttRejoined] = await Promise.all([
      waitForLogSince(agent, logFrom, back, REJOIN_WITHIN_MS + 5_000),
      waitForLogSince(coldAgent, coldLogFrom, back, REJOIN_WITHIN_MS + 5_000),
      waitForLogSince(zeroRttAgent, zeroRttLogFrom, back, REJOIN_WITHIN_MS + 5_000),
    ]);
    console.log(`edge A back ${loggedAtMs(rejoined) - upAtMs} ms (pool of 4) and ${loggedAtMs(coldRejoined) - upAtMs} ms (--pool-size 0, probed) after it answered /healthz`);
    expect(loggedAtMs(rejoined) - upAtMs).toBeLessThan(REJOIN_WITHIN_MS);
    expect(loggedAtMs(coldRejoined) - upAtMs).toBeLessThan(REJOIN_WITHIN_MS);
    expect(loggedAtMs(zeroRttRejoined) - upAtMs).toBeLessThan(REJOIN_WITHIN_MS);

    const spreadFrom = agent.log().length;
    const { release, checks } = await holdConnections(agent.port, 8);
    expect(await untilStreamsOnB(4)).toBe(4);
    release();
    for (const check of await checks) expect(check).toMatchObject({ ok: true });
    await untilLines(agent, spreadFrom, / ok$/, 8);
    expect(linesSince(agent, spreadFrom, okVia(edgeA.url))).toHaveLength(4);
  });

  it("gets every client whose open hangs on a stopped edge A through B once A is killed, but never sends a --zero-rtt client's bytes twice", async () => {
    await untilStreamsOnB(0);
    const logFrom = agent.log().length;
    const coldLogFrom = coldAgent.log().length;
    const zeroRttLogFrom = zeroRttAgent.log().length;
    // Stopped, A still holds every connection open: the agents' tunnels to it look alive, and
    // opens sent to it wait. Half of the clients below are sent there.
    signalGroupServing(edgeA.url, "SIGSTOP");
    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const pending: Promise<Check>[] = [];
    try {
      for (let index = 0; index < 8; index++) pending.push(echoCheck(agent.port, released));
      for (let index = 0; index < 4; index++) pending.push(echoCheck(coldAgent.port, released));
      // One to each edge: the one sent to A carries its bytes in the upgrade A holds unanswered.
      const zeroRttPending = [optimisticEcho(zeroRttAgent.port, released), optimisticEcho(zeroRttAgent.port, released)];
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      // B has answered its share of the 14; A's are still opening.
      const onBBeforeKill = await streamsOnB();
      expect(onBBeforeKill).toBeLessThan(13);
      edgeA.kill();
      // Every client but the --zero-rtt one sent to A.
      expect(await untilStreamsOnB(13, 10_000)).toBe(13);
      release();
      const checks = await Promise.all(pending);
      for (const check of checks) expect(check).toMatchObject({ ok: true });
      // A may have dialed the echo origin and written those bytes before it died: they are not
      // sent again, and the client, answered already, is reset.
      const zeroRttChecks = await Promise.all(zeroRttPending);
      expect(zeroRttChecks).toContainEqual({ reply: 0, echoed: true, ending: "end" });
      expect(zeroRttChecks).toContainEqual({ reply: 0, echoed: false, ending: "ECONNRESET" });
      expect(
        linesSince(zeroRttAgent, zeroRttLogFrom, new RegExp(`via edge ${escaped(edgeA.url)} up=4\\.0KiB down=0B .* general failure after a 0-RTT answer, client reset: edge closed the tunnel \\(1006`)),
      ).toHaveLength(1);
      expect(linesSince(zeroRttAgent, zeroRttLogFrom, /\(after edge /)).toHaveLength(0);
      await Promise.all([untilLines(agent, logFrom, / ok$/, 8), untilLines(coldAgent, coldLogFrom, / ok$/, 4)]);
      const retried = [
        ...linesSince(agent, logFrom, new RegExp(`via edge ${escaped(edgeB.url)} \\(after edge ${escaped(edgeA.url)}'s (warm|new) tunnel failed\\) up=.* ok$`)),
        // The agent without a pool still keeps tunnels taken back after their streams, and A's probe: warm ones too.
        ...linesSince(coldAgent, coldLogFrom, new RegExp(`via edge ${escaped(edgeB.url)} \\(after edge ${escaped(edgeA.url)}'s (warm|new) tunnel failed\\) up=.* ok$`)),
      ];
      console.log(`${14 - onBBeforeKill} opens hung on the stopped A; ${retried.length} opened on B after A was killed`);
      // All but the --zero-rtt one.
      expect(retried, `${agent.log().slice(logFrom)}\n${coldAgent.log().slice(coldLogFrom)}`).toHaveLength(14 - onBBeforeKill - 1);
    } finally {
      release();
      signalGroupServing(edgeA.url, "SIGCONT");
    }
  });
});
