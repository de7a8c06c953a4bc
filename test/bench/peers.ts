// The peer SOCKS5 servers the benchmark measures edgesocks against, from Debian's packages:
// Dante (danted, a forking C server) and microsocks (a small threaded C server).

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../e2e/processes.ts";
import { processTree } from "./proc-stats.ts";

export type Peer = { name: string; port: number; pids(): number[]; stop(): Promise<void> };

const PACKAGES: Record<string, string> = { "/usr/sbin/danted": "dante-server", "/usr/bin/microsocks": "microsocks" };

/** Installs dante-server and microsocks with apt-get when missing; throws one clear line if it cannot. */
export function ensurePeerPackages(): void {
  const missing = Object.entries(PACKAGES).filter(([binary]) => !existsSync(binary)).map(([, name]) => name);
  if (missing.length === 0) return;
  process.stderr.write(`bench: installing ${missing.join(" ")} with apt-get\n`);
  const result = spawnSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], { stdio: "inherit", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  if (result.status !== 0) throw new Error(`cannot install ${missing.join(" ")} (apt-get exited ${result.status}); install them and run again`);
}

/** Dante on loopback, no authentication, CONNECT to loopback only. */
export async function startDante(): Promise<Peer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "edgesocks-bench-dante-"));
  const configPath = join(dir, "sockd.conf");
  writeFileSync(
    configPath,
    [
      "logoutput: stderr",
      `internal: 127.0.0.1 port = ${port}`,
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
  // -N 1: one mother process; Dante still forks its negotiate, request and io children.
  return startPeer("dante", port, spawn("/usr/sbin/danted", ["-f", configPath, "-N", "1"], { stdio: ["ignore", "ignore", "pipe"] }));
}

/** microsocks on loopback. */
export async function startMicrosocks(): Promise<Peer> {
  const port = await freePort();
  return startPeer("microsocks", port, spawn("/usr/bin/microsocks", ["-i", "127.0.0.1", "-p", String(port)], { stdio: ["ignore", "ignore", "pipe"] }));
}

async function startPeer(name: string, port: number, child: ChildProcess): Promise<Peer> {
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${stderr.trim()}`);
    if (await accepts(port)) break;
    if (Date.now() > deadline) throw new Error(`${name} did not listen on 127.0.0.1:${port}: ${stderr.trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const pid = child.pid ?? 0;
  return {
    name,
    port,
    pids: () => processTree(pid),
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

async function accepts(port: number): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}
