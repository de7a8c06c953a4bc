// Starting and stopping the real edge (wrangler dev) and the real agent for end-to-end tests.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { processTree } from "../bench/proc-stats.ts";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const wranglerBin = join(createRequire(import.meta.url).resolve("wrangler/package.json"), "..", "bin", "wrangler.js");
const agentCli = join(repoRoot, "local-agent", "cli", "main.ts");

/** A free loopback TCP port (bound and released; fine for a test machine with no contention). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export type RunningEdge = { url: string; token: string; wranglerPid: number; stop(): Promise<void> };

/**
 * Starts wrangler dev on a free loopback port with a fresh token; resolves once /healthz answers.
 * `root` is the checkout whose wrangler.toml and worker/ it runs (another release, for skew tests).
 */
export async function startEdge(vars: Record<string, string> = {}, root = repoRoot): Promise<RunningEdge> {
  const port = await freePort();
  const token = randomBytes(24).toString("base64url");
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-edge-"));
  const envFile = join(dir, ".env");
  // The edge asks its DoH resolver why a dial to a name was refused (worker/dial/resolver.ts):
  // by default a loopback port where nothing listens, so no test's lookup leaves this machine.
  const lines = Object.entries({ EDGESOCKS_TOKEN: token, EDGESOCKS_DOH_URL: "http://127.0.0.1:9/dns-query", ...vars }).map(([key, value]) => `${key}=${value}`);
  writeFileSync(envFile, `${lines.join("\n")}\n`, { mode: 0o600 });
  // No metrics, and no fetch of Request.cf from workers.cloudflare.com at start (miniflare's
  // default): the local edge sends nothing to a third party.
  const child = spawn(
    process.execPath,
    [wranglerBin, "dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()), "--env-file", envFile, "--show-interactive-dev-session=false", "--log-level", "warn", "--persist-to", join(dir, "state")],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", EDGESOCKS_TOKEN: "" } },
  );
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    // wrangler may exit and leave workerd or esbuild behind it: the whole group goes either way.
    if (child.exitCode !== null) {
      await stopChild(child, { tree: true });
      throw new Error(`wrangler dev exited ${child.exitCode}:\n${output}`);
    }
    try {
      const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      await stopChild(child, { tree: true });
      throw new Error(`wrangler dev did not come up:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return {
    url,
    token,
    wranglerPid: child.pid ?? 0,
    stop: async () => {
      await stopChild(child, { tree: true });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type RunningAgent = {
  port: number;
  pid: number;
  /** Everything the agent has written to stderr so far (its log). */
  log(): string;
  /** Everything the agent has written to stdout so far (its ready line). */
  output(): string;
  /** Resolves with the first log line matching `pattern`; rejects after `timeoutMs`. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the exit status (or the signal that ended it) once the agent has exited. */
  exited(): Promise<number | NodeJS.Signals>;
  stop(): Promise<void>;
};

/**
 * Starts the real agent (`cli`: this checkout's, or another release's) against `edgeUrl` on a free loopback port; resolves after its ready line. `--bypass none` comes first so that loopback
 * destinations really cross the edge; a later `--bypass` in `extraArgs` overrides it.
 */
export async function startAgent(edgeUrl: string, token: string, extraArgs: string[] = [], cli = agentCli): Promise<RunningAgent> {
  const child = spawn(process.execPath, [cli, "--edge", edgeUrl, "--listen", "127.0.0.1:0", "--bypass", "none", ...extraArgs], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, EDGESOCKS_TOKEN: token },
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  let stdout = "";
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /proxy on 127\.0\.0\.1:(\d+) -> edges? /.exec(stdout);
      if (match) resolve(Number(match[1]));
    });
    child.once("exit", (code) => reject(new Error(`agent exited ${code}: ${stderr}`)));
  });
  const waitForLog = async (pattern: RegExp, timeoutMs = 10_000): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = stderr.split("\n").find((candidate) => pattern.test(candidate));
      if (line !== undefined) return line;
      if (Date.now() > deadline) throw new Error(`no agent log line matches ${pattern} within ${timeoutMs} ms; log:\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const exited = new Promise<number | NodeJS.Signals>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? -1)));
  return { port, pid: child.pid ?? 0, log: () => stderr, output: () => stdout, waitForLog, exited: () => exited, stop: () => stopChild(child) };
}

/**
 * Ends `child`: SIGTERM, again after 1 s, SIGKILL after 5 s. With `tree`, what is left below it
 * once it has exited is killed too: wrangler's esbuild outlived wrangler in about 3 runs of 8.
 * (The tree, not a process group of its own, so that a Ctrl-C of the test run still reaches it.)
 */
async function stopChild(child: ChildProcess, { tree = false } = {}): Promise<void> {
  const below = tree && child.pid !== undefined ? processTree(child.pid).filter((pid) => pid !== child.pid) : [];
  const killLeftovers = () => {
    for (const pid of below) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // ended with its parent, as it should
      }
    }
  };
  if (child.exitCode !== null || child.signalCode !== null) {
    killLeftovers();
    return;
  }
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  // The agent drains on the first signal (--drain-timeout-ms); a test's leftovers need no drain.
  const again = setTimeout(() => child.kill("SIGTERM"), 1_000);
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(again);
  clearTimeout(timer);
  killLeftovers();
}

/** Resident set size of a process in bytes, from /proc. */
export function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * The two workerd processes `wrangler dev` runs: the Worker's own, and wrangler's dev proxy in
 * front of it, which serves the URL wrangler prints (its `entry=` socket is on that port).
 * Production has only the first: memory and CPU figures for the edge must come from it.
 */
export function findWorkerdPids(edge: { wranglerPid: number; url: string }): { workerPid: number; devProxyPid: number } {
  const parentOf = new Map<number, number>();
  const commandOf = new Map<number, string>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parentOf.set(Number(entry), parent);
      commandOf.set(Number(entry), readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " "));
    } catch {
      // the process ended while we looked
    }
  }
  const isDescendant = (pid: number): boolean => {
    for (let current = parentOf.get(pid); current !== undefined && current > 1; current = parentOf.get(current)) {
      if (current === edge.wranglerPid) return true;
    }
    return false;
  };
  const workerds = [...commandOf].filter(([pid, command]) => command.includes("workerd") && / serve /.test(command) && isDescendant(pid));
  const proxyEntry = `entry=127.0.0.1:${new URL(edge.url).port} `;
  const devProxy = workerds.filter(([, command]) => `${command} `.includes(proxyEntry));
  const worker = workerds.filter((entry) => !devProxy.includes(entry));
  if (worker.length !== 1 || devProxy.length !== 1 || !worker[0] || !devProxy[0]) {
    const found = workerds.map(([pid, command]) => `${pid} ${command}`).join("; ") || "none";
    throw new Error(`expected two workerd processes under wrangler dev (${edge.wranglerPid}), found: ${found}`);
  }
  return { workerPid: worker[0][0], devProxyPid: devProxy[0][0] };
}
