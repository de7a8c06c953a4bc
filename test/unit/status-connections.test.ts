// The status page's connection registry (local-agent/status/connection-registry.ts) and its
// meter (connection-meter.ts) fed through the real dialer: a client that is an in-memory stream
// pair, destinations that are loopback TCP servers this file starts (the direct route), a block
// rule, a refused port and an edge nothing listens at.

import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { duplexPair, type Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAgentCommand, type AgentConfig } from "../../local-agent/config/config.ts";
import { createLogger } from "../../local-agent/log.ts";
import { statusFor } from "../../local-agent/status/agent-status.ts";
import { resultOf } from "../../local-agent/status/connection-meter.ts";
import { ConnectionRegistry, ConnectionResult } from "../../local-agent/status/connection-registry.ts";
import { openStream } from "../../local-agent/tunnel/dialer.ts";
import { AddressType, StreamStatus } from "../../worker/protocol/index.ts";

function configWith(args: string[]): AgentConfig {
  // Nothing listens at the edge's port: the edge route fails at once.
  const command = parseAgentCommand(["--edge", "http://127.0.0.1:9", "--bypass", "none", ...args], { EDGESOCKS_TOKEN: "status-test-token-0123456789" });
  if (command.kind !== "run") throw new Error(`expected a run command, got ${command.kind}`);
  return command.config;
}

/** Hands a pair half (`client`) to openStream for 127.0.0.1:`port`; `closed` resolves once the stream is over; `peer` is the client's other end. */
function openTo(port: number, config: AgentConfig, drive: (peer: Duplex) => void, earlyBytes = Buffer.alloc(0)): { client: Duplex; peer: Duplex; closed: Promise<void> } {
  const [client, peer] = duplexPair();
  peer.on("error", () => {});
  const closed = new Promise<void>((resolve) => {
    openStream(
      {
        client,
        clientLabel: "test-client",
        destination: { type: AddressType.IPv4, host: "127.0.0.1", port },
        earlyBytes,
        answer: { succeeded: () => Buffer.from("OK|"), failed: (status) => Buffer.from(`FAILED ${status}`) },
        onClosed: () => resolve(),
      },
      config,
      createLogger("error", () => {}),
    );
  });
  drive(peer);
  return { client, peer, closed };
}

const waitFor = async (condition: () => boolean, what: string) => {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

let origin: Server;
let originPort: number;
const originSockets = new Set<Socket>();
beforeAll(async () => {
  // "echo N": answers N bytes; then echoes what it gets and ends when the client does; "reset" resets.
  origin = createServer({ allowHalfOpen: true }, (socket) => {
    originSockets.add(socket);
    socket.on("error", () => {});
    socket.once("data", (first: Buffer) => {
      const command = first.toString();
      if (command === "reset") {
        // Reset a moment after the bytes leave: resetAndDestroy() in the write's callback sent a FIN (measured).
        socket.write("x".repeat(100));
        setTimeout(() => socket.resetAndDestroy(), 30);
        return;
      }
      const answerBytes = Number(/answer (\d+)/.exec(command)?.[1] ?? 0);
      socket.write(Buffer.alloc(answerBytes, 0x61));
      socket.on("end", () => socket.end());
    });
  });
  await new Promise<void>((resolve) => origin.listen(0, "127.0.0.1", resolve));
  originPort = (origin.address() as AddressInfo).port;
});
afterAll(() => {
  for (const socket of originSockets) socket.destroy();
  return new Promise<void>((resolve) => origin.close(() => resolve()));
});

describe("ConnectionRegistry", () => {
  it("lists open connections oldest first with their bytes, and counts each end once by result", () => {
    let now = 1_000;
    const registry = new ConnectionRegistry(() => now);
    const first = registry.open({ destination: "a.example:443", route: "edge", edgeLabel: "https://e.example" });
    now = 2_000;
    const second = registry.open({ destination: "[2001:db8::1]:80", route: "direct", edgeLabel: undefined });
    first.addUp(10);
    first.addDown(300);
    second.addDown(5);
    expect(registry.openConnections()).toEqual([
      { id: first.id, destination: "a.example:443", route: "edge", edgeLabel: "https://e.example", startedAtMs: 1_000, upBytes: 10, downBytes: 300 },
      { id: second.id, destination: "[2001:db8::1]:80", route: "direct", edgeLabel: undefined, startedAtMs: 2_000, upBytes: 0, downBytes: 5 },
    ]);
    expect(registry.openConnections(1).map((connection) => connection.id)).toEqual([first.id]);
    expect(Object.fromEntries(registry.openByRoute())).toEqual({ edge: 1, direct: 1 });
    first.close(ConnectionResult.Ok);
    first.close(ConnectionResult.Reset);
    second.close(ConnectionResult.ConnectionRefused);
    expect(registry.openCount).toBe(0);
    const ended = registry.endedByResult();
    expect(ended.ok).toBe(1);
    expect(ended.reset).toBe(0);
    expect(ended.connection_refused).toBe(1);
    expect(Object.keys(ended)).toHaveLength(Object.keys(ConnectionResult).length);
    expect(registry.totalBytes).toEqual({ upBytes: 10, downBytes: 305 });
  });

  it("adds every byte to the throughput bucket of the time it moved", () => {
    let now = 50_000;
    const registry = new ConnectionRegistry(() => now);
    const record = registry.open({ destination: "a:1", route: "edge", edgeLabel: undefined });
    record.addDown(10_000);
    now = 51_000;
    record.addUp(500);
    now = 56_000;
    const last = registry.throughput.series(now).at(-1);
    expect(last).toEqual({ startedAtMs: 50_000, upBytesPerSecond: 100, downBytesPerSecond: 2_000 });
  });
});

describe("resultOf", () => {
  const end = { route: "edge" as const, failedStatus: undefined, reset: false, clientEnded: true, agentEnded: true };
  it("names a block first, then the failed open's status, then a reset, then whether both sides finished", () => {
    expect(resultOf({ ...end, route: "block", failedStatus: StreamStatus.NotAllowed })).toBe("blocked");
    expect(resultOf({ ...end, failedStatus: StreamStatus.Timeout, reset: true })).toBe("timed_out");
    expect(resultOf({ ...end, failedStatus: StreamStatus.OnCloudflare })).toBe("on_cloudflare");
    expect(resultOf({ ...end, reset: true })).toBe("reset");
    expect(resultOf(end)).toBe("ok");
    expect(resultOf({ ...end, clientEnded: false })).toBe("client_closed");
    expect(resultOf({ ...end, agentEnded: false })).toBe("client_closed");
  });
});

describe("the meter on the dialer's streams", () => {
  it("shows a live direct connection with the bytes each way, the success answer and the request left out, then counts it ok", async () => {
    const config = configWith(["--rule", "direct:cidr=127.0.0.0/8"]);
    const registry = statusFor(config).connections;
    const { peer, closed } = openTo(originPort, config, (peer) => peer.write("answer 5000"), Buffer.from("12"));
    let received = 0;
    peer.on("data", (chunk: Buffer) => (received += chunk.byteLength));
    await waitFor(() => received >= 5_003, "the answer");
    const [live] = registry.openConnections();
    expect(live).toMatchObject({ destination: `127.0.0.1:${originPort}`, route: "direct", edgeLabel: undefined, upBytes: 13, downBytes: 5_000 });
    peer.end();
    await closed;
    expect(registry.openCount).toBe(0);
    expect(registry.endedByResult().ok).toBe(1);
    expect(registry.totalBytes).toEqual({ upBytes: 13, downBytes: 5_000 });
  });

  it("counts a connection the destination resets mid-stream as reset", async () => {
    const config = configWith(["--rule", "direct:cidr=127.0.0.0/8"]);
    const { closed } = openTo(originPort, config, (peer) => peer.write("reset"));
    await closed;
    const registry = statusFor(config).connections;
    expect(registry.endedByResult().reset).toBe(1);
    expect(registry.totalBytes.downBytes).toBe(100);
  });

  it("counts a client that hangs up before the end as client_closed", async () => {
    const config = configWith(["--rule", "direct:cidr=127.0.0.0/8"]);
    const { client, peer, closed } = openTo(originPort, config, (peer) => peer.write("answer 10"));
    // A pair half does not pass its end to the other: the client's side goes, as a socket's would.
    peer.once("data", () => client.destroy());
    await closed;
    expect(statusFor(config).connections.endedByResult().client_closed).toBe(1);
  });

  it("counts a refused port by its status, a block rule as blocked, and an edge that cannot be reached as general_failure on the edge route", async () => {
    const refusedServer = createServer();
    await new Promise<void>((resolve) => refusedServer.listen(0, "127.0.0.1", resolve));
    const refusedPort = (refusedServer.address() as AddressInfo).port;
    await new Promise<void>((resolve) => refusedServer.close(() => resolve()));
    const config = configWith(["--rule", `block:port=${originPort}`, "--rule", `direct:port=${refusedPort}`]);
    const registry = statusFor(config).connections;
    await openTo(refusedPort, config, () => {}).closed;
    await openTo(originPort, config, () => {}).closed;
    const edgeBound = openTo(1, config, () => {});
    expect(registry.openConnections()).toMatchObject([{ destination: "127.0.0.1:1", route: "edge", edgeLabel: "http://127.0.0.1:9" }]);
    await edgeBound.closed;
    const ended = registry.endedByResult();
    expect({ refused: ended.connection_refused, blocked: ended.blocked, general: ended.general_failure, ok: ended.ok }).toEqual({ refused: 1, blocked: 1, general: 1, ok: 0 });
    expect(statusFor(config).snapshot().connections.errors).toEqual({ connection_refused: 1, blocked: 1, general_failure: 1 });
  });
});
