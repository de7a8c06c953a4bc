// UDP ASSOCIATE for DNS through the real agent and a real edge whose EDGESOCKS_DOH_URL is a DoH
// stub on loopback: PySocks and the npm `socks` client get the stub's answer, other
// destinations and other sources get nothing, the association ends with its TCP connection,
// and a resolver that is down costs the query, with the edge's reason in the agent's log.

import { execFile } from "node:child_process";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import type { Socket } from "node:net";
import { SocksClient, type SocksRemoteHost } from "socks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KNOWN_ADDRESS, KNOWN_NAME, buildQuery, parseAnswer } from "../dns/dns-message.ts";
import { DohStubPath, startDohStub, type DohStub } from "../dns/doh-stub.ts";
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

/** A UDP socket on loopback and an association for it through the npm `socks` client. */
async function associate(announceSourcePort: boolean): Promise<Association> {
  const udp = await boundUdpSocket();
  // createConnection serves CONNECT only; ASSOCIATE goes through an instance's events.
  const client = new SocksClient({
    proxy: { host: "127.0.0.1", port: agent.port, type: 5 },
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

/** Ends the association's TCP connection and resolves with the agent's closing line for it. */
async function endAssociation(association: Association): Promise<string> {
  association.control.end();
  const line = await agent.waitForLog(new RegExp(`${association.label} UDP association ended`));
  association.udp.close();
  return line;
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

  // Last: it stops the stub.
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
