// What clients see when the agent is told to stop: SIGTERM or SIGINT stops accepting, lets open
// transfers finish within --drain-timeout-ms, then resets the rest (never a clean end for a cut
// transfer); a second signal resets at once; the exit status says whether the drain was clean.
// `npm start`'s Ctrl-C takes the same path, and its edge stops only after the agent.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createConnection, type Server, type Socket } from "node:net";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHttpOrigin, startTcpOrigin, type HttpOrigin, type Listening } from "./origins.ts";
import { freePort, repoRoot, startAgent, type RunningAgent } from "./processes.ts";
import { socketEnding } from "./raw-socket.ts";
import { socksConnect } from "./socks-client.ts";

const CHUNK_BYTES = 16 * 1024;
const CHUNK_INTERVAL_MS = 10;
/** About 1.2 s at 16 KiB per 10 ms: long enough to signal mid-transfer, short enough to drain. */
const FINITE_BYTES = 120 * CHUNK_BYTES;

/** Sends FINITE_BYTES of a fixed pattern, paced, then FIN; the path `/endless` pattern never ends. */
function pacedSender(total: number | undefined) {
  return (socket: Socket) => {
    let sent = 0;
    const chunk = Buffer.alloc(CHUNK_BYTES, 0x5a);
    const timer = setInterval(() => {
      if (socket.destroyed) return clearInterval(timer);
      if (total !== undefined && sent >= total) {
        clearInterval(timer);
        socket.end();
        return;
      }
      socket.write(chunk);
      sent += chunk.length;
    }, CHUNK_INTERVAL_MS);
    socket.on("error", () => clearInterval(timer));
    socket.on("close", () => clearInterval(timer));
  };
}

const expectedDigest = createHash("sha256").update(Buffer.alloc(FINITE_BYTES, 0x5a)).digest("hex");

/** Reads `socket` to its end: how it ended, the bytes it carried, and their digest. */
function download(socket: Socket): Promise<{ how: string; bytes: number; sha256: string }> {
  const hash = createHash("sha256");
  let bytes = 0;
  socket.on("data", (chunk: Buffer) => {
    hash.update(chunk);
    bytes += chunk.length;
  });
  return socketEnding(socket).then(({ how }) => ({ how, bytes, sha256: hash.digest("hex") }));
}

function firstBytes(socket: Socket): Promise<void> {
  return new Promise((resolve) => socket.once("data", () => resolve()));
}

/** Resolves with the error code a fresh TCP connection to `port` meets, or "connected". */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

let finite: Listening<Server>;
let endless: Listening<Server>;
let httpOrigin: HttpOrigin;
beforeAll(async () => {
  finite = await startTcpOrigin(pacedSender(FINITE_BYTES));
  endless = await startTcpOrigin(pacedSender(undefined));
  httpOrigin = await startHttpOrigin();
});
afterAll(async () => {
  await Promise.all([finite?.close(), endless?.close(), httpOrigin?.close()]);
});

describe("the agent on SIGTERM and SIGINT", () => {
  let agent: RunningAgent | undefined;
  const start = async (drainMs: number) => {
    agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--drain-timeout-ms", String(drainMs)]);
    return agent;
  };
  afterAll(async () => {
    await agent?.stop();
  });

  it("stops accepting and lets a transfer under way finish, every byte, then exits 0", async () => {
    const running = await start(10_000);
    const socket = await socksConnect(running.port, "127.0.0.1", finite.port);
    const received = download(socket);
    await firstBytes(socket);
    // A Ctrl-C under npm start arrives twice within milliseconds: one request to stop, not two.
    process.kill(running.pid, "SIGINT");
    process.kill(running.pid, "SIGTERM");
    // The two signals may be handled in either order.
    await running.waitForLog(/SIG(INT|TERM): no longer accepting; 1 open connections have 10000 ms to finish/);
    expect(await tryConnect(running.port)).toBe("ECONNREFUSED");
    expect(await received).toEqual({ how: "end", bytes: FINITE_BYTES, sha256: expectedDigest });
    expect(await running.exited()).toBe(0);
    expect(running.log()).toMatch(/closed: 1 connections finished\n/);
    expect(running.log()).not.toMatch(/again: resetting/);
  });

  it("resets a transfer that outlasts --drain-timeout-ms, and exits 3", async () => {
    const running = await start(300);
    const socket = await socksConnect(running.port, "127.0.0.1", endless.port);
    const ending = socketEnding(socket);
    await firstBytes(socket);
    const signalledAt = Date.now();
    process.kill(running.pid, "SIGTERM");
    const { how, atMs } = await ending;
    expect(how).toBe("ECONNRESET");
    expect(atMs - signalledAt).toBeGreaterThanOrEqual(250);
    expect(atMs - signalledAt).toBeLessThan(2_000);
    expect(await running.exited()).toBe(3);
    expect(running.log()).toMatch(/closed: 0 connections finished, 1 reset before they finished/);
  });

  it("resets at once on a second signal", async () => {
    const running = await start(60_000);
    const socket = await socksConnect(running.port, "127.0.0.1", endless.port);
    const ending = socketEnding(socket);
    await firstBytes(socket);
    process.kill(running.pid, "SIGTERM");
    await running.waitForLog(/SIGTERM: no longer accepting/);
    await new Promise((resolve) => setTimeout(resolve, 600)); // past the repeat window
    const secondAt = Date.now();
    process.kill(running.pid, "SIGTERM");
    const { how, atMs } = await ending;
    expect(how).toBe("ECONNRESET");
    expect(atMs - secondAt).toBeLessThan(1_000);
    expect(await running.exited()).toBe(3);
    expect(running.log()).toMatch(/SIGTERM again: resetting the 1 connections still open/);
  });

  it("does not wait for an idle HTTP keep-alive connection: it closes it, nothing was cut", async () => {
    const running = await start(30_000);
    const socket = createConnection({ host: "127.0.0.1", port: running.port });
    const host = `127.0.0.1:${httpOrigin.port}`;
    const answered = new Promise<string>((resolve) => {
      let text = "";
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString("latin1");
        if (/\r\n\r\n[\s\S]*\}/.test(text)) resolve(text);
      });
    });
    socket.write(`GET http://${host}/data.json HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    expect(await answered).toMatch(/^HTTP\/1\.1 200 /);
    const ending = socketEnding(socket);
    const signalledAt = Date.now();
    process.kill(running.pid, "SIGTERM");
    expect((await ending).how).toBe("end");
    expect(await running.exited()).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(3_000);
  });
});

/** Every process whose parent chain leads to `root`. */
function descendantsOf(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // ended while we looked
    }
  }
  return [...parentOf.keys()].filter((pid) => {
    for (let current = parentOf.get(pid); current !== undefined && current > 1; current = parentOf.get(current)) if (current === root) return true;
    return false;
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("npm start on Ctrl-C", () => {
  it("drains the agent's transfer before the local edge stops, exits 0 and leaves no process behind", async () => {
    const edgePort = await freePort();
    // detached: the runner leads a process group, as a shell's foreground job does; Ctrl-C is a
    // SIGINT to that whole group.
    const dev = spawn(process.execPath, [join(repoRoot, "local-agent", "cli", "dev.ts"), "--edge-port", String(edgePort), "--listen", "127.0.0.1:0", "--bypass", "none"], {
      cwd: repoRoot,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, EDGESOCKS_TOKEN: "" },
    });
    const exited = new Promise<number | null>((resolve) => dev.once("exit", (code) => resolve(code)));
    let stdout = "";
    let stderr = "";
    dev.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    let family: number[] = [];
    try {
      const agentPort = await new Promise<number>((resolve, reject) => {
        dev.stdout.on("data", (chunk: Buffer) => {
          stdout += chunk.toString();
          const match = /proxy on 127\.0\.0\.1:(\d+) -> edge /.exec(stdout);
          if (match) resolve(Number(match[1]));
        });
        void exited.then((code) => reject(new Error(`npm start exited ${code}: ${stderr}`)));
      });
      family = descendantsOf(dev.pid ?? 0);
      expect(family.length).toBeGreaterThanOrEqual(3); // the agent, wrangler and its workerd
      const socket = await socksConnect(agentPort, "127.0.0.1", finite.port);
      const received = download(socket);
      await firstBytes(socket);
      process.kill(-(dev.pid ?? 0), "SIGINT");
      expect(await received).toEqual({ how: "end", bytes: FINITE_BYTES, sha256: expectedDigest });
      expect(await exited).toBe(0);
      // The group's SIGINT, or the runner's SIGTERM on it, whichever the agent takes first (the order varies under load).
      expect(stderr).toMatch(/(SIGINT|SIGTERM): no longer accepting; 1 open connections/);
      const deadline = Date.now() + 3_000;
      while (family.some(alive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(family.filter(alive)).toEqual([]);
    } finally {
      for (const pid of [dev.pid ?? 0, ...family]) if (pid > 0 && alive(pid)) process.kill(pid, "SIGKILL");
    }
  }, 120_000);
});
