// openStream (local-agent/tunnel/dialer.ts) in-process: the route each destination takes, the answer
// the client gets, and onClosed running exactly once. The client is a real in-memory stream pair;
// destinations are loopback TCP servers this file starts, or refused before anything is dialled.

import { createServer, type AddressInfo, type Server } from "node:net";
import { duplexPair, type Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAgentCommand, type AgentConfig } from "../../local-agent/config/config.ts";
import { openStream } from "../../local-agent/tunnel/dialer.ts";
import { createLogger } from "../../local-agent/log.ts";
import { AddressType, StreamStatus, type Destination } from "../../worker/protocol/index.ts";

/** What one openStream call did: the failure it answered, the client's bytes, the log, onClosed calls. */
type Outcome = { failures: { status: StreamStatus; reason: string }[]; received: Buffer; log: string[]; closedCount: number };

function configWith(args: string[]): AgentConfig {
  // The edge URL is never dialled here: every destination below is refused, blocked or direct.
  const command = parseAgentCommand(["--edge", "http://127.0.0.1:9", "--bypass", "none", ...args], { EDGESOCKS_TOKEN: "dialer-test-token-0123456789" });
  if (command.kind !== "run") throw new Error(`expected a run command, got ${command.kind}`);
  return command.config;
}

/** Opens `destination` with `earlyBytes`, lets `drive` use the other end, and resolves once the stream is over. */
async function open(destination: Destination, config: AgentConfig, earlyBytes = Buffer.alloc(0), drive: (peer: Duplex) => void = (peer) => peer.end()): Promise<Outcome> {
  const [client, peer] = duplexPair();
  const outcome: Outcome = { failures: [], received: Buffer.alloc(0), log: [], closedCount: 0 };
  const peerDone = new Promise<void>((resolve) => {
    peer.on("data", (chunk: Buffer) => (outcome.received = Buffer.concat([outcome.received, chunk])));
    peer.on("end", () => resolve());
  });
  const closed = new Promise<void>((resolve) => {
    openStream(
      {
        client,
        clientLabel: "test-client",
        destination,
        earlyBytes,
        answer: {
          succeeded: () => Buffer.from("OK|"),
          failed: (status, reason) => {
            outcome.failures.push({ status, reason });
            return Buffer.from(`FAILED ${status}`);
          },
        },
        onClosed: () => {
          outcome.closedCount += 1;
          resolve();
        },
      },
      config,
      createLogger("debug", (line) => outcome.log.push(line)),
    );
  });
  // The client's 'close' is the last event a route listens to (the destination's error and the
  // open timer are settled by the time the client has its answer): a second onClosed would come
  // from it at the latest. A client that got its answer hangs up, as a real one does; this
  // listener, added after the route's, runs after it.
  const clientClosed = new Promise<void>((resolve) => client.once("close", () => resolve()));
  drive(peer);
  await Promise.all([closed, peerDone]);
  client.destroy();
  await clientClosed;
  return outcome;
}

let countingOrigin: Server;
let countingPort: number;
beforeAll(async () => {
  // Reads to FIN, then answers how many bytes it got (the half-close shape).
  countingOrigin = createServer({ allowHalfOpen: true }, (socket) => {
    let receivedBytes = 0;
    socket.on("data", (chunk: Buffer) => (receivedBytes += chunk.byteLength));
    socket.on("end", () => socket.end(`received ${receivedBytes} bytes`));
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => countingOrigin.listen(0, "127.0.0.1", resolve));
  countingPort = (countingOrigin.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => countingOrigin.close(() => resolve())));

describe("openStream", () => {
  it("refuses a name the edge's OPEN frame cannot carry before any route starts", async () => {
    const longName = `${"a".repeat(60)}.`.repeat(5) + "example";
    const outcome = await open({ type: AddressType.Domain, host: longName, port: 443 }, configWith([]));
    expect(outcome.failures).toEqual([{ status: StreamStatus.GeneralFailure, reason: "domain name is 312 bytes; 1 to 255 allowed" }]);
    expect(outcome.received.toString()).toBe(`FAILED ${StreamStatus.GeneralFailure}`);
    expect(outcome.closedCount).toBe(1);
    expect(outcome.log.join("")).toMatch(/info test-client -> a{60}\..* refused: domain name is 312 bytes/);
  });

  it("answers a blocked destination with not-allowed, naming the rule, and closes once", async () => {
    const outcome = await open({ type: AddressType.IPv4, host: "127.0.0.1", port: countingPort }, configWith(["--rule", `block:port=${countingPort}`]));
    expect(outcome.failures).toEqual([{ status: StreamStatus.NotAllowed, reason: `blocked by rule block:port=${countingPort}` }]);
    expect(outcome.received.toString()).toBe(`FAILED ${StreamStatus.NotAllowed}`);
    expect(outcome.closedCount).toBe(1);
    expect(outcome.log.join("")).toContain(`test-client -> 127.0.0.1:${countingPort} block: blocked by rule block:port=${countingPort}`);
  });

  it("relays a direct stream with its early bytes through half-close, and closes once with ok", async () => {
    const config = configWith(["--rule", "direct:cidr=127.0.0.0/8"]);
    const outcome = await open({ type: AddressType.IPv4, host: "127.0.0.1", port: countingPort }, config, Buffer.from("early"), (peer) => peer.end("+more"));
    expect(outcome.failures).toEqual([]);
    expect(outcome.received.toString()).toBe("OK|received 10 bytes");
    expect(outcome.closedCount).toBe(1);
    expect(outcome.log.join("")).toMatch(new RegExp(`test-client -> 127\\.0\\.0\\.1:${countingPort} direct up=10B down=17B .* ok\\n$`));
  });

  it("answers connection refused for a closed port on the direct route, and closes once", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const outcome = await open({ type: AddressType.IPv4, host: "127.0.0.1", port: closedPort }, configWith(["--bypass", "private"]), Buffer.alloc(0), () => {});
    expect(outcome.failures).toEqual([{ status: StreamStatus.ConnectionRefused, reason: "ECONNREFUSED" }]);
    expect(outcome.received.toString()).toBe(`FAILED ${StreamStatus.ConnectionRefused}`);
    expect(outcome.closedCount).toBe(1);
  });
});
