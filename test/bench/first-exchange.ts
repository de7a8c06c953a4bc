// `npm run bench:first`: what a fresh connection's first exchange costs through edgesocks (agent
// with its warm pool → the Worker's own workerd) next to Dante, on loopback (issue 10). Each of N
// fresh connections times its SOCKS5 CONNECT→reply, its first request→first response byte and a
// second exchange on the same connection; the origin notes when each request arrives, which
// splits an exchange into its upload leg (client write → origin read) and download leg (origin
// write → client read), both on this process's clock.
//
//   npm run bench:first -- [--samples N] [--gap-ms MS] [--request-bytes N] [--skip-zero-rtt]
//                          [--agent-arg ARG]... [--root DIR] [--json PATH] [--hold]
//
// --root runs the edge and the agent from another checkout (e.g. `git archive HEAD | tar -x -C
// DIR` with node_modules linked in): wrangler dev restarts the Worker's workerd when a file under
// worker/ changes, which ends a run on a tree someone is editing.
// --json writes every sample, per contender, to PATH. --agent-arg passes a flag to every agent started (repeatable); --hold keeps everything running
// after the report and prints the pids (for strace -p), until Ctrl-C.

import { writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { repoRoot, startAgent, startEdge, type RunningAgent } from "../e2e/processes.ts";
import { assertLocalEdgeAlive, localEdge, type LocalEdge } from "./local-edge.ts";
import { ensurePeerPackages, startDante, type Peer } from "./peers.ts";

const { values } = parseArgs({
  options: {
    samples: { type: "string", default: "200" },
    "gap-ms": { type: "string", default: "30" },
    "request-bytes": { type: "string", default: "64" },
    "skip-zero-rtt": { type: "boolean", default: false },
    "agent-arg": { type: "string", multiple: true, default: [] },
    root: { type: "string" },
    json: { type: "string" },
    hold: { type: "boolean", default: false },
  },
});
const samples = Number(values.samples);
/** Pause between connections: the last one's teardown and the warm pool's refill finish first. */
const gapMs = Number(values["gap-ms"]);
const requestBytes = Number(values["request-bytes"]);
if (!Number.isInteger(samples) || samples < 1) usage("--samples must be a whole number of 1 or more");
if (!Number.isFinite(gapMs) || gapMs < 0) usage("--gap-ms must be a number of 0 or more");
const root = values.root === undefined ? repoRoot : resolve(values.root);
const agentCli = join(root, "local-agent", "cli", "main.ts");
if (!Number.isInteger(requestBytes) || requestBytes < 1 || requestBytes > 16_384) usage("--request-bytes must be 1..16384");

function usage(message: string): never {
  process.stderr.write(`bench:first: ${message}\n`);
  process.exit(2);
}

/** A loopback origin that answers every read with the same bytes and notes when each read arrived. */
type EchoOrigin = { port: number; arrivals: number[]; close(): Promise<void> };

async function startEchoOrigin(): Promise<EchoOrigin> {
  const sockets = new Set<Socket>();
  const arrivals: number[] = [];
  const server: Server = createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      arrivals.push(performance.now());
      socket.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    arrivals,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** One fresh connection's times, in ms. */
type Sample = {
  /** TCP connect to the proxy → first response byte: what `npm run bench` calls first byte. */
  firstByteMs: number;
  /** TCP connect to the proxy, then greeting and method choice. */
  greetMs: number;
  /** CONNECT request written → the 10-byte reply complete. */
  connectMs: number;
  /** First request written → first response byte. */
  firstMs: number;
  /** ... of which: request written → the origin read it. */
  firstUpMs: number;
  /** ... of which: the origin read it → first response byte at the client. */
  firstDownMs: number;
  /** Second request written → first response byte. */
  secondMs: number;
  secondUpMs: number;
  secondDownMs: number;
};

/** Resolves with the next chunk the socket delivers (it is flowing while a wait is pending). */
function nextChunk(socket: Socket): Promise<{ atMs: number; chunk: Buffer }> {
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      const atMs = performance.now();
      socket.off("error", onError);
      socket.off("end", onEnd);
      socket.pause();
      resolve({ atMs, chunk });
    };
    const onError = (error: Error) => {
      socket.off("data", onData);
      reject(error);
    };
    const onEnd = () => {
      socket.off("data", onData);
      reject(new Error("the proxy closed the connection"));
    };
    socket.once("data", onData);
    socket.once("error", onError);
    socket.once("end", onEnd);
    socket.resume();
  });
}

/** Reads until `byteLength` bytes have come (SOCKS replies; a response of `byteLength`). */
async function readAtLeast(socket: Socket, byteLength: number): Promise<{ firstAtMs: number; bytes: Buffer }> {
  const first = await nextChunk(socket);
  let bytes = first.chunk;
  while (bytes.byteLength < byteLength) bytes = Buffer.concat([bytes, (await nextChunk(socket)).chunk]);
  return { firstAtMs: first.atMs, bytes };
}

function connectTo(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, noDelay: true }, () => {
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
    socket.pause();
  });
}

async function oneConnection(proxyPort: number, origin: EchoOrigin): Promise<Sample> {
  const request = Buffer.alloc(requestBytes, 0x61);
  const started = performance.now();
  const socket = await connectTo(proxyPort);
  try {
    socket.write(Uint8Array.of(0x05, 0x01, 0x00));
    const choice = (await readAtLeast(socket, 2)).bytes;
    if (choice[1] !== 0x00) throw new Error(`SOCKS method 0x${(choice[1] ?? 0).toString(16)}`);
    const connectAt = performance.now();
    socket.write(Uint8Array.of(0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, origin.port >> 8, origin.port & 0xff));
    const reply = await readAtLeast(socket, 10);
    const repliedAt = performance.now();
    if (reply.bytes[1] !== 0x00) throw new Error(`SOCKS reply 0x${(reply.bytes[1] ?? 0).toString(16)}`);
    if (reply.bytes.byteLength !== 10) throw new Error(`${reply.bytes.byteLength - 10} bytes arrived with the SOCKS reply`);
    const exchange = async () => {
      const arrivalsBefore = origin.arrivals.length;
      const sentAt = performance.now();
      socket.write(request);
      const answer = await readAtLeast(socket, requestBytes);
      if (!answer.bytes.equals(request)) throw new Error(`the answer is ${answer.bytes.byteLength} bytes, not the ${requestBytes} sent`);
      const arrivedAt = origin.arrivals[arrivalsBefore];
      if (arrivedAt === undefined) throw new Error("the origin noted no arrival for the request");
      return { answeredAtMs: answer.firstAtMs, totalMs: answer.firstAtMs - sentAt, upMs: arrivedAt - sentAt, downMs: answer.firstAtMs - arrivedAt };
    };
    const first = await exchange();
    const second = await exchange();
    return {
      firstByteMs: first.answeredAtMs - started,
      greetMs: connectAt - started,
      connectMs: repliedAt - connectAt,
      firstMs: first.totalMs,
      firstUpMs: first.upMs,
      firstDownMs: first.downMs,
      secondMs: second.totalMs,
      secondUpMs: second.upMs,
      secondDownMs: second.downMs,
    };
  } finally {
    socket.destroy();
  }
}

function percentile(list: number[], fraction: number): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? Number.NaN;
}

type Contender = { name: string; port: number };

/** Samples every contender, interleaved connection by connection so drift hits them alike. */
async function measure(contenders: Contender[], origin: EchoOrigin): Promise<Map<string, Sample[]>> {
  const results = new Map<string, Sample[]>(contenders.map((contender) => [contender.name, []]));
  // A few unrecorded connections first: JIT, the pool's first refills.
  for (let index = 0; index < 10; index++) for (const contender of contenders) await oneConnection(contender.port, origin);
  for (let index = 0; index < samples; index++) {
    for (const contender of contenders) {
      await new Promise((resolve) => setTimeout(resolve, gapMs));
      try {
        results.get(contender.name)?.push(await oneConnection(contender.port, origin));
      } catch (error) {
        throw new Error(`${contender.name}, connection ${index + 1}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    if ((index + 1) % 50 === 0) process.stderr.write(`bench:first: ${index + 1}/${samples}\n`);
  }
  return results;
}

const METRICS: Array<[keyof Sample, string]> = [
  ["firstByteMs", "first byte: TCP connect → first response byte"],
  ["greetMs", "TCP connect + greeting"],
  ["connectMs", "CONNECT → reply"],
  ["firstMs", "1st exchange: request → first response byte"],
  ["firstUpMs", "  upload leg (client write → origin read)"],
  ["firstDownMs", "  download leg (origin read → client read)"],
  ["secondMs", "2nd exchange: request → first response byte"],
  ["secondUpMs", "  upload leg"],
  ["secondDownMs", "  download leg"],
];

function report(results: Map<string, Sample[]>, baseline: string): string {
  const names = [...results.keys()];
  const fmt = (ms: number) => ms.toFixed(2);
  const header = `| measure (ms) | ${names.map((name) => `${name} p50 | ${name} p90`).join(" | ")} | ${names
    .filter((name) => name !== baseline)
    .map((name) => `${name} ÷ ${baseline} (p50)`)
    .join(" | ")} |`;
  const lines = [header, `|${" --- |".repeat(1 + names.length * 2 + names.length - 1)}`];
  for (const [key, label] of METRICS) {
    const p50 = (name: string) => percentile((results.get(name) ?? []).map((sample) => sample[key]), 0.5);
    const p90 = (name: string) => percentile((results.get(name) ?? []).map((sample) => sample[key]), 0.9);
    const ratios = names.filter((name) => name !== baseline).map((name) => (p50(name) / p50(baseline)).toFixed(2));
    lines.push(`| ${label} | ${names.map((name) => `${fmt(p50(name))} | ${fmt(p90(name))}`).join(" | ")} | ${ratios.join(" | ")} |`);
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  ensurePeerPackages();
  const origin = await startEchoOrigin();
  const edge = await startEdge({}, root);
  const agents: RunningAgent[] = [];
  let dante: Peer | undefined;
  let local: LocalEdge | undefined;
  try {
    local = await localEdge(edge, "worker");
    process.stderr.write(`bench:first: ${local.description}: ${local.agentEdgeUrl}\n`);
    const extra = values["agent-arg"] ?? [];
    const warm = await startAgent(local.agentEdgeUrl, edge.token, ["--log-level", "warn", ...extra], agentCli);
    agents.push(warm);
    const contenders: Contender[] = [{ name: "edgesocks", port: warm.port }];
    if (!values["skip-zero-rtt"]) {
      const zeroRtt = await startAgent(local.agentEdgeUrl, edge.token, ["--log-level", "warn", "--zero-rtt", ...extra], agentCli);
      agents.push(zeroRtt);
      contenders.push({ name: "edgesocks --zero-rtt", port: zeroRtt.port });
    }
    dante = await startDante();
    contenders.push({ name: "dante", port: dante.port });
    // The agents' start-up probe and pool fill run right after their ready lines.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const results = await measure(contenders, origin);
    assertLocalEdgeAlive(local);
    if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(Object.fromEntries(results), null, 1)}\n`);
    const danteFirst = percentile((results.get("dante") ?? []).map((sample) => sample.firstByteMs), 0.5);
    process.stdout.write(
      [
        `First exchange on fresh connections: ${samples} per contender, interleaved, ${gapMs} ms apart; ${requestBytes}-byte request echoed by a loopback origin.`,
        `Checkout: ${root}. Agents: warm pool (defaults), --bypass none --log-level warn ${extra.join(" ")}; edge: the Worker's own workerd (${local.agentEdgeUrl}).`,
        "",
        report(results, "dante"),
        "",
        ...[...results.keys()]
          .filter((name) => name !== "dante")
          .map((name) => {
            const first = percentile((results.get(name) ?? []).map((sample) => sample.firstByteMs), 0.5);
            return `${name}: first byte (TCP connect → first response byte) p50 ${first.toFixed(2)} ms = ${(first / danteFirst).toFixed(2)}× Dante's ${danteFirst.toFixed(2)} ms (goal: ≤ 3×)`;
          }),
        "",
      ].join("\n"),
    );
    if (values.hold) {
      process.stderr.write(
        `bench:first: holding; worker workerd ${local.workerPid}, agents ${agents.map((agent) => agent.pid).join(" ")}, dante port ${dante.port}, origin ${origin.port}, agents' ports ${agents.map((agent) => agent.port).join(" ")}; Ctrl-C ends\n`,
      );
      await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
    }
  } catch (error) {
    if (local) assertLocalEdgeAlive(local); // a restarted workerd explains the failure better than the failure does
    for (const agent of agents) process.stderr.write(`bench:first: agent ${agent.pid}'s last log lines:\n${agent.log().split("\n").slice(-8).join("\n")}\n`);
    throw error;
  } finally {
    for (const agent of agents) await agent.stop();
    await edge.stop();
    await dante?.stop();
    await origin.close();
  }
}

void main().catch((error: unknown) => {
  process.stderr.write(`bench:first: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
