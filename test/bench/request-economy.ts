// What a browsing-like workload costs in Worker requests: bursts of 10 concurrent short HTTP
// exchanges through the agent, with pauses between them as a person reading pages leaves, every
// answer checked. Tunnels are counted where they reach the edge (a recorder in front of the
// Worker's workerd: each upgrade is one Worker request), for the agent's defaults and for one
// tunnel per connection (--max-streams-per-tunnel 1, how every earlier version ran).

import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { startAgent } from "../e2e/processes.ts";
import { startUpgradeRecorder } from "../e2e/upgrade-recorder.ts";
import { POOLED_MAX_IDLE_MS } from "../../worker/protocol/index.ts";
import { openConnection } from "./workloads.ts";

const BURST = 10;
/** Pauses between bursts, cycled: a page's assets come in bursts, a reader pauses between pages. */
const PAUSES_MS = [50, 200, 500, 1_500, 100, 3_000];
/** Answer size of each exchange: a small asset. */
const ANSWER_BYTES = 2_048;
/** The pool's idle rules, as tunnel-pool.ts has them (unit-tested there). */
const IDLE_SHRINK_MS = 15 * 60_000;
const DEFAULT_POOL_SIZE = 4;

export type EconomyRow = { setup: string; connections: number; tunnels: number; perThousand: number; seconds: number };

/** An HTTP origin that answers every GET with the same ANSWER_BYTES body and closes. */
async function startAssetOrigin(): Promise<{ port: number; body: Buffer; close(): Promise<void> }> {
  const body = randomBytes(ANSWER_BYTES);
  const server: Server = createServer((_, response) => {
    response.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": body.byteLength, Connection: "close" });
    response.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    body,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** One GET through SOCKS5 at `proxyPort`; true when the answer's body is the origin's, byte for byte. */
async function exchange(proxyPort: number, originPort: number, body: Buffer): Promise<boolean> {
  const socket = await openConnection({ proxyPort, originPort });
  socket.resume();
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  const ended = new Promise<void>((resolve, reject) => {
    socket.once("end", resolve);
    socket.once("error", reject);
  });
  socket.end(`GET /asset HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\nConnection: close\r\n\r\n`);
  await ended;
  socket.destroy();
  const answer = Buffer.concat(chunks);
  const split = answer.indexOf("\r\n\r\n");
  return split > 0 && answer.subarray(0, 12).toString() === "HTTP/1.1 200" && Buffer.compare(answer.subarray(split + 4), body) === 0;
}

/**
 * Runs `bursts` bursts through an agent started with `agentArgs` against the Worker at
 * `workerUrl` (its own workerd), and counts the tunnels that reached it.
 */
export async function measureRequestEconomy(workerUrl: string, token: string, setup: string, agentArgs: string[], bursts: number): Promise<EconomyRow> {
  const origin = await startAssetOrigin();
  const recorder = await startUpgradeRecorder(Number(new URL(workerUrl).port));
  const agent = await startAgent(`http://127.0.0.1:${recorder.port}`, token, ["--log-level", "warn", ...agentArgs]);
  try {
    const startedAt = performance.now();
    let exact = 0;
    for (let burst = 0; burst < bursts; burst++) {
      const results = await Promise.all(Array.from({ length: BURST }, () => exchange(agent.port, origin.port, origin.body)));
      exact += results.filter(Boolean).length;
      await new Promise((resolve) => setTimeout(resolve, PAUSES_MS[burst % PAUSES_MS.length]));
    }
    const connections = bursts * BURST;
    if (exact !== connections) throw new Error(`${setup}: ${connections - exact} of ${connections} exchanges came back wrong`);
    const tunnels = recorder.heads().length;
    return { setup, connections, tunnels, perThousand: (tunnels / connections) * 1_000, seconds: (performance.now() - startedAt) / 1_000 };
  } finally {
    await agent.stop();
    await recorder.close();
    await origin.close();
  }
}

/** The report's lines: the table, and what the pool costs an idle day. */
export function economyTable(rows: readonly EconomyRow[]): string[] {
  // The first row is the defaults, the last one tunnel per connection.
  const withReuse = rows[0];
  const oneEach = rows.length > 1 ? rows[rows.length - 1] : undefined;
  const lines = [
    `| setup | connections | tunnels (Worker requests) | per 1,000 connections | seconds |`,
    "| --- | --- | --- | --- | --- |",
    ...rows.map((row) => `| ${row.setup} | ${row.connections} | ${row.tunnels} | ${row.perThousand.toFixed(0)} | ${row.seconds.toFixed(1)} |`),
  ];
  if (withReuse && oneEach) lines.push("", `Reuse ÷ one tunnel per connection: ${(withReuse.tunnels / oneEach.tunnels).toFixed(2)} of the requests.`);
  // Not waited out: the pool's idle rules are unit-tested with a fake clock (test/unit/tunnel-pool.test.ts).
  const renewalsBeforeLapse = Math.floor(IDLE_SHRINK_MS / POOLED_MAX_IDLE_MS);
  const perIdlePeriod = DEFAULT_POOL_SIZE * (1 + renewalsBeforeLapse);
  lines.push(
    "",
    `Idle: after its last client the pool renews its ${DEFAULT_POOL_SIZE} spares every ${POOLED_MAX_IDLE_MS / 60_000} min for ${IDLE_SHRINK_MS / 60_000} min, then lets them lapse:`,
    `at most ${perIdlePeriod} Worker requests per idle period however long it lasts, so an idle day costs ${perIdlePeriod} (was ${DEFAULT_POOL_SIZE * Math.round(86_400_000 / POOLED_MAX_IDLE_MS)} with spares renewed all day).`,
    "The first connection after that opens a cold tunnel: the edge-latency table's cold row is its cost.",
  );
  return lines;
}
