// Real upstream proxies on loopback for the tests: Debian's microsocks (SOCKS5 with RFC 1929
// passwords) and tinyproxy (HTTP CONNECT with Basic), each a process its caller owns: stop() ends
// its whole process group and waits for the exit. Readiness is awaited by connecting.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const LOOPBACK = "127.0.0.1";
/** How long a spawned proxy may take to accept its first connection. */
const READY_TIMEOUT_MS = 5_000;
/** Pause between readiness attempts: the proxy is polled by connecting, not waited on blindly. */
const READY_RETRY_MS = 20;

/** A spawned process owned by a test: stop() ends its whole process group and waits for the exit. */
export type OwnedProcess = { child: ChildProcess; output(): string; stop(): Promise<void> };

/** Spawns `command` in a process group of its own, its output drained (the last 8 KiB kept). */
export function spawnOwned(command: string, args: string[]): OwnedProcess {
  const child = spawn(command, args, { detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  // Drained always, so a chatty proxy never blocks on a full pipe.
  child.stdout?.on("data", (chunk: Buffer) => (output = (output + chunk.toString()).slice(-8192)));
  child.stderr?.on("data", (chunk: Buffer) => (output = (output + chunk.toString()).slice(-8192)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    child,
    output: () => output,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGTERM");
        } catch {
          // Already gone between the check and the kill.
        }
      }
      await exited;
    },
  };
}

/** Resolves once `port` accepts a connection; rejects if `owner` exits first or READY_TIMEOUT_MS passes. */
export async function awaitListening(owner: OwnedProcess, port: number): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (owner.child.exitCode !== null || owner.child.signalCode !== null) {
      throw new Error(`${owner.child.spawnfile} exited before listening on ${port}: ${owner.output()}`);
    }
    const accepted = await new Promise<boolean>((resolve) => {
      const probe = netConnect(port, LOOPBACK);
      probe.once("connect", () => {
        probe.destroy();
        resolve(true);
      });
      probe.once("error", () => resolve(false));
    });
    if (accepted) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${READY_TIMEOUT_MS} ms: ${owner.output()}`);
    await new Promise((resolve) => setTimeout(resolve, READY_RETRY_MS));
  }
}

/** A loopback port nothing listens on: bound by the kernel's choice, then released. */
export async function unusedLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export type RunningProxy = { port: number; output(): string; stop(): Promise<void> };

/** microsocks on 127.0.0.1, with `-u user -P password` when credentials are given. */
export async function startMicrosocks(credentials?: { user: string; password: string }): Promise<RunningProxy> {
  const port = await unusedLoopbackPort();
  const auth = credentials ? ["-u", credentials.user, "-P", credentials.password] : [];
  const owner = spawnOwned("/usr/bin/microsocks", ["-i", LOOPBACK, "-p", String(port), ...auth]);
  await awaitListening(owner, port).catch(async (error: unknown) => {
    await owner.stop();
    throw error;
  });
  return { port, output: owner.output, stop: owner.stop };
}

/**
 * tinyproxy on 127.0.0.1 in the foreground (-d, so it logs to stdout: `output()` shows the
 * connections it made at LogLevel Connect), with Basic credentials when given; `connectPorts`
 * restricts CONNECT to those ports (none: every port).
 */
export async function startTinyproxy(options: { credentials?: { user: string; password: string }; connectPorts?: number[] } = {}): Promise<RunningProxy> {
  const port = await unusedLoopbackPort();
  const configDir = mkdtempSync(join(tmpdir(), "edgesocks-tinyproxy-"));
  const configPath = join(configDir, "tinyproxy.conf");
  const lines = [`Listen ${LOOPBACK}`, `Port ${port}`, "Timeout 30", "MaxClients 20", "Syslog Off", "LogLevel Connect", `Allow ${LOOPBACK}`];
  if (options.credentials) lines.push(`BasicAuth ${options.credentials.user} ${options.credentials.password}`);
  for (const connectPort of options.connectPorts ?? []) lines.push(`ConnectPort ${connectPort}`);
  writeFileSync(configPath, `${lines.join("\n")}\n`);
  const owner = spawnOwned("tinyproxy", ["-d", "-c", configPath]);
  const stop = async () => {
    await owner.stop();
    rmSync(configDir, { recursive: true, force: true });
  };
  await awaitListening(owner, port).catch(async (error: unknown) => {
    await stop();
    throw error;
  });
  return { port, output: owner.output, stop };
}
