// `npm run bench`: single-stream download throughput through the agent and a local edge for
// several receive windows, at several agent-edge round-trip times, with a direct connection as
// the physical limit. Prints a table of MB/s and ratios; the default window comes from here.
//
//   npm run bench -- [--rounds N] [--write docs/benchmarks.md]

import { createHash } from "node:crypto";
import { connect, type Socket } from "node:net";
import { cpus, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { startTcpOrigin, writeRandom } from "../e2e/origins.ts";
import { startAgent, startEdge } from "../e2e/processes.ts";
import { socksConnect } from "../e2e/socks-client.ts";
import { startDelayRelay } from "./delay-relay.ts";

const MIB = 1024 * 1024;
const WINDOWS = [256 * 1024, 1 * MIB, 2 * MIB, 4 * MIB, 16 * MIB];
const RTTS_MS = [0, 20, 40];

const { values } = parseArgs({ options: { rounds: { type: "string", default: "3" }, write: { type: "string" } } });
const rounds = Number(values.rounds);

/** Bytes to move per measurement: enough for a steady state, small enough for slow windows. */
function transferBytes(rttMs: number): number {
  return rttMs === 0 ? 256 * MIB : 48 * MIB;
}

async function receiveAll(socket: Socket, expectedBytes: number): Promise<number> {
  const started = process.hrtime.bigint();
  const hash = createHash("sha256");
  let receivedBytes = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      receivedBytes += chunk.byteLength;
    });
    socket.once("end", resolve);
    socket.once("error", reject);
  });
  if (receivedBytes !== expectedBytes) throw new Error(`received ${receivedBytes} of ${expectedBytes} bytes`);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

async function main(): Promise<void> {
  let bytesForNext = 0;
  const origin = await startTcpOrigin((socket) => {
    void writeRandom(socket, bytesForNext).then(() => socket.end(), () => socket.destroy());
  });
  const edge = await startEdge();
  const results = new Map<string, number[]>();
  const record = (key: string, mbPerSecond: number) => results.set(key, [...(results.get(key) ?? []), mbPerSecond]);

  for (let round = 1; round <= rounds; round++) {
    for (const rttMs of RTTS_MS) {
      const bytes = transferBytes(rttMs);
      bytesForNext = bytes;
      const direct = connect(origin.port, "127.0.0.1");
      record(`direct@${rttMs}`, bytes / 1e6 / (await receiveAll(direct, bytes)));
      const relay = await startDelayRelay(Number(new URL(edge.url).port), rttMs);
      for (const windowBytes of WINDOWS) {
        const agent = await startAgent(`http://127.0.0.1:${relay.port}`, edge.token, ["--window-bytes", String(windowBytes), "--log-level", "warn"]);
        try {
          bytesForNext = bytes;
          const socket = await socksConnect(agent.port, "127.0.0.1", origin.port);
          const seconds = await receiveAll(socket, bytes);
          record(`${windowBytes}@${rttMs}`, bytes / 1e6 / seconds);
        } finally {
          await agent.stop();
        }
      }
      await relay.close();
      process.stderr.write(`round ${round} rtt ${rttMs} ms done\n`);
    }
  }
  await edge.stop();
  await origin.close();

  const lines: string[] = [];
  lines.push(`| agent-edge RTT | direct MB/s | ${WINDOWS.map((w) => `window ${w / 1024} KiB: MB/s (ratio to direct)`).join(" | ")} |`);
  lines.push(`| --- | --- | ${WINDOWS.map(() => "---").join(" | ")} |`);
  for (const rttMs of RTTS_MS) {
    const direct = median(results.get(`direct@${rttMs}`) ?? []);
    const cells = WINDOWS.map((w) => {
      const value = median(results.get(`${w}@${rttMs}`) ?? []);
      return `${value.toFixed(0)} (${(value / direct).toFixed(2)})`;
    });
    lines.push(`| ${rttMs} ms | ${direct.toFixed(0)} | ${cells.join(" | ")} |`);
  }
  const table = lines.join("\n");
  const header = `Single-stream download, median of ${rounds} alternating rounds; ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString()}`;
  process.stdout.write(`${header}\n\n${table}\n`);
  if (values.write) {
    const { appendFileSync } = await import("node:fs");
    appendFileSync(values.write, `\n### ${header}\n\nCommand: \`npm run bench -- --rounds ${rounds}\`\n\n${table}\n`);
  }
}

void main();
