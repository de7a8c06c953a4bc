// `npm run bench:page`: what a page of many small resources costs through edgesocks next to
// Dante, when every resource is a fresh connection (issue 10). Headless Chromium loads a page of
// 60 images from 6 loopback origins (page-site.ts), every response `Connection: close`, so each
// resource is a new proxied connection; the time is navigation start → load event.
//
//   A (edgesocks): Chromium → gate → agent (SOCKS5) → link → the Worker's own workerd → origins
//   B (Dante):     Chromium → gate → link → Dante → origins
//
// The link (link-relay.ts) is the path to the edge: an RTT and a rate, each way. The gate
// (socks-gate.ts) refuses Chromium's background requests by name before any proxy sees one;
// the agents also run the e2e tests' rules (edge for 127.0.0.1, block everything else).
// Contenders take turns in rotating order; each edgesocks load is charged the CPU its agent and
// the Worker's workerd used from navigation until the origins are quiet, per connection made.
//
//   npm run bench:page -- [--rounds N] [--rtt-ms MS] [--rate-mbps MB/s] [--variants LIST]
//                         [--resources N] [--origins N] [--resource-bytes N] [--json PATH]
//
// --rate-mbps is megabytes (10^6) per second, as in bench:link. --variants: a comma-separated
// list of default, zero-rtt, pool-16 (agent defaults, --zero-rtt, --pool-size 16).

import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { parseArgs } from "node:util";
import type { Browser } from "playwright-core";
import { launchChromium } from "../e2e/chromium-launch.ts";
import { startLinkRelay, type LinkRelay, type LinkShape } from "./link-relay.ts";
import { startSite, type Site } from "./page-site.ts";
import { startPageStack, type PageStack } from "./page-stack.ts";
import { ensurePeerPackages } from "./peers.ts";
import { endGroupsOnExit } from "./process-groups.ts";
import { cpuSeconds, listProcesses, processTree } from "./proc-stats.ts";
import { startSocksGate, type SocksGate } from "./socks-gate.ts";

const MB = 1e6;
/** Loads before the measured rounds, per contender: JIT, the agents' first pool refills. */
const WARMUP_LOADS = 2;
const LOAD_TIMEOUT_MS = 60_000;
/** After the load event: the last connections' closes, then a pause, so the stream teardowns land in the CPU window. */
const QUIET_TIMEOUT_MS = 10_000;
const SETTLE_MS = 250;
const VARIANTS: Record<string, { label: string; args: string[] }> = {
  default: { label: "edgesocks", args: [] },
  "zero-rtt": { label: "edgesocks --zero-rtt", args: ["--zero-rtt"] },
  "pool-16": { label: "edgesocks --pool-size 16", args: ["--pool-size", "16"] },
};
/** The e2e tests' rules (chromium.test.ts): only loopback goes through the edge. */
const AGENT_RULES = ["--rule", "edge:host=127.0.0.1", "--rule", "block:port=1-65535"];

const progress = (line: string) => process.stderr.write(`bench:page: ${line}\n`);

function usage(message: string): never {
  process.stderr.write(`bench:page: ${message}\n`);
  process.exit(2);
}

type Options = { rounds: number; rttMs: number; rateMBps: number; variants: string[]; resources: number; origins: number; resourceBytes: number; json: string | undefined };

/** The command line, checked: a mistake ends the program with one line and exit status 2. */
function parseOptions(): Options {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        rounds: { type: "string", default: "10" },
        "rtt-ms": { type: "string", default: "40" },
        "rate-mbps": { type: "string", default: "50" },
        variants: { type: "string", default: "default,zero-rtt,pool-16" },
        resources: { type: "string", default: "60" },
        origins: { type: "string", default: "6" },
        "resource-bytes": { type: "string", default: "16384" },
        json: { type: "string" },
      },
    }));
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const number = (option: string, text: string, atLeast: number, whole: boolean) => {
    const value = Number(text);
    if (!Number.isFinite(value) || value < atLeast || (whole && !Number.isInteger(value))) usage(`--${option} takes a ${whole ? "whole " : ""}number of ${atLeast} or more, not ${text}`);
    return value;
  };
  const variants = values.variants.split(",").filter((name) => name !== "");
  const unknown = variants.filter((name) => !(name in VARIANTS));
  if (variants.length === 0 || unknown.length > 0) usage(`--variants takes a list of ${Object.keys(VARIANTS).join(", ")}, not ${values.variants}`);
  return {
    rounds: number("rounds", values.rounds, 1, true),
    rttMs: number("rtt-ms", values["rtt-ms"], 0, false),
    rateMBps: number("rate-mbps", values["rate-mbps"], 0.1, false),
    variants,
    resources: number("resources", values.resources, 1, true),
    origins: number("origins", values.origins, 1, true),
    resourceBytes: number("resource-bytes", values["resource-bytes"], 64, true),
    json: values.json,
  };
}

type Contender = {
  name: string;
  gate: SocksGate;
  browser: Browser;
  /** The processes whose CPU an edgesocks load is charged: the agent's tree and the Worker's workerd. */
  charged: { agentPid: number; workerPid: number } | undefined;
  /** For an agent: the port of the link relay only its tunnels use, whose connections are counted. */
  tunnelPort: number | undefined;
  /** The proxy's recent output, for a failure's message. */
  output(): string;
};

/** One page load: its time, the connections the origins accepted, and for edgesocks the CPU seconds used. */
type Load = {
  loadMs: number;
  connections: number;
  proxied: number;
  /** Per image (Resource Timing): waiting for a socket, the connection with its SOCKS handshake, request → first byte. */
  queuedMs: number[];
  connectMs: number[];
  firstByteMs: number[];
  agentCpuSeconds?: number;
  workerdCpuSeconds?: number;
  /** Tunnels (WebSocket connections, each a Worker request) the agent opened during the load. */
  tunnelsOpened?: number;
};

/** How often /proc/net/tcp is read for the agent's tunnels: a tunnel's handshake alone takes two RTTs over the link. */
const TUNNEL_SAMPLE_MS = 20;

/** Local ports of the loopback TCP connections, being opened or open, to 127.0.0.1:`port` (from /proc/net/tcp). */
function connectionsTo(port: number): Set<string> {
  const wanted = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const ESTABLISHED = "01";
  const SYN_SENT = "02";
  const found = new Set<string>();
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[2] === wanted && (fields[3] === ESTABLISHED || fields[3] === SYN_SENT)) found.add(fields[1] ?? "");
  }
  return found;
}

/** Counts connections to `port` that appear until the function returned is called, which returns the count. */
function countNewConnections(port: number): () => number {
  const before = connectionsTo(port);
  const seen = new Set<string>();
  const sample = () => {
    for (const local of connectionsTo(port)) if (!before.has(local)) seen.add(local);
  };
  const timer = setInterval(sample, TUNNEL_SAMPLE_MS);
  return () => {
    clearInterval(timer);
    sample();
    return seen.size;
  };
}

/** What the page reports after its load event: navigation timing and whether every image decoded. */
const PAGE_PROBE = `(() => {
  const [navigation] = performance.getEntriesByType("navigation");
  const images = [...document.images];
  const resources = performance.getEntriesByType("resource");
  return {
    loadMs: navigation.loadEventStart - navigation.startTime,
    images: images.length,
    decoded: images.filter((image) => image.complete && image.naturalWidth === 1).length,
    connectMs: resources.map((entry) => entry.connectEnd - entry.connectStart),
    firstByteMs: resources.map((entry) => entry.responseStart - entry.requestStart),
    queuedMs: resources.map((entry) => entry.connectStart - entry.startTime),
  };
})()`;

let loadCount = 0;

async function loadPage(contender: Contender, site: Site, options: Options): Promise<Load> {
  const loadId = String(++loadCount);
  const connectionsBefore = site.connections();
  const requestsBefore = site.requests();
  const proxiedBefore = contender.gate.allowed();
  const cpuOf = () => (contender.charged ? { agent: cpuSeconds(processTree(contender.charged.agentPid)), workerd: cpuSeconds([contender.charged.workerPid]) } : undefined);
  const cpuBefore = cpuOf();
  const tunnelsOpened = contender.tunnelPort === undefined ? undefined : countNewConnections(contender.tunnelPort);
  const context = await contender.browser.newContext();
  let probe: { loadMs: number; images: number; decoded: number; queuedMs: number[]; connectMs: number[]; firstByteMs: number[] };
  try {
    const page = await context.newPage();
    await page.goto(site.pageUrl(loadId), { waitUntil: "load", timeout: LOAD_TIMEOUT_MS });
    probe = (await page.evaluate(PAGE_PROBE)) as typeof probe;
  } finally {
    await context.close();
  }
  if (probe.images !== options.resources || probe.decoded !== options.resources) throw new Error(`${contender.name}: ${probe.decoded} of ${probe.images} images decoded, ${options.resources} expected`);
  const requests = site.requests() - requestsBefore;
  if (requests !== options.resources + 1) throw new Error(`${contender.name}: the origins answered ${requests} requests for a page of ${options.resources} resources and itself`);
  await site.quiet(QUIET_TIMEOUT_MS);
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  const cpuAfter = cpuOf();
  const tunnels = tunnelsOpened?.();
  const load: Load = {
    loadMs: probe.loadMs,
    connections: site.connections() - connectionsBefore,
    proxied: contender.gate.allowed() - proxiedBefore,
    queuedMs: probe.queuedMs,
    connectMs: probe.connectMs,
    firstByteMs: probe.firstByteMs,
  };
  // Every connection the origins saw came through this contender's proxy, and no other.
  if (load.proxied !== load.connections) throw new Error(`${contender.name}: ${load.proxied} connections proxied, ${load.connections} at the origins`);
  if (tunnels !== undefined) load.tunnelsOpened = tunnels;
  if (cpuBefore && cpuAfter) {
    load.agentCpuSeconds = cpuAfter.agent - cpuBefore.agent;
    load.workerdCpuSeconds = cpuAfter.workerd - cpuBefore.workerd;
  }
  return load;
}

function percentile(list: number[], fraction: number): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? Number.NaN;
}

const sum = (list: number[]) => list.reduce((total, value) => total + value, 0);

function table(results: Map<string, Load[]>): string {
  const dante = (results.get("dante") ?? []).map((load) => load.loadMs);
  const lines = [
    "| contender | page load p50 ms | p90 ms | ÷ Dante p50 | ÷ Dante p90 | per image p50 ms: queued / connect / first byte | connections per load | tunnels opened per load | agent CPU µs per connection | workerd CPU µs per connection |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const [name, loads] of results) {
    const times = loads.map((load) => load.loadMs);
    const connections = sum(loads.map((load) => load.connections));
    const perConnection = (pick: (load: Load) => number | undefined) => {
      const seconds = loads.map(pick);
      return seconds.some((value) => value === undefined) ? "-" : ((sum(seconds as number[]) / connections) * 1e6).toFixed(0);
    };
    lines.push(
      `| ${name} | ${percentile(times, 0.5).toFixed(0)} | ${percentile(times, 0.9).toFixed(0)} | ${(percentile(times, 0.5) / percentile(dante, 0.5)).toFixed(2)} | ${(percentile(times, 0.9) / percentile(dante, 0.9)).toFixed(2)} | ` +
        `${[(load: Load) => load.queuedMs, (load: Load) => load.connectMs, (load: Load) => load.firstByteMs].map((pick) => percentile(loads.flatMap(pick), 0.5).toFixed(0)).join(" / ")} | ` +
        `${(connections / loads.length).toFixed(1)} | ${loads.some((load) => load.tunnelsOpened === undefined) ? "-" : (sum(loads.map((load) => load.tunnelsOpened ?? 0)) / loads.length).toFixed(1)} | ${perConnection((load) => load.agentCpuSeconds)} | ${perConnection((load) => load.workerdCpuSeconds)} |`,
    );
  }
  return lines.join("\n");
}

function report(options: Options, results: Map<string, Load[]>, stack: PageStack, gates: SocksGate[], loadAtStart: number): string {
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}`;
  const refused = gates.flatMap((gate) => gate.refused);
  const names = [...new Set(refused.map((reason) => /^(\S+?):\d+,/.exec(reason)?.[1] ?? reason))];
  return [
    `### ${new Date().toISOString().slice(0, 10)}: page loads, ${machine}`,
    "",
    `Command: \`npm run bench:page -- ${process.argv.slice(2).join(" ")}\`.`.replace(" -- `", "`"),
    `Headless Chromium (Debian's /usr/bin/chromium, a fresh context per load) loads a page of ${options.resources} images of ${options.resourceBytes} bytes from ${options.origins} loopback origins, every response \`Connection: close\`: each resource a new proxied connection.`,
    `${options.rounds} measured load(s) per contender after ${WARMUP_LOADS} unrecorded, contenders in rotating order; time: navigation start → load event (Navigation Timing).`,
    `Link (link-relay.ts): ${options.rttMs} ms RTT, ${options.rateMBps} MB/s each way per TCP connection, each connection charged a TCP handshake; between the agent and the Worker's own workerd (${stack.local.agentEdgeUrl}), and between Chromium and Dante.`,
    `Tunnels: the agent's connections to its link relay (each a WebSocket upgrade, a Worker request) first seen during the load, /proc/net/tcp read every ${TUNNEL_SAMPLE_MS} ms.`,
    `CPU: utime+stime from /proc of the agent's tree and of the Worker's workerd, from navigation until the origins had no connection open + ${SETTLE_MS} ms, over the connections the origins accepted.`,
    `Load average (1 min) at the start ${loadAtStart.toFixed(2)}, at the end ${(loadavg()[0] ?? 0).toFixed(2)}: the machine's cores are shared, and the loads are CPU-bound in part (compare --rtt-ms 0).`,
    `The gate refused ${refused.length} request(s) for destinations other than loopback (${names.join(", ") || "none"}); none reached a proxy.`,
    "",
    table(results),
  ].join("\n");
}

/** Chromium's pid: playwright launches it as the leader of a group of its own, a child of this process. */
function chromiumPids(): number[] {
  return listProcesses()
    .filter((entry) => entry.parentPid === process.pid && /chromium/.test(entry.command))
    .map((entry) => entry.pid);
}

async function main(): Promise<void> {
  const options = parseOptions();
  const loadAtStart = loadavg()[0] ?? 0;
  ensurePeerPackages();
  const browsers: Browser[] = [];
  const browserGroups = new Set<number>();
  const relays: LinkRelay[] = [];
  const gates: SocksGate[] = [];
  let stack: PageStack | undefined;
  let site: Site | undefined;
  const cleanUp = async () => {
    for (const browser of browsers.splice(0)) await browser.close().catch(() => {});
    await stack?.stop();
    for (const closer of [...gates, ...relays]) await closer.close();
    await site?.close();
  };
  endGroupsOnExit(async (signal) => {
    progress(`${signal}: stopping everything (no report)`);
    await cleanUp();
  });
  // Playwright ends Chromium's group on close and at exit; this is the last resort should it not.
  process.once("exit", () => {
    for (const pid of browserGroups) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // gone with browser.close()
      }
    }
  });
  try {
    site = await startSite(options.origins, options.resources, options.resourceBytes);
    stack = await startPageStack(progress);
    const running = stack;
    const shape: LinkShape = { rttMs: options.rttMs, rateBytesPerSecond: options.rateMBps * MB, chargeTcpHandshake: true };
    const launch = async (name: string, proxyPort: number, charged: Contender["charged"], tunnelPort: number | undefined, output: () => string): Promise<Contender> => {
      const gate = await startSocksGate(proxyPort);
      gates.push(gate);
      const before = new Set(chromiumPids());
      // Chromium bypasses proxies for loopback by default; "<-loopback>" lifts that (chromium.test.ts).
      const browser = await launchChromium([`--proxy-server=socks5://127.0.0.1:${gate.port}`, "--proxy-bypass-list=<-loopback>"]);
      browsers.push(browser);
      for (const pid of chromiumPids()) if (!before.has(pid)) browserGroups.add(pid);
      return { name, gate, browser, charged, tunnelPort, output };
    };
    const contenders: Contender[] = [];
    for (const variant of options.variants) {
      const { label, args } = VARIANTS[variant] ?? { label: variant, args: [] };
      // A link of its own per agent: the same shape, and its tunnels are the relay's only connections.
      const toEdge = await startLinkRelay(Number(new URL(running.local.agentEdgeUrl).port), shape);
      relays.push(toEdge);
      const agent = await running.startAgent(label, `http://127.0.0.1:${toEdge.port}`, ["--log-level", "warn", ...AGENT_RULES, ...args]);
      contenders.push(await launch(label, agent.port, { agentPid: agent.process.pid, workerPid: running.local.workerPid }, toEdge.port, agent.process.output));
    }
    const dante = await running.startDante();
    const toDante = await startLinkRelay(dante.port, shape);
    relays.push(toDante);
    contenders.push(await launch("dante", toDante.port, undefined, undefined, dante.process.output));
    progress(`${contenders.length} contenders; ${WARMUP_LOADS} warm-up load(s) each`);
    const results = new Map<string, Load[]>(contenders.map((contender) => [contender.name, []]));
    const check = () => {
      const dead = running.deadReason();
      if (dead !== undefined) throw new Error(dead);
    };
    const load = async (contender: Contender) => {
      try {
        return await loadPage(contender, site as Site, options);
      } catch (error) {
        check(); // a process gone explains a failed load better than the load does
        const refused = contender.gate.refused.slice(-4).join("; ") || "none";
        progress(`${contender.name} failed; the gate's last refusals: ${refused}; its proxy's last output:\n${contender.output().split("\n").slice(-12).join("\n")}`);
        throw error;
      }
    };
    for (let warm = 0; warm < WARMUP_LOADS; warm++) for (const contender of contenders) await load(contender);
    for (let round = 0; round < options.rounds; round++) {
      // Rotate each round, so no contender always follows the same one.
      for (let turn = 0; turn < contenders.length; turn++) {
        const contender = contenders[(turn + round) % contenders.length] as Contender;
        results.get(contender.name)?.push(await load(contender));
      }
      check();
      progress(`round ${round + 1}/${options.rounds}: ${contenders.map((contender) => `${contender.name} ${results.get(contender.name)?.at(-1)?.loadMs.toFixed(0)} ms`).join(", ")}`);
    }
    if (options.json !== undefined) writeFileSync(options.json, `${JSON.stringify(Object.fromEntries(results), null, 1)}\n`);
    process.stdout.write(`${report(options, results, running, gates, loadAtStart)}\n`);
  } finally {
    await cleanUp();
  }
}

void main().catch((error: unknown) => {
  process.stderr.write(`bench:page: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
