// The system under soak: the real Worker under wrangler dev and the real agent pointed at the
// Worker's own workerd (local-edge.ts: production has no dev proxy), each in a process group the
// benchmark owns (process-groups.ts). Both run from a copy of this checkout taken at start:
// wrangler dev restarts the Worker whenever a file under worker/ changes, and an hour-long soak
// must measure one build, not whatever an editor saved meanwhile.

import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, repoRoot } from "../e2e/processes.ts";
import { localEdge } from "./local-edge.ts";
import { spawnGroup, type OwnedProcess } from "./process-groups.ts";

/** wrangler dev builds and boots workerd; measured 6-10 s on this 2-core machine, more when it is shared. */
const EDGE_READY_TIMEOUT_MS = 90_000;
const AGENT_READY_TIMEOUT_MS = 30_000;
const HEALTH_POLL_MS = 250;
/** What the Worker and the agent need from the checkout; node_modules is linked, not copied. */
const SNAPSHOT_ENTRIES = ["wrangler.toml", "package.json", "worker", "local-agent"];

const wranglerBin = join(createRequire(import.meta.url).resolve("wrangler/package.json"), "..", "bin", "wrangler.js");

export type SoakStack = {
  agentPort: number;
  agentPid: number;
  /** The workerd that runs the Worker; not wrangler's dev proxy. */
  workerPid: number;
  /** The URL the agent was given: the Worker's own workerd. */
  agentEdgeUrl: string;
  /** The agent's recent output (it runs with --log-level warn). */
  agentOutput(): string;
  /** Why the agent or the Worker's workerd is no longer running, or undefined while both are. */
  deadReason(): string | undefined;
  /** Ends the agent, then the edge (each with its process group), and removes the copy. Idempotent. */
  stop(): Promise<void>;
};

/** Copies the checkout, starts the edge from the copy, finds the Worker's own workerd and starts the agent in front of it. */
export async function startSoakStack(progress: (line: string) => void): Promise<SoakStack> {
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-soak-"));
  const removeCopy = () => rmSync(dir, { recursive: true, force: true });
  process.once("exit", removeCopy);
  for (const entry of SNAPSHOT_ENTRIES) cpSync(join(repoRoot, entry), join(dir, entry), { recursive: true });
  symlinkSync(join(repoRoot, "node_modules"), join(dir, "node_modules"));

  const token = randomBytes(24).toString("base64url");
  const envFile = join(dir, ".soak.env");
  // As in processes.ts: the token through a private file, never argv; the edge's DoH resolver a
  // loopback port where nothing listens, so no lookup leaves this machine.
  writeFileSync(envFile, `EDGESOCKS_TOKEN=${token}\nEDGESOCKS_DOH_URL=http://127.0.0.1:9/dns-query\n`, { mode: 0o600 });
  const port = await freePort();
  const edge = spawnGroup(
    "wrangler dev",
    process.execPath,
    [wranglerBin, "dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()), "--env-file", envFile, "--show-interactive-dev-session=false", "--log-level", "warn", "--persist-to", join(dir, "state")],
    // No metrics, and no fetch of Request.cf from workers.cloudflare.com at start.
    { cwd: dir, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", EDGESOCKS_TOKEN: "" } },
  );
  let agent: OwnedProcess | undefined;
  const stop = async () => {
    await agent?.stop();
    await edge.stop();
    removeCopy();
  };
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitForHealth(url, edge);
    const local = await localEdge({ url, token, wranglerPid: edge.pid, stop }, "worker");
    progress(`edge up from a copy of the checkout in ${dir}; the agent talks to the Worker's own workerd (pid ${local.workerPid}) at ${local.agentEdgeUrl}`);
    agent = spawnGroup("agent", process.execPath, [join(dir, "local-agent", "cli", "main.ts"), "--edge", local.agentEdgeUrl, "--listen", "127.0.0.1:0", "--bypass", "none", "--log-level", "warn"], {
      cwd: dir,
      env: { ...process.env, EDGESOCKS_TOKEN: token },
    });
    const agentPort = await waitForReadyLine(agent);
    const running = agent;
    return {
      agentPort,
      agentPid: running.pid,
      workerPid: local.workerPid,
      agentEdgeUrl: local.agentEdgeUrl,
      agentOutput: running.output,
      deadReason: () => {
        if (running.hasExited()) return `the agent (pid ${running.pid}) exited; its last output:\n${running.output().split("\n").slice(-8).join("\n")}`;
        if (!isAlive(local.workerPid)) return `the Worker's workerd (pid ${local.workerPid}) exited`;
        return undefined;
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function waitForHealth(url: string, edge: OwnedProcess): Promise<void> {
  const deadline = Date.now() + EDGE_READY_TIMEOUT_MS;
  for (;;) {
    if (edge.hasExited()) throw new Error(`wrangler dev exited during start:\n${edge.output()}`);
    try {
      const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`wrangler dev did not answer /healthz within ${EDGE_READY_TIMEOUT_MS / 1000} s:\n${edge.output()}`);
    await new Promise((resolve) => setTimeout(resolve, HEALTH_POLL_MS));
  }
}

/** The port from the agent's ready line ("... proxy on 127.0.0.1:PORT -> edge ..."). */
async function waitForReadyLine(agent: OwnedProcess): Promise<number> {
  const deadline = Date.now() + AGENT_READY_TIMEOUT_MS;
  for (;;) {
    const match = /proxy on 127\.0\.0\.1:(\d+) -> edge /.exec(agent.output());
    if (match) return Number(match[1]);
    if (agent.hasExited()) throw new Error(`the agent exited during start:\n${agent.output()}`);
    if (Date.now() > deadline) throw new Error(`the agent printed no ready line within ${AGENT_READY_TIMEOUT_MS / 1000} s:\n${agent.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
