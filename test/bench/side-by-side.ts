// `npm run bench`: edgesocks (agent + the Worker under wrangler dev) side by side with Dante,
// microsocks and a direct connection, in alternating rounds on loopback, as ratios to the peers.
//
//   npm run bench -- [--rounds N] [--quick] [--edge-rtt-ms MS] [--write docs/benchmarks.md]

import { readFileSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { findWorkerdPid, startAgent, startEdge } from "../e2e/processes.ts";
import { startDelayRelay } from "./delay-relay.ts";
import { ensurePeerPackages, startDante, startMicrosocks, type Peer } from "./peers.ts";
import { cpuSeconds, processTree, totalRssBytes } from "./proc-stats.ts";
import { download, firstByteAtOriginMs, firstByteMs, openIdle, startOrigin, upload, type Route } from "./workloads.ts";

const MIB = 1024 * 1024;
const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    quick: { type: "boolean", default: false },
    "edge-rtt-ms": { type: "string", default: "40" },
    write: { type: "string" },
  },
});
const quick = values.quick ?? false;
const rounds = quick ? 1 : Number(values.rounds);
const edgeRttMs = Number(values["edge-rtt-ms"]);
const SIZES = {
  singleStreamBytes: (quick ? 32 : 128) * MIB,
  firstByteSamples: quick ? 30 : 100,
  concurrent: [
    { streams: 100, bytesEach: 1 * MIB },
    { streams: 500, bytesEach: (quick ? 128 : 256) * 1024 },
  ],
  idleConnections: quick ? 100 : 300,
  arrivalSamples: quick ? 5 : 15,
};

/** A contender: how to reach the origin through it, and which processes do its work. */
type Contender = { name: string; proxyPort: number | undefined; costPids: () => Record<string, number[]> };

type Samples = Map<string, number[]>;
const samples: Samples = new Map();
const record = (contender: string, metric: string, value: number) => {
  const key = `${contender}|${metric}`;
  samples.set(key, [...(samples.get(key) ?? []), value]);
};

function percentile(list: number[], fraction: number): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? Number.NaN;
}
const median = (list: number[]) => percentile(list, 0.5);

/** Runs one measurement; a failure names the contender and the measure. */
async function step<T>(contender: string, measure: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw new Error(`${contender}, ${measure}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

async function measureContender(contender: Contender, originPort: number): Promise<void> {
  const route: Route = { proxyPort: contender.proxyPort, originPort };
  const name = contender.name;
  const costs = contender.costPids();
  const cpuBefore = Object.fromEntries(Object.entries(costs).map(([part, pids]) => [part, cpuSeconds(pids)]));
  const bytes = SIZES.singleStreamBytes;
  record(name, "download MB/s", bytes / 1e6 / (await step(name, "download", () => download(route, bytes))));
  record(name, "upload MB/s", bytes / 1e6 / (await step(name, "upload", () => upload(route, bytes))));
  for (const [part, pids] of Object.entries(costs)) {
    const gigabytes = (2 * bytes) / 1e9;
    record(name, `CPU s/GB (${part})`, (cpuSeconds(pids) - (cpuBefore[part] ?? 0)) / gigabytes);
  }
  const firstBytes: number[] = [];
  for (let index = 0; index < SIZES.firstByteSamples; index++) firstBytes.push(await step(name, "first byte", () => firstByteMs(route)));
  record(name, "first byte p50 ms", median(firstBytes));
  record(name, "first byte p95 ms", percentile(firstBytes, 0.95));
  for (const { streams, bytesEach } of SIZES.concurrent) {
    const started = performance.now();
    await step(name, `${streams} streams`, () => Promise.all(Array.from({ length: streams }, () => download(route, bytesEach))));
    record(name, `${streams} streams MB/s`, (streams * bytesEach) / 1e6 / ((performance.now() - started) / 1000));
  }
  if (contender.proxyPort !== undefined) {
    const before = Object.fromEntries(Object.entries(costs).map(([part, pids]) => [part, totalRssBytes(pids)]));
    const idle = await step(name, "idle connections", () => openIdle(route, SIZES.idleConnections));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const [part, pids] of Object.entries(contender.costPids())) {
      record(name, `KiB per idle conn (${part})`, (totalRssBytes(pids) - (before[part] ?? 0)) / 1024 / SIZES.idleConnections);
    }
    for (const socket of idle) socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function main(): Promise<void> {
  ensurePeerPackages();
  const origin = await startOrigin();
  const edge = await startEdge();
  const workerdPid = findWorkerdPid(edge.wranglerPid);
  const agent = await startAgent(edge.url, edge.token, ["--log-level", "warn"]);
  const peers: Peer[] = [await startMicrosocks(), await startDante()];
  const contenders: Contender[] = [
    { name: "direct", proxyPort: undefined, costPids: () => ({}) },
    { name: "edgesocks", proxyPort: agent.port, costPids: () => ({ agent: processTree(agent.pid), workerd: [workerdPid] }) },
    ...peers.map((peer) => ({ name: peer.name, proxyPort: peer.port, costPids: () => ({ [peer.name]: peer.pids() }) })),
  ];
  try {
    for (let round = 0; round < rounds; round++) {
      // Rotate the order each round so no contender always runs first or last.
      const order = contenders.map((_, index) => contenders[(index + round) % contenders.length] as Contender);
      for (const contender of order) {
        await measureContender(contender, origin.port);
        process.stderr.write(`bench: round ${round + 1}/${rounds} ${contender.name} done\n`);
      }
    }
    // Edge latency: the agent reaches the edge through a link with edgeRttMs of round trip.
    const relay = await startDelayRelay(Number(new URL(edge.url).port), edgeRttMs);
    const slowAgent = await startAgent(`http://127.0.0.1:${relay.port}`, edge.token, ["--log-level", "warn"]);
    for (let index = 0; index < SIZES.arrivalSamples; index++) {
      const elapsedMs = await firstByteAtOriginMs({ proxyPort: slowAgent.port, originPort: origin.port }, origin);
      record("edgesocks", `cold open to first byte at origin, ${edgeRttMs} ms edge RTT (ms)`, elapsedMs);
      record("edgesocks", `the same in edge round trips`, elapsedMs / edgeRttMs);
    }
    await slowAgent.stop();
    await relay.close();
  } catch (error) {
    process.stderr.write(`bench: the agent's last log lines:\n${agent.log().split("\n").slice(-8).join("\n")}\n`);
    throw error;
  } finally {
    await agent.stop();
    await edge.stop();
    for (const peer of peers) await peer.stop();
    await origin.close();
  }
  report();
}

function report(): void {
  const metrics = [...new Set([...samples.keys()].map((key) => key.split("|")[1] as string))];
  const value = (contender: string, metric: string) => median(samples.get(`${contender}|${metric}`) ?? []);
  const format = (number: number) => (Number.isNaN(number) ? "" : number >= 100 ? number.toFixed(0) : number >= 10 ? number.toFixed(1) : number.toFixed(2));
  const ratio = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) || b === 0 ? "" : (a / b).toFixed(2));
  const lines = [
    "| measure | direct | edgesocks | microsocks | dante | edgesocks ÷ microsocks | edgesocks ÷ dante | edgesocks ÷ direct |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const metric of metrics) {
    if (metric.startsWith("CPU") || metric.startsWith("KiB")) continue;
    const [direct, edge, micro, dante] = ["direct", "edgesocks", "microsocks", "dante"].map((name) => value(name, metric)) as [number, number, number, number];
    lines.push(`| ${metric} | ${format(direct)} | ${format(edge)} | ${format(micro)} | ${format(dante)} | ${ratio(edge, micro)} | ${ratio(edge, dante)} | ${ratio(edge, direct)} |`);
  }
  for (const kind of ["CPU s/GB", "KiB per idle conn"]) {
    const part = (name: string) => value(...(findMetric(name, kind) as [string, string]));
    const findMetric = (name: string, prefix: string): [string, string] => [name, metrics.find((metric) => metric.startsWith(prefix) && metric.includes(`(${name === "edgesocks" ? "agent" : name})`)) ?? ""];
    const workerd = value("edgesocks", `${kind} (workerd)`);
    const [agentValue, micro, dante] = [part("edgesocks"), part("microsocks"), part("dante")];
    lines.push(`| ${kind}: agent (workerd beside it) | | ${format(agentValue)} (${format(workerd)}) | ${format(micro)} | ${format(dante)} | ${ratio(agentValue, micro)} | ${ratio(agentValue, dante)} | |`);
  }
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}`;
  const command = `npm run bench --${quick ? " --quick" : ` --rounds ${rounds}`} --edge-rtt-ms ${edgeRttMs}`;
  const section = [
    `### ${new Date().toISOString().slice(0, 10)}: ${machine}`,
    "",
    `Command: \`${command}\`. Medians of ${rounds} alternating round(s); loopback origin; ${SIZES.singleStreamBytes / MIB} MiB single streams;`,
    `first byte over ${SIZES.firstByteSamples} fresh connections; ${SIZES.idleConnections} idle connections for memory.`,
    "",
    ...lines,
  ].join("\n");
  process.stdout.write(`${section}\n`);
  if (values.write) writeSection(values.write, section);
}

const START = "<!-- side-by-side:start -->";
const END = "<!-- side-by-side:end -->";

/** Replaces the side-by-side section of the benchmarks page (between its markers) with `section`. */
function writeSection(path: string, section: string): void {
  const page = readFileSync(path, "utf8");
  const block = `${START}\n${section}\n${END}`;
  const start = page.indexOf(START);
  const end = page.indexOf(END);
  writeFileSync(path, start >= 0 && end > start ? `${page.slice(0, start)}${block}${page.slice(end + END.length)}` : `${page.trimEnd()}\n\n${block}\n`);
}

void main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
