// Inside the local edge: `wrangler dev` runs two workerd processes, one with the Worker and one
// with wrangler's own proxy in front of it (the address wrangler prints). Production has no such
// proxy (through it, a stream loses about a quarter of its throughput and a connect ~5 ms), so
// by default the benchmark points the agent at the Worker's own workerd, and charges each
// process its own CPU and memory.

import { existsSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { findWorkerdPids, type RunningEdge } from "../e2e/processes.ts";

/** Which way the agent reaches the Worker. */
export type EdgePath = "worker" | "wrangler-proxy";

export type LocalEdge = {
  path: EdgePath;
  /** The URL the agent is given: the Worker's own workerd, or wrangler's dev proxy. */
  agentEdgeUrl: string;
  /** The workerd that runs the Worker (the only one production has). */
  workerPid: number;
  /** The workerd that runs wrangler's dev proxy. */
  devProxyPid: number;
  /** One line for the report: the path measured. */
  description: string;
};

/** The local edge's two workerd processes, and the URL the agent should use for `path`. */
export async function localEdge(edge: RunningEdge, path: EdgePath): Promise<LocalEdge> {
  const { workerPid, devProxyPid } = findWorkerdPids(edge);
  const agentEdgeUrl = path === "worker" ? await workerUrl(workerPid) : edge.url;
  const description =
    path === "worker"
      ? "the agent reaches the Worker's own workerd directly, as in production (wrangler dev's proxy bypassed: `--via-wrangler-proxy` measures through it)"
      : "the agent reaches the Worker through wrangler dev's proxy (a second workerd, which production does not have)";
  return { path, agentEdgeUrl, workerPid, devProxyPid, description };
}

/** Throws a clear error if a workerd of `edge` has gone: wrangler dev restarts the Worker's when worker/ changes. */
export function assertLocalEdgeAlive(edge: LocalEdge): void {
  for (const [role, pid] of [["the Worker's workerd", edge.workerPid], ["wrangler's dev proxy", edge.devProxyPid]] as const) {
    if (!existsSync(`/proc/${pid}`)) throw new Error(`${role} (pid ${pid}) has exited; wrangler dev restarts it when a file under worker/ changes, which invalidates this run`);
  }
}

/**
 * The URL of the Worker's own workerd: of the loopback ports that process listens on (entry,
 * inspector, debug), the one whose /healthz is edgesocks'.
 */
export async function workerUrl(workerPid: number): Promise<string> {
  for (const port of listeningLoopbackPorts(workerPid)) {
    const url = `http://127.0.0.1:${port}`;
    try {
      const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      const body = (await response.json()) as { name?: unknown };
      if (response.ok && body.name === "edgesocks") return url;
    } catch {
      // the inspector or debug port: not HTTP, or not the Worker
    }
  }
  throw new Error(`workerd ${workerPid} answers edgesocks' /healthz on none of its loopback ports`);
}

/** TCP ports `pid` listens on at 127.0.0.1, from its socket descriptors and /proc/PID/net/tcp. */
function listeningLoopbackPorts(pid: number): number[] {
  const socketInodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    const match = /^socket:\[(\d+)\]$/.exec(readlinkSafe(`/proc/${pid}/fd/${fd}`));
    if (match?.[1]) socketInodes.add(match[1]);
  }
  const LISTEN = "0A"; // TCP_LISTEN in the st column
  const LOOPBACK_HEX = "0100007F"; // 127.0.0.1 as /proc/net/tcp prints it (host byte order, little-endian)
  const ports: number[] = [];
  for (const line of readFileSync(`/proc/${pid}/net/tcp`, "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    const [address, portHex] = (fields[1] ?? "").split(":");
    if (fields[3] === LISTEN && address === LOOPBACK_HEX && portHex && socketInodes.has(fields[9] ?? "")) ports.push(Number.parseInt(portHex, 16));
  }
  return ports;
}

function readlinkSafe(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return ""; // closed while we looked
  }
}
