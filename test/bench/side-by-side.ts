// `npm run bench`: edgesocks (agent + the Worker under wrangler dev) side by side with Dante,
// microsocks and a direct connection, in alternating rounds on loopback, as ratios to the peers;
// then what a new connection costs when the edge is --edge-rtt-ms away, per agent setup.
//
//   npm run bench -- [--rounds N] [--quick] [--edge-rtt-ms MS] [--via-wrangler-proxy]
//                    [--edge-latency-only] [--write docs/benchmarks.md]
//
// By default the agent talks to the Worker's own workerd, as in production; --via-wrangler-proxy
// sends it through wrangler dev's proxy instead (the address wrangler prints). --edge-rtt-ms 0
// skips the edge-latency table; --edge-latency-only measures only that table.

import { readFileSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { startAgent, startEdge, type RunningAgent } from "../e2e/processes.ts";
import { edgeLatencyTable, measureEdgeLatency, type EdgeLatencyRow } from "./edge-latency.ts";
import { assertLocalEdgeAlive, localEdge, type LocalEdge } from "./local-edge.ts";
import { ensurePeerPackages, startDante, startMicrosocks, type Peer } from "./peers.ts";
import { cpuSeconds, processTree, totalRssBytes } from "./proc-stats.ts";
import { startOrigin } from "./origin.ts";
import { economyTable, measureRequestEconomy, type EconomyRow } from "./request-economy.ts";
import { download, firstByteMs, openIdle, upload, type Route } from "./workloads.ts";

const MIB = 1024 * 1024;
const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    quick: { type: "boolean", default: false },
    "edge-rtt-ms": { type: "string", default: "40" },
    "via-wrangler-proxy": { type: "boolean", default: false },
    "edge-latency-only": { type: "boolean", default: false },
    write: { type: "string" },
  },
});
const quick = values.quick ?? false;
const rounds = quick ? 1 : Number(values.rounds);
const edgeRttMs = Number(values["edge-rtt-ms"]);
const viaWranglerProxy = values["via-wrangler-proxy"] ?? false;
const edgeLatencyOnly = values["edge-latency-only"] ?? false;
if (!Number.isInteger(rounds) || rounds < 1) usage("--rounds must be a whole number of 1 or more");
if (!Number.isFinite(edgeRttMs) || edgeRttMs < 0) usage("--edge-rtt-ms must be a number of 0 or more");
if (edgeLatencyOnly && edgeRttMs === 0) usage("--edge-latency-only needs an --edge-rtt-ms above 0");
if (edgeLatencyOnly && values.write !== undefined) usage("--edge-latency-only measures one table; --write replaces the whole section");
const SIZES = {
  singleStreamBytes: (quick ? 32 : 128) * MIB,
  firstByteSamples: quick ? 30 : 100,
  concurrent: [
    { streams: 100, bytesEach: 1 * MIB },
    { streams: 500, bytesEach: (quick ? 128 : 256) * 1024 },
  ],
  idleConnections: quick ? 100 : 300,
  /** Connections per edge-latency row (setup × client kind). */
  arrivalSamples: quick ? 5 : 15,
  /** Bursts of 10 short exchanges in the request-economy run. */
  economyBursts: quick ? 30 : 100,
};

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

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
  // Before the many-stream runs, whose garbage workerd collects only once new work allocates.
  if (contender.proxyPort !== undefined) await measureIdleMemory(contender, route);
  for (const { streams, bytesEach } of SIZES.concurrent) {
    const started = performance.now();
    await step(name, `${streams} streams`, () => Promise.all(Array.from({ length: streams }, () => download(route, bytesEach))));
    record(name, `${streams} streams MB/s`, (streams * bytesEach) / 1e6 / ((performance.now() - started) / 1000));
  }
}

/**
 * Resident memory each of the contender's processes gains per idle connection: the growth from
 * N held connections to 2N. The first N are not counted: they warm the processes up and make
 * them collect earlier garbage (workerd collects only once new work allocates: measured after
 * the many-stream runs, a plain before/after delta came out negative, by ~90 MB), and being
 * held they cannot hand the second N memory freed by the first.
 */
async function measureIdleMemory(contender: Contender, route: Route): Promise<void> {
  const count = SIZES.idleConnections;
  const held = await step(contender.name, "idle connections", () => openIdle(route, count));
  try {
    await steadyRss(Object.values(contender.costPids()).flat());
    const before = Object.fromEntries(Object.entries(contender.costPids()).map(([part, pids]) => [part, totalRssBytes(pids)]));
    held.push(...(await step(contender.name, "idle connections", () => openIdle(route, count))));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const [part, pids] of Object.entries(contender.costPids())) {
      record(contender.name, `KiB per idle conn (${part})`, (totalRssBytes(pids) - (before[part] ?? 0)) / 1024 / count);
    }
  } finally {
    for (const socket of held) socket.destroy();
  }
  await new Promise((resolve) => setTimeout(resolve, 1000)); // the teardown finishes before the next contender
}

/** Waits until the processes' RSS moves less than 1% in half a second (at most 10 s). */
async function steadyRss(pids: number[]): Promise<void> {
  const STEP_MS = 500;
  const deadline = performance.now() + 10_000;
  let previous = totalRssBytes(pids);
  while (performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, STEP_MS));
    const current = totalRssBytes(pids);
    if (Math.abs(current - previous) < previous / 100) return;
    previous = current;
  }
}

const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);

async function main(): Promise<void> {
  if (!edgeLatencyOnly) ensurePeerPackages();
  const origin = await startOrigin();
  const edge = await startEdge();
  const peers: Peer[] = [];
  let agent: RunningAgent | undefined;
  let edgeLatency: EdgeLatencyRow[] = [];
  const economy: EconomyRow[] = [];
  let local: LocalEdge | undefined;
  try {
    local = await localEdge(edge, viaWranglerProxy ? "wrangler-proxy" : "worker");
    progress(`${local.description}: ${local.agentEdgeUrl}`);
    if (!edgeLatencyOnly) {
      agent = await startAgent(local.agentEdgeUrl, edge.token, ["--log-level", "warn"]);
      peers.push(await startMicrosocks(), await startDante());
      await measureRounds(agent, local, peers, origin.port);
      const economySetups = [
        ["defaults", []],
        ["--max-streams-per-tunnel 16 (a paid plan's CPU)", ["--max-streams-per-tunnel", "16"]],
        ["--max-streams-per-tunnel 1 (one tunnel per connection)", ["--max-streams-per-tunnel", "1"]],
      ] as const;
      for (const [setup, args] of economySetups) {
        economy.push(await measureRequestEconomy(local.agentEdgeUrl, edge.token, setup, [...args], SIZES.economyBursts));
        progress(`request economy: ${setup} done`);
      }
      assertLocalEdgeAlive(local);
    }
    if (edgeRttMs > 0) {
      edgeLatency = await measureEdgeLatency({ edgeUrl: local.agentEdgeUrl, token: edge.token, origin, rttMs: edgeRttMs, samplesPerRow: SIZES.arrivalSamples, progress });
      assertLocalEdgeAlive(local);
    }
  } catch (error) {
    if (agent) process.stderr.write(`bench: the agent's last log lines:\n${agent.log().split("\n").slice(-8).join("\n")}\n`);
    throw error;
  } finally {
    await agent?.stop();
    await edge.stop();
    for (const peer of peers) await peer.stop();
    await origin.close();
  }
  report(local, edgeLatency, economy);
}

/** The side-by-side rounds: every contender measured once per round, in a rotating order. */
async function measureRounds(agent: RunningAgent, local: LocalEdge, peers: Peer[], originPort: number): Promise<void> {
  // The Worker's workerd is charged always; wrangler's proxy only when the agent goes through it
  // (it is idle otherwise).
  const edgePids = (): Record<string, number[]> => (local.path === "wrangler-proxy" ? { workerd: [local.workerPid], "dev proxy": [local.devProxyPid] } : { workerd: [local.workerPid] });
  const contenders: Contender[] = [
    { name: "direct", proxyPort: undefined, costPids: () => ({}) },
    { name: "edgesocks", proxyPort: agent.port, costPids: () => ({ agent: processTree(agent.pid), ...edgePids() }) },
    ...peers.map((peer) => ({ name: peer.name, proxyPort: peer.port, costPids: () => ({ [peer.name]: peer.pids() }) })),
  ];
  for (let round = 0; round < rounds; round++) {
    // Rotate the order each round so no contender always runs first or last.
    const order = contenders.map((_, index) => contenders[(index + round) % contenders.length] as Contender);
    for (const contender of order) {
      try {
        await measureContender(contender, originPort);
      } finally {
        assertLocalEdgeAlive(local); // a restarted workerd explains the failure better than the failure does
      }
      progress(`round ${round + 1}/${rounds} ${contender.name} done`);
    }
  }
}

function report(local: LocalEdge | undefined, edgeLatency: EdgeLatencyRow[], economy: EconomyRow[]): void {
  const viaProxy = local?.path === "wrangler-proxy";
  const edgeColumn = viaProxy ? "edgesocks via wrangler's proxy" : "edgesocks (agent → Worker's workerd)";
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}`;
  const parts = [`### ${new Date().toISOString().slice(0, 10)}: ${machine}`, "", `Command: \`${commandLine()}\`.`];
  if (!edgeLatencyOnly) {
    parts.push(
      `Medians of ${rounds} alternating round(s); loopback origin; ${SIZES.singleStreamBytes / MIB} MiB single streams;`,
      `first byte over ${SIZES.firstByteSamples} fresh connections; memory: RSS growth from ${SIZES.idleConnections} to ${2 * SIZES.idleConnections} idle connections held.`,
      `Path measured: ${local?.description ?? "?"}. The agent runs \`--bypass none --log-level warn\`, its defaults otherwise.`,
      viaProxy ? "CPU and memory of the Worker's workerd and of the proxy's workerd are shown apart." : "CPU and memory on the edge side are the Worker's workerd's.",
      "",
      ...sideBySideTable(edgeColumn),
    );
  }
  if (edgeLatency.length > 0) {
    parts.push(
      "",
      `Edge latency: the agent reaches the Worker (${viaProxy ? "through wrangler's proxy" : "its own workerd"}) through a relay that delays each direction by ${edgeRttMs / 2} ms`,
      `and holds a new connection's first bytes one RTT (its TCP handshake); p50 over ${SIZES.arrivalSamples} fresh connections per row, one after another,`,
      "the warm pool given time to fill before the first and to refill between them. A normal client's payload leaves only once the",
      "agent has answered the CONNECT, so for it the second pair of columns (from the TCP connect to the agent) is the one to compare.",
      "",
      ...edgeLatencyTable(edgeLatency, edgeRttMs, median),
    );
  }
  if (economy.length > 0) {
    parts.push(
      "",
      `Request economy: ${SIZES.economyBursts} bursts of 10 concurrent short HTTP exchanges (2 KiB answers, every byte checked) with pauses of 50 ms to 3 s`,
      "between bursts, through an agent with the warm pool; tunnels counted where they reach the Worker (each upgrade is one Worker request).",
      "",
      ...economyTable(economy),
    );
  }
  const section = parts.join("\n");
  process.stdout.write(`${section}\n`);
  if (values.write) writeSection(values.write, section);
}

/** The side-by-side table: one row per measure, a column per contender, and edgesocks' ratios to the others. */
function sideBySideTable(edgeColumn: string): string[] {
  const metrics = [...new Set([...samples.keys()].map((key) => key.split("|")[1] as string))];
  const value = (contender: string, metric: string) => median(samples.get(`${contender}|${metric}`) ?? []);
  const format = (number: number) => (Number.isNaN(number) ? "" : number >= 100 ? number.toFixed(0) : number >= 10 ? number.toFixed(1) : number.toFixed(2));
  const ratio = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) || b === 0 ? "" : (a / b).toFixed(2));
  const lines = [
    `| measure | direct | ${edgeColumn} | microsocks | dante | edgesocks ÷ microsocks | edgesocks ÷ dante | edgesocks ÷ direct |`,
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const metric of metrics) {
    if (metric.startsWith("CPU") || metric.startsWith("KiB")) continue;
    const [direct, edge, micro, dante] = ["direct", "edgesocks", "microsocks", "dante"].map((name) => value(name, metric)) as [number, number, number, number];
    lines.push(`| ${metric} | ${format(direct)} | ${format(edge)} | ${format(micro)} | ${format(dante)} | ${ratio(edge, micro)} | ${ratio(edge, dante)} | ${ratio(edge, direct)} |`);
  }
  for (const kind of ["CPU s/GB", "KiB per idle conn"]) {
    const [agentValue, workerd, devProxy, micro, dante] = [["edgesocks", "agent"], ["edgesocks", "workerd"], ["edgesocks", "dev proxy"], ["microsocks", "microsocks"], ["dante", "dante"]].map(
      ([name, part]) => value(name as string, `${kind} (${part})`),
    ) as [number, number, number, number, number];
    lines.push(`| ${kind}: agent (Worker's workerd beside it) | | ${format(agentValue)} (${format(workerd)}) | ${format(micro)} | ${format(dante)} | ${ratio(agentValue, micro)} | ${ratio(agentValue, dante)} | |`);
    if (!Number.isNaN(devProxy)) lines.push(`| ${kind}: wrangler's dev proxy (a workerd production does not have) | | ${format(devProxy)} | | | | | |`);
  }
  return lines;
}

/** The command that produced the figures, as typed (an absent --rounds and --edge-rtt-ms are their defaults, stated in the text). */
function commandLine(): string {
  const args = process.argv.slice(2).map((arg) => (/^[\w./=:@-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`));
  return args.length === 0 ? "npm run bench" : `npm run bench -- ${args.join(" ")}`;
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
