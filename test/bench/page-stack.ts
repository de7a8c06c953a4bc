// The processes `npm run bench:page` measures, each the leader of a process group it owns
// (process-groups.ts): wrangler dev with the Worker, run from a copy of the checkout taken at
// start (wrangler dev restarts the Worker when a file under worker/ changes, and other work may
// be saving there), agents started from the same copy, and Dante.

import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { freePort, repoRoot } from "../e2e/processes.ts";
import { localEdge, type LocalEdge } from "./local-edge.ts";
import { spawnGroup, type OwnedProcess } from "./process-groups.ts";

/** wrangler dev builds and boots workerd: 6-10 s on this 2-core machine, more when it is shared. */
const EDGE_READY_TIMEOUT_MS = 90_000;
const READY_TIMEOUT_MS = 30_000;
const POLL_MS = 100;
/** What the Worker and the agent need from the checkout; node_modules is linked, not copied. */
const SNAPSHOT_ENTRIES = ["wrangler.toml", "package.json", "worker", "local-agent"];

const wranglerBin = join(createRequire(import.meta.url).resolve("wrangler/package.json"), "..", "bin", "wrangler.js");

export type PageStack = {
  local: LocalEdge;
  token: string;
  /** Starts an agent from the copy against `edgeUrl` (a link relay in front of the Worker's own workerd). */
  startAgent(name: string, edgeUrl: string, args: string[]): Promise<{ process: OwnedProcess; port: number }>;
  /** Starts Dante on loopback: no authentication, CONNECT to 127.0.0.0/8 only (peers.ts's configuration). */
  startDante(): Promise<{ process: OwnedProcess; port: number }>;
  /** Why a process of the stack has gone, or undefined while all run. */
  deadReason(): string | undefined;
  /** Ends every process started here, group by group, and removes the copy. Idempotent. */
  stop(): Promise<void>;
};

/** Copies the checkout, starts the edge from it and finds the Worker's own workerd. */
export async function startPageStack(progress: (line: string) => void): Promise<PageStack> {
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-page-"));
  const removeCopy = () => rmSync(dir, { recursive: true, force: true });
  process.once("exit", removeCopy);
  for (const entry of SNAPSHOT_ENTRIES) cpSync(join(repoRoot, entry), join(dir, entry), { recursive: true });
  symlinkSync(join(repoRoot, "node_modules"), join(dir, "node_modules"));
  const token = randomBytes(24).toString("base64url");
  const envFile = join(dir, ".page.env");
  // As in processes.ts: the token through a private file, never argv; the edge's DoH resolver a
  // loopback port where nothing listens, so no lookup leaves this machine.
  writeFileSync(envFile, `EDGESOCKS_TOKEN=${token}\nEDGESOCKS_DOH_URL=http://127.0.0.1:9/dns-query\n`, { mode: 0o600 });
  const port = await freePort();
  const owned: OwnedProcess[] = [];
  const edge = spawnGroup(
    "wrangler dev",
    process.execPath,
    [wranglerBin, "dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()), "--env-file", envFile, "--show-interactive-dev-session=false", "--log-level", "warn", "--persist-to", join(dir, "state")],
    // No metrics, and no fetch of Request.cf from workers.cloudflare.com at start.
    { cwd: dir, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", EDGESOCKS_TOKEN: "" } },
  );
  owned.push(edge);
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      for (const one of owned.reverse()) await one.stop();
      removeCopy();
    })();
    return stopping;
  };
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitFor(`wrangler dev's /healthz`, edge, EDGE_READY_TIMEOUT_MS, async () => {
      const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
      return response?.ok === true ? true : undefined;
    });
    const local = await localEdge({ url, token, wranglerPid: edge.pid, stop }, "worker");
    progress(`edge up from a copy of the checkout in ${dir}; the Worker's own workerd is pid ${local.workerPid} at ${local.agentEdgeUrl}`);
    return {
      local,
      token,
      startAgent: async (name, edgeUrl, args) => {
        const agent = spawnGroup(name, process.execPath, [join(dir, "local-agent", "cli", "main.ts"), "--edge", edgeUrl, "--listen", "127.0.0.1:0", "--bypass", "none", ...args], {
          cwd: dir,
          env: { ...process.env, EDGESOCKS_TOKEN: token },
        });
        owned.push(agent);
        const agentPort = await waitFor(`${name}'s ready line`, agent, READY_TIMEOUT_MS, async () => {
          const match = /proxy on 127\.0\.0\.1:(\d+) -> edge /.exec(agent.output());
          return match ? Number(match[1]) : undefined;
        });
        return { process: agent, port: agentPort };
      },
      startDante: async () => {
        const dantePort = await freePort();
        const configPath = join(dir, "sockd.conf");
        writeFileSync(
          configPath,
          [
            "logoutput: stderr",
            `internal: 127.0.0.1 port = ${dantePort}`,
            "external: 127.0.0.1",
            "clientmethod: none",
            "socksmethod: none",
            "user.privileged: root",
            "user.unprivileged: nobody",
            "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }",
            "socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }",
            "",
          ].join("\n"),
        );
        // -N 1: one mother process; Dante still forks its negotiate, request and io children, all in its group.
        const dante = spawnGroup("dante", "/usr/sbin/danted", ["-f", configPath, "-N", "1"], {});
        owned.push(dante);
        await waitFor("Dante's listening socket", dante, READY_TIMEOUT_MS, async () => ((await accepts(dantePort)) ? true : undefined));
        return { process: dante, port: dantePort };
      },
      deadReason: () => {
        for (const one of owned) if (one.hasExited()) return `${one.name} (pid ${one.pid}) exited; its last output:\n${one.output().split("\n").slice(-8).join("\n")}`;
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

/** Polls `check` until it gives a value; throws if `owner` exits first or `timeoutMs` passes. */
async function waitFor<T>(what: string, owner: OwnedProcess, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (owner.hasExited()) throw new Error(`${owner.name} exited before ${what}:\n${owner.output()}`);
    if (performance.now() > deadline) throw new Error(`no ${what} within ${timeoutMs / 1000} s:\n${owner.output()}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
