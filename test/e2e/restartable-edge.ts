// A real edge (wrangler dev running the Worker in workerd) that a test can kill outright and
// bring back on the same port with the same token, for what the agent does across an edge's death.
//
// processes.ts's startEdge picks a new port each time and ends wrangler politely; here wrangler
// runs in a process group of its own (wrangler, its esbuild, both workerd processes), so one
// SIGKILL to the group takes the whole edge down at once, as a crash or an OOM kill would.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findWorkerdPids, freePort, repoRoot } from "./processes.ts";

const wranglerBin = join(createRequire(import.meta.url).resolve("wrangler/package.json"), "..", "bin", "wrangler.js");
/** Longest a (re)start may take on a loaded 2-core machine; measured 6-7 s when idle. */
const START_TIMEOUT_MS = 60_000;
/** How often a (re)start asks /healthz: the restart's measured time is this precise. */
const HEALTH_POLL_MS = 50;

export type RestartableEdge = {
  url: string;
  token: string;
  /** SIGKILLs the edge's whole process group; returns Date.now() of the signal. */
  kill(): number;
  /** Starts the edge again on the same port and token; resolves with Date.now() when /healthz first answered. */
  restart(): Promise<number>;
  /** Ends the edge (its whole process group) and removes its files. */
  stop(): Promise<void>;
};

/** Starts wrangler dev on a free loopback port in a process group of its own; resolves once /healthz answers. */
export async function startRestartableEdge(): Promise<RestartableEdge> {
  const port = await freePort();
  const token = randomBytes(24).toString("base64url");
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-restartable-edge-"));
  const envFile = join(dir, ".env");
  // As in processes.ts: the edge's DoH resolver is a loopback port where nothing listens.
  writeFileSync(envFile, `EDGESOCKS_TOKEN=${token}\nEDGESOCKS_DOH_URL=http://127.0.0.1:9/dns-query\n`, { mode: 0o600 });
  const url = `http://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const launch = async (): Promise<number> => {
    const launched = spawn(
      process.execPath,
      [wranglerBin, "dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()), "--env-file", envFile, "--show-interactive-dev-session=false", "--log-level", "warn", "--persist-to", join(dir, "state")],
      {
        cwd: repoRoot,
        // Its own group, so that kill() reaches workerd too, not only wrangler's node.
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
        // CLOUDFLARE_CF_FETCH_ENABLED=false: miniflare would otherwise fetch Request.cf from
        // workers.cloudflare.com at every start; the test stays on loopback.
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", EDGESOCKS_TOKEN: "" },
      },
    );
    child = launched;
    exited = new Promise((resolve) => launched.once("exit", () => resolve()));
    let output = "";
    launched.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    launched.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (launched.exitCode !== null || launched.signalCode !== null) throw new Error(`wrangler dev exited ${launched.exitCode ?? launched.signalCode}:\n${output}`);
      try {
        const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
        if (response.ok) return Date.now();
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`wrangler dev did not come up within ${START_TIMEOUT_MS} ms:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, HEALTH_POLL_MS));
    }
  };

  const signalGroup = (signal: NodeJS.Signals): void => {
    const pid = child?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, signal);
    } catch {
      // the group is gone already
    }
  };

  await launch();
  return {
    url,
    token,
    kill: () => {
      // The Worker's own workerd first, as production's edge dies, then the rest of the group.
      const workerPid = child?.pid === undefined ? undefined : findWorkerdPids({ wranglerPid: child.pid, url }).workerPid;
      const killedAtMs = Date.now();
      if (workerPid !== undefined) process.kill(workerPid, "SIGKILL");
      signalGroup("SIGKILL");
      return killedAtMs;
    },
    restart: async () => {
      await exited;
      await portRefuses(port);
      return launch();
    },
    stop: async () => {
      signalGroup("SIGTERM");
      const timer = setTimeout(() => signalGroup("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
      // wrangler's node may go first and leave workerd behind: the group goes with it.
      signalGroup("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Resolves once nothing accepts on 127.0.0.1:`port` (a killed process's listener is closed by the kernel, not at once by its exit event). */
async function portRefuses(port: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const accepted = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: "127.0.0.1", port });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (!accepted) return;
    if (Date.now() > deadline) throw new Error(`something still accepts on 127.0.0.1:${port} after the edge was killed`);
    await new Promise((resolve) => setTimeout(resolve, HEALTH_POLL_MS));
  }
}
