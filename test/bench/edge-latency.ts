// What a new connection costs in round trips when the edge is far away: the agent reaches the
// Worker through a delay relay with a given RTT (the TCP handshake charged too), and a client
// times its first payload to the origin, for each agent setup (warm pool or not, 0-RTT or not)
// and each kind of client (waiting for the SOCKS5 reply, or sending with the CONNECT).

import { startAgent, type RunningAgent } from "../e2e/processes.ts";
import { startDelayRelay } from "./delay-relay.ts";
import type { Origin } from "./origin.ts";
import { payloadArrival, type ClientKind } from "./workloads.ts";

/** An agent configuration measured: its label in the table and its extra flags. */
export type AgentSetup = { label: string; agentArgs: string[] };

/** The setups measured, in table order: the pool and 0-RTT, each alone and together. */
export const AGENT_SETUPS: readonly AgentSetup[] = [
  { label: "cold (`--pool-size 0`)", agentArgs: ["--pool-size", "0"] },
  { label: "warm (`--pool-size 4`)", agentArgs: ["--pool-size", "4"] },
  { label: "warm + `--zero-rtt`", agentArgs: ["--pool-size", "4", "--zero-rtt"] },
  { label: "cold + `--zero-rtt`", agentArgs: ["--pool-size", "0", "--zero-rtt"] },
];

const CLIENT_KINDS: readonly ClientKind[] = ["normal", "optimistic"];
const CLIENT_LABELS: Record<ClientKind, string> = {
  normal: "normal (payload after the SOCKS5 reply)",
  optimistic: "optimistic (payload with the CONNECT)",
};

/** Status with which the agent refuses a command line, e.g. a flag it does not know yet. */
const AGENT_EXIT_USAGE = 2;

/**
 * Time a fresh agent gets before its first connection: its start-up probe of the edge runs
 * right after the ready line, and a warm agent fills its pool (a TCP and an upgrade round trip).
 */
const settleMs = (rttMs: number) => Math.max(1_500, 20 * rttMs);
/** Time between connections: the previous one's teardown and a warm pool's refill (~2 RTTs) finish first. */
const gapMs = (rttMs: number) => Math.max(150, 4 * rttMs);

export type EdgeLatencyRow = {
  setup: AgentSetup;
  client: ClientKind;
  payloadMs: number[];
  fromConnectMs: number[];
  /** Why the row has no figures (the agent refused the setup's flags, or a connection failed). */
  note?: string;
};

export type EdgeLatencyOptions = {
  /** The Worker's URL as the agent would use it without the relay. */
  edgeUrl: string;
  token: string;
  origin: Origin;
  rttMs: number;
  samplesPerRow: number;
  progress: (line: string) => void;
};

/** Measures every setup × client kind; a setup the agent cannot run becomes a row with a note, not an error. */
export async function measureEdgeLatency(options: EdgeLatencyOptions): Promise<EdgeLatencyRow[]> {
  const edge = new URL(options.edgeUrl);
  const relay = await startDelayRelay(Number(edge.port), options.rttMs, { chargeTcpHandshake: true });
  const rows: EdgeLatencyRow[] = [];
  try {
    for (const setup of AGENT_SETUPS) {
      const setupRows = CLIENT_KINDS.map((client): EdgeLatencyRow => ({ setup, client, payloadMs: [], fromConnectMs: [] }));
      rows.push(...setupRows);
      const note = await measureSetup(setup, setupRows, `${edge.protocol}//127.0.0.1:${relay.port}`, options);
      if (note !== undefined) for (const row of setupRows) row.note = note;
      options.progress(`edge latency: ${setup.label.replaceAll("`", "")} ${note ?? "done"}`);
    }
  } finally {
    await relay.close();
  }
  return rows;
}

/** Fills `rows` (one per client kind) for one agent setup; returns a note instead of throwing. */
async function measureSetup(setup: AgentSetup, rows: EdgeLatencyRow[], relayUrl: string, options: EdgeLatencyOptions): Promise<string | undefined> {
  let agent: RunningAgent;
  try {
    agent = await startAgent(relayUrl, options.token, ["--log-level", "warn", ...setup.agentArgs]);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const refused = new RegExp(`^agent exited ${AGENT_EXIT_USAGE}: (?:edgesocks: )?(.*)`).exec(message);
    // The first sentence says which flag; node:util's advice after it does not belong in a table.
    const reason = (refused?.[1] ?? "").split(". ")[0]?.trim();
    return refused ? `skipped: this agent refuses ${setup.agentArgs.join(" ")} (${reason})` : `failed to start: ${message.split("\n")[0]}`;
  }
  try {
    await sleep(settleMs(options.rttMs));
    for (let sample = 0; sample < options.samplesPerRow; sample++) {
      // Alternate which kind goes first, so neither always follows a longer connection.
      const order = sample % 2 === 0 ? rows : [...rows].reverse();
      for (const row of order) {
        const timing = await payloadArrival({ proxyPort: agent.port, originPort: options.origin.port }, options.origin, row.client);
        row.payloadMs.push(timing.payloadMs);
        row.fromConnectMs.push(timing.fromConnectMs);
        await sleep(gapMs(options.rttMs));
      }
    }
    return undefined;
  } catch (error) {
    process.stderr.write(`bench: edge latency, ${setup.label}: the agent's last log lines:\n${agent.log().split("\n").slice(-8).join("\n")}\n`);
    return `failed: ${error instanceof Error ? error.message : String(error)}`;
  } finally {
    await agent.stop();
  }
}

/** The Markdown table: one row per setup and client kind, p50 in ms and in edge round trips. */
export function edgeLatencyTable(rows: readonly EdgeLatencyRow[], rttMs: number, median: (list: number[]) => number): string[] {
  const ms = (value: number) => (Number.isNaN(value) ? "" : value >= 100 ? value.toFixed(0) : value.toFixed(1));
  const rtts = (value: number) => (Number.isNaN(value) ? "" : (value / rttMs).toFixed(2));
  const lines = [
    `| agent setup | client | payload leaves client → at origin, p50 ms | in ${rttMs} ms edge RTTs | TCP connect to agent → payload at origin, p50 ms | in edge RTTs |`,
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of rows) {
    const payload = median(row.payloadMs);
    const fromConnect = median(row.fromConnectMs);
    const figures = row.note !== undefined ? `${row.note.replaceAll("|", "\\|")} | | |` : `${ms(payload)} | ${rtts(payload)} | ${ms(fromConnect)} | ${rtts(fromConnect)}`;
    lines.push(`| ${row.setup.label} | ${CLIENT_LABELS[row.client]} | ${figures} |`);
  }
  return lines;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
