// UDP ASSOCIATE for DNS through the real agent and a real edge whose EDGESOCKS_DOH_URL is a DoH
// stub on loopback: PySocks and the npm `socks` client get the stub's answer, other
// destinations and other sources get nothing, the association ends with its TCP connection,
// and a resolver that is down costs the query, with the edge's reason in the agent's log. Then
// the bounds: a silent resolver (the edge's timeout first, the agent's own behind an edge path
// that stalls), the cap on queries in flight, and a relay socket that cannot be bound.

import { execFile, execFileSync } from "node:child_process";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { createConnection, type Socket } from "node:net";
import { SocksClient, type SocksRemoteHost } from "socks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DNS_QUERY_TIMEOUT_MS } from "../../local-agent/tunnel/edge-dns.ts";
import { Reply } from "../../local-agent/front/socks5.ts";
import { MAX_DNS_QUERIES_IN_FLIGHT } from "../../local-agent/front/udp-associate.ts";
import { DEFAULT_DOH_TIMEOUT_MS } from "../../worker/config.ts";
import { DNS_PATH } from "../../worker/protocol/index.ts";
import { KNOWN_ADDRESS, KNOWN_NAME, buildQuery, parseAnswer, questionOf } from "../dns/dns-message.ts";
import { DohStubPath, UNANSWERED_NAME, startDohStub, type DohStub } from "../dns/doh-stub.ts";
import { startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";

/** Debian's python3, with python3-socks (PySocks); a `python3` on PATH may be another one. */
const SYSTEM_PYTHON = "/usr/bin/python3";
/** A lookup through PySocks's UDP support: argv proxy port and query hex; prints answer hex and source. */
const PYSOCKS_LOOKUP = `
import socket, socks, sys
udp = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
udp.set_proxy(socks.SOCKS5, "127.0.0.1", int(sys.argv[1]))
udp.settimeout(20)
udp.sendto(bytes.fromhex(sys.argv[2]), ("127.0.0.1", 53))
answer, source = udp.recvfrom(65535)
print(answer.hex(), source[0], source[1])
udp.close()
`;

let stub: DohStub;
let edge: RunningEdge;
let agent: RunningAgent;

beforeAll(async () => {
  stub = await startDohStub();
  edge = await startEdge({ EDGESOCKS_DOH_URL: stub.url(DohStubPath.Answer) });
  agent = await startAgent(edge.url, edge.token);
});
afterAll(async () => {
  await agent?.stop();
  await edge?.stop();
  await stub?.close();
});

type Association = { control: Socket; relayPort: number; udp: UdpSocket; label: string };

/** A UDP socket on loopback and an association for it through the npm `socks` client, to `via` (default: the file's agent). */
async function associate(announceSourcePort: boolean, via: RunningAgent = agent): Promise<Association> {
  const udp = await boundUdpSocket();
  // createConnection serves CONNECT only; ASSOCIATE goes through an instance's events.
  const client = new SocksClient({
    proxy: { host: "127.0.0.1", port: via.port, type: 5 },
    command: "associate",
    // Zeros say "source unknown": the agent then pins the first source port it hears from.
    destination: { host: "0.0.0.0", port: announceSourcePort ? udp.address().port : 0 },
    timeout: 20_000,
  });
  const { socket: control, remoteHost } = await new Promise<{ socket: Socket; remoteHost?: SocksRemoteHost }>((resolve, reject) => {
    client.once("established", resolve);
    client.once("error", reject);
    client.connect();
  });
  expect(remoteHost?.host).toBe("127.0.0.1");
  return { control, relayPort: remoteHost?.port ?? 0, udp, label: `127.0.0.1:${control.localPort}` };
}

async function boundUdpSocket(): Promise<UdpSocket> {
  const udp = createSocket("udp4");
  await new Promise<void>((resolve) => udp.bind(0, "127.0.0.1", resolve));
  return udp;
}

function sendFrame(association: Association, port: number, data: Uint8Array, from: UdpSocket = association.udp, host = "127.0.0.1"): void {
  const frame = SocksClient.createUDPFrame({ remoteHost: { host, port }, data: Buffer.from(data) });
  from.send(frame, association.relayPort, "127.0.0.1");
}

/** Every datagram `udp` receives, in order, as the npm client parses it. */
function collect(udp: UdpSocket): ReturnType<typeof SocksClient.parseUDPFrame>[] {
  const received: ReturnType<typeof SocksClient.parseUDPFrame>[] = [];
  udp.on("message", (message) => received.push(SocksClient.parseUDPFrame(message)));
  return received;
}

/** Resolves with the next datagram on `udp`, parsed; rejects after timeoutMs. */
function nextFrame(udp: UdpSocket, timeoutMs = 20_000): Promise<ReturnType<typeof SocksClient.parseUDPFrame>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no datagram within ${timeoutMs} ms`)), timeoutMs);
    udp.once("message", (message) => {
      clearTimeout(timer);
      resolve(SocksClient.parseUDPFrame(message));
    });
  });
}

/** Ends the association's TCP connection and resolves with the agent's (`via`'s) closing line for it. */
async function endAssociation(association: Association, via: RunningAgent = agent): Promise<string> {
  association.control.end();
  const line = await via.waitForLog(new RegExp(`${association.label} UDP association ended`));
  association.udp.close();
  return line;
}

/** How late past a timeout a failure may be logged on a busy 2-core machine and still count as on time. */
const TIMEOUT_SLACK_MS = 2_000;

type StallingEdge = { url: string; held(): number; abandoned(): number; close(): Promise<void> };

/**
 * A stalled path to the edge, which the real edge (its own 5 s resolver timeout) never is: a
 * loopback HTTP server in front of it that holds POST /dns for UNANSWERED_NAME without a word,
 * as a dead network path does, and forwards every other request to `upstream` unchanged.
 */
async function startStallingEdge(upstream: string): Promise<StallingEdge> {
  let held = 0;
  let abandoned = 0;
  const server: Server = createServer((request, response) => {
    void readAll(request).then(async (body) => {
      if (request.method === "POST" && request.url === DNS_PATH && questionName(body) === UNANSWERED_NAME) {
        held++;
        response.on("close", () => abandoned++);
        return;
      }
      const headers = Object.fromEntries(
        ["content-type", "accept", "authorization"].flatMap((name) => (request.headers[name] === undefined ? [] : [[name, String(request.headers[name])]])),
      );
      const answer = await fetch(`${upstream}${request.url ?? "/"}`, { method: request.method, headers, body: body.byteLength > 0 ? body : undefined });
      response.writeHead(answer.status, { "Content-Type": answer.headers.get("Content-Type") ?? "application/octet-stream" });
      response.end(new Uint8Array(await answer.arrayBuffer()));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    held: () => held,
    abandoned: () => abandoned,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function readAll(request: IncomingMessage): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(new Uint8Array(Buffer.concat(chunks))));
    request.on("error", reject);
  });
}

function questionName(body: Uint8Array): string | undefined {
  try {
    return questionOf(body).name.toLowerCase();
  } catch {
    return undefined;
  }
}

function connectTcp(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port }, () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Reads `socket` in exact counts of bytes, and how it ended ("end" for a FIN, else the error code). */
function byteReader(socket: Socket): { next(count: number): Promise<number[]>; ended(): Promise<string> } {
  const buffered: number[] = [];
  let wake: (() => void) | undefined;
  let endedHow: string | undefined;
  const endings: ((how: string) => void)[] = [];
  const finish = (how: string): void => {
    endedHow ??= how;
    wake?.();
    for (const resolve of endings.splice(0)) resolve(endedHow);
  };
  socket.on("data", (chunk: Buffer) => {
    buffered.push(...chunk);
    wake?.();
  });
  socket.once("end", () => finish("end"));
  socket.once("error", (error: NodeJS.ErrnoException) => finish(error.code ?? error.message));
  return {
    async next(count) {
      while (buffered.length < count) {
        if (endedHow !== undefined) throw new Error(`connection ended (${endedHow}) after ${buffered.length} of ${count} bytes: ${buffered.join(",")}`);
        await new Promise<void>((resolve) => (wake = resolve));
      }
      return buffered.splice(0, count);
    },
    ended: () => (endedHow !== undefined ? Promise.resolve(endedHow) : new Promise((resolve) => endings.push(resolve))),
  };
}

/** Sets the soft RLIMIT_NOFILE of process `pid` (prlimit(1)); returns what puts the old one back. */
function limitOpenFiles(pid: number, softLimit: number): () => void {
  const match = /^Max open files\s+(\d+)\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
  if (!match) throw new Error(`no open-files limit for ${pid}`);
  const [, soft, hard] = match;
  execFileSync("prlimit", ["--pid", String(pid), `--nofile=${softLimit}:${hard}`]);
  return () => execFileSync("prlimit", ["--pid", String(pid), `--nofile=${soft}:${hard}`]);
}

describe("DNS over UDP ASSOCIATE through agent and edge", () => {
  it("answers PySocks's UDP lookup with the resolver's answer, from 127.0.0.1:53", async () => {
    const query = buildQuery(KNOWN_NAME, 0x5151);
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(SYSTEM_PYTHON, ["-c", PYSOCKS_LOOKUP, String(agent.port), Buffer.from(query).toString("hex")], { timeout: 60_000 }, (error, out, err) => {
        if (error) reject(new Error(`${error.message}\n${err}`));
        else resolve(out);
      });
    });
    const [answerHex, sourceHost, sourcePort] = stdout.trim().split(" ");
    expect(parseAnswer(Buffer.from(answerHex ?? "", "hex"))).toEqual({ id: 0x5151, rcode: 0, name: KNOWN_NAME, addresses: [KNOWN_ADDRESS] });
    expect([sourceHost, sourcePort]).toEqual(["127.0.0.1", "53"]);
    // PySocks closes its TCP connection with the socket: the association ends with it.
    expect(await agent.waitForLog(/UDP association ended \(.*\): 1 datagrams from the client, 1 DNS answers/)).toBeTruthy();
  });

  it("answers the npm socks client's frame and names the queried DST in the answer's header", async () => {
    const association = await associate(false);
    const answer = nextFrame(association.udp);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0b0b));
    const frame = await answer;
    expect(frame.remoteHost).toEqual({ host: "127.0.0.1", port: 53 });
    expect(parseAnswer(frame.data)).toEqual({ id: 0x0b0b, rcode: 0, name: KNOWN_NAME, addresses: [KNOWN_ADDRESS] });
    await endAssociation(association);
  });

  it("answers a query addressed to a resolver by name, naming that name in the answer's header", async () => {
    const association = await associate(true);
    const answer = nextFrame(association.udp);
    // Whatever resolver the client names, the query is answered at the edge: no name leaves here.
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0d0d), association.udp, "resolver.example");
    const frame = await answer;
    expect(frame.remoteHost).toEqual({ host: "resolver.example", port: 53 });
    expect(parseAnswer(frame.data).addresses).toEqual([KNOWN_ADDRESS]);
    await endAssociation(association);
  });

  it("drops a datagram to port 9, says so in the log, and answers the next DNS query", async () => {
    const association = await associate(true);
    const received = collect(association.udp);
    sendFrame(association, 9, Buffer.from("discard me, please"));
    await agent.waitForLog(new RegExp(`${association.label} UDP -> 127\\.0\\.0\\.1:9 dropped: only DNS \\(port 53\\)`));
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0909));
    await expect.poll(() => received.length, { timeout: 20_000 }).toBeGreaterThan(0);
    // Loopback UDP keeps order: had port 9 been answered, that answer would have come first.
    expect(received.map((frame) => frame.remoteHost.port)).toEqual([53]);
    const line = await endAssociation(association);
    expect(line).toMatch(/: 2 datagrams from the client, 1 DNS answers, 0 failed at the edge, 1 dropped, 0 from other sources ignored/);
  });

  it("never answers a datagram from another source port once the client's port is known", async () => {
    const association = await associate(false);
    const first = nextFrame(association.udp);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 1));
    await first;
    const stranger = await boundUdpSocket();
    const strangerReceived = collect(stranger);
    const answeredBefore = stub.answeredCount();
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 2), stranger);
    const second = nextFrame(association.udp);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 3));
    expect(parseAnswer((await second).data).id).toBe(3);
    const line = await endAssociation(association);
    expect(line).toMatch(/: 2 datagrams from the client, 2 DNS answers, .* 1 from other sources ignored/);
    expect(strangerReceived).toEqual([]);
    expect(stub.answeredCount() - answeredBefore).toBe(1);
    stranger.close();
  });

  it("ends the association when its TCP connection closes: one log line, relay port released", async () => {
    const association = await associate(true);
    const line = await endAssociation(association);
    expect(line).toMatch(/association ended \(client closed the control connection\): 0 datagrams from the client/);
    // The relay socket is closed: its port can be bound again.
    const again = createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      again.once("error", reject);
      again.bind(association.relayPort, "127.0.0.1", resolve);
    });
    again.close();
  });

  it(`logs the edge's 502 for a query the resolver never answers after ${DEFAULT_DOH_TIMEOUT_MS} ms, within the agent's ${DNS_QUERY_TIMEOUT_MS} ms, and answers the queries around it`, async () => {
    const association = await associate(true);
    const received = collect(association.udp);
    const sentAt = Date.now();
    sendFrame(association, 53, buildQuery(UNANSWERED_NAME, 0x0001));
    // While the silent query waits at the edge, the association answers others.
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0002));
    await expect.poll(() => received.length, { timeout: 20_000 }).toBe(1);
    const failure = await agent.waitForLog(
      new RegExp(`${association.label} UDP -> 127\\.0\\.0\\.1:53 DNS query failed: edge answered HTTP 502 resolver did not answer within ${DEFAULT_DOH_TIMEOUT_MS} ms$`),
      DNS_QUERY_TIMEOUT_MS + 10_000,
    );
    const failedAfterMs = Date.now() - sentAt;
    expect(failure).toBeTruthy();
    expect(failedAfterMs).toBeGreaterThanOrEqual(DEFAULT_DOH_TIMEOUT_MS);
    // The edge's reason arrives before the agent's own timer would have fired.
    expect(failedAfterMs).toBeLessThan(DNS_QUERY_TIMEOUT_MS);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0003));
    await expect.poll(() => received.length, { timeout: 20_000 }).toBe(2);
    expect(received.map((frame) => parseAnswer(frame.data).id)).toEqual([0x0002, 0x0003]);
    const line = await endAssociation(association);
    expect(line).toMatch(/: 3 datagrams from the client, 2 DNS answers, 1 failed at the edge, 0 dropped, 0 from other sources ignored/);
  });

  it(`drops a query over ${MAX_DNS_QUERIES_IN_FLIGHT} in flight without asking the edge, logs it, and takes queries again once one ends`, async () => {
    const association = await associate(true);
    const received = collect(association.udp);
    const before = stub.stats();
    for (let id = 1; id <= MAX_DNS_QUERIES_IN_FLIGHT; id++) sendFrame(association, 53, buildQuery(UNANSWERED_NAME, id));
    // The agent counts a query in flight when it sends it, so all are counted once the stub holds them all.
    await expect.poll(() => stub.stats().unansweredNow - before.unansweredNow, { timeout: 20_000 }).toBe(MAX_DNS_QUERIES_IN_FLIGHT);
    const knownBefore = stub.queriesFor(KNOWN_NAME);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0100));
    await agent.waitForLog(new RegExp(`${association.label} UDP -> 127\\.0\\.0\\.1:53 dropped: ${MAX_DNS_QUERIES_IN_FLIGHT} queries already at the edge$`));
    // The drop is decided before any request: the edge, and so the resolver, never saw it.
    expect(stub.queriesFor(KNOWN_NAME)).toBe(knownBefore);
    expect(stub.stats().unansweredTotal - before.unansweredTotal).toBe(MAX_DNS_QUERIES_IN_FLIGHT);
    // The first failure is logged after its slot is given back, so the next query is taken.
    await agent.waitForLog(new RegExp(`${association.label} UDP -> 127\\.0\\.0\\.1:53 DNS query failed: edge answered HTTP 502 resolver did not answer`), DNS_QUERY_TIMEOUT_MS + 10_000);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0101));
    await expect.poll(() => received.length, { timeout: 20_000 }).toBe(1);
    expect(parseAnswer(received[0]?.data ?? new Uint8Array()).id).toBe(0x0101);
    const line = await endAssociation(association);
    // Failures whose 502 had not reached the agent when the association ended are aborted, not
    // counted: the number failed is anywhere from the one logged to all of them.
    const counted = new RegExp(`: ${MAX_DNS_QUERIES_IN_FLIGHT + 2} datagrams from the client, 1 DNS answers, (\\d+) failed at the edge, 1 dropped \\(1 over the in-flight limit\\)`).exec(line);
    expect(counted, line).not.toBeNull();
    expect(Number(counted?.[1])).toBeGreaterThanOrEqual(1);
    expect(Number(counted?.[1])).toBeLessThanOrEqual(MAX_DNS_QUERIES_IN_FLIGHT);
    // The edge hung up on every silent query it had asked (its timeout), none left at the resolver.
    await expect.poll(() => stub.stats().unansweredNow - before.unansweredNow, { timeout: 20_000 }).toBe(0);
  });

});

describe("DNS over UDP ASSOCIATE behind an edge path that stalls", () => {
  let stalling: StallingEdge;
  let stalledAgent: RunningAgent;
  beforeAll(async () => {
    stalling = await startStallingEdge(edge.url);
    // No tunnel pool: this agent only relays DNS, and the stand-in serves no WebSocket.
    stalledAgent = await startAgent(stalling.url, edge.token, ["--pool-size", "0"]);
  });
  afterAll(async () => {
    await stalledAgent?.stop();
    await stalling?.close();
  });

  it(`gives up on a query the edge does not answer after ${DNS_QUERY_TIMEOUT_MS} ms, logs it, and answers the next query`, async () => {
    const association = await associate(true, stalledAgent);
    const received = collect(association.udp);
    const sentAt = Date.now();
    sendFrame(association, 53, buildQuery(UNANSWERED_NAME, 0x0801));
    await expect.poll(() => stalling.held(), { timeout: 20_000 }).toBe(1);
    const failure = await stalledAgent.waitForLog(
      new RegExp(`${association.label} UDP -> 127\\.0\\.0\\.1:53 DNS query failed: edge did not answer within ${DNS_QUERY_TIMEOUT_MS} ms$`),
      DNS_QUERY_TIMEOUT_MS + 10_000,
    );
    const failedAfterMs = Date.now() - sentAt;
    expect(failure).toBeTruthy();
    expect(failedAfterMs).toBeGreaterThanOrEqual(DNS_QUERY_TIMEOUT_MS);
    expect(failedAfterMs).toBeLessThan(DNS_QUERY_TIMEOUT_MS + TIMEOUT_SLACK_MS);
    // The agent's timeout hangs up on the request: nothing is left waiting at the edge.
    await expect.poll(() => stalling.abandoned(), { timeout: 10_000 }).toBe(1);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0802));
    await expect.poll(() => received.length, { timeout: 20_000 }).toBe(1);
    expect(parseAnswer(received[0]?.data ?? new Uint8Array())).toEqual({ id: 0x0802, rcode: 0, name: KNOWN_NAME, addresses: [KNOWN_ADDRESS] });
    const line = await endAssociation(association, stalledAgent);
    expect(line).toMatch(/: 2 datagrams from the client, 1 DNS answers, 1 failed at the edge, 0 dropped/);
  });
});

describe("UDP ASSOCIATE when the relay socket cannot be bound", () => {
  let limitedAgent: RunningAgent;
  beforeAll(async () => {
    // No tunnel pool: nothing in this agent opens descriptors of its own while the test limits them.
    limitedAgent = await startAgent(edge.url, edge.token, ["--pool-size", "0"]);
  });
  afterAll(async () => {
    await limitedAgent?.stop();
  });

  it("replies 0x01 and logs EMFILE when the agent has no file descriptor left for the relay, and binds again once it has", async () => {
    const control = await connectTcp(limitedAgent.port);
    const reader = byteReader(control);
    control.write(Uint8Array.of(0x05, 0x01, 0x00));
    expect(await reader.next(2)).toEqual([0x05, 0x00]);
    // The relay binds port 0 on the address this connection reached, which is always bindable;
    // what can fail is the socket itself. A soft RLIMIT_NOFILE of 0 leaves the agent's open
    // descriptors working and refuses every new one, as an agent at its descriptor limit is.
    const restore = limitOpenFiles(limitedAgent.pid, 0);
    let reply: number[];
    try {
      control.write(Uint8Array.of(0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0));
      reply = await reader.next(10);
    } finally {
      restore();
    }
    expect(reply).toEqual([0x05, Reply.GeneralFailure, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    expect(await reader.ended()).toBe("end");
    expect(await limitedAgent.waitForLog(/UDP association ended \(relay socket failed: EMFILE\): 0 datagrams from the client/)).toBeTruthy();
    // With descriptors back, the next association binds and answers.
    const association = await associate(true, limitedAgent);
    const answer = nextFrame(association.udp);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0e0e));
    expect(parseAnswer((await answer).data).id).toBe(0x0e0e);
    await endAssociation(association, limitedAgent);
  });
});

describe("DNS over UDP ASSOCIATE with the resolver down", () => {
  // Last in the file: it stops the stub.
  it("answers nothing while the resolver is down, and logs the edge's 502 reason", async () => {
    await stub.close();
    const association = await associate(true);
    const received = collect(association.udp);
    sendFrame(association, 53, buildQuery(KNOWN_NAME, 0x0502));
    const failure = await agent.waitForLog(new RegExp(`${association.label} UDP -> 127\\.0\\.0\\.1:53 DNS query failed: edge answered HTTP 502 resolver unreachable: `), 30_000);
    expect(failure).not.toContain(edge.token);
    const line = await endAssociation(association);
    expect(line).toMatch(/: 1 datagrams from the client, 0 DNS answers, 1 failed at the edge/);
    expect(received).toEqual([]);
  });
});
