// The test's side of the stand-in wrangler (wrangler.ts): a Cloudflare account on loopback.
// Each Worker the stand-in has deployed gets a fixed URL (a TCP forwarder on a port of its own,
// as a workers.dev name stays put across versions) in front of a real edge, the Worker under
// wrangler dev (processes.ts startEdge), whose EDGESOCKS_TOKEN is the secret the stand-in was
// given: a Worker deployed before its secret answers as one with no token (503). When a secret
// changes, a new edge starts with it and the forwarder moves to it, as a new version replaces
// the old on Cloudflare; the URL the agent was given keeps working.

import { existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startEdge, type RunningEdge } from "../processes.ts";

/** The directory to put first on PATH: its `wrangler` is the stand-in. */
export const STAND_IN_BIN = fileURLToPath(new URL(".", import.meta.url));
const POLL_MS = 50;
const TOKEN_SECRET = "EDGESOCKS_TOKEN";

/** One call the stand-in recorded (wrangler.ts record()). */
export type StandInCall = { argv: string[]; cwd: string; envNames: string[]; stdinBytes: number; stdinIsTty: boolean; envNamesHoldingASecret: string[] };

type Worker = { front: Server; url: string; sockets: Set<Socket>; edge?: RunningEdge; edgeSecret?: string; backendPort?: number };

export type StandInAccount = {
  /** The stand-in's state directory (its environment variable STANDIN_WRANGLER_STATE). */
  stateDir: string;
  /** What the stand-in needs in the environment of whatever runs it. */
  env: Record<string, string>;
  calls(): StandInCall[];
  /** The raw text of the call log, for searching it for a secret. */
  callLog(): string;
  /** The secret EDGESOCKS_TOKEN the stand-in holds for `workerName`. */
  secret(workerName: string): string | undefined;
  /** The fixed URL of a deployed Worker. */
  workerUrl(workerName: string): string | undefined;
  /** Edges started so far, for a test to count versions. */
  edgesStarted(): number;
  /** Creates a marker file (logged-out, deploy-fails, no-workers-dev). */
  mark(marker: "logged-out" | "deploy-fails" | "no-workers-dev"): void;
  stop(): Promise<void>;
};

/** Starts answering the stand-in's sync requests; nothing runs until a Worker is deployed. */
export function startStandInAccount(): StandInAccount {
  const stateDir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-standin-"));
  const syncDir = join(stateDir, "sync");
  const workers = new Map<string, Worker>();
  const handled = new Set<string>();
  let edgesStarted = 0;
  let busy = false;
  let stopped = false;
  let failure: Error | undefined;

  const secretOf = (name: string): string | undefined => {
    const path = join(stateDir, "workers", name, "secrets", TOKEN_SECRET);
    return existsSync(path) ? readFileSync(path, "utf8") : undefined;
  };

  const openFront = async (): Promise<Worker> => {
    const sockets = new Set<Socket>();
    const worker: Worker = { front: createServer(), url: "", sockets };
    worker.front.on("connection", (client) => {
      sockets.add(client);
      const upstream = connect(worker.backendPort ?? 9, "127.0.0.1");
      sockets.add(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      const end = () => {
        client.destroy();
        upstream.destroy();
        sockets.delete(client);
        sockets.delete(upstream);
      };
      client.on("error", end).on("close", end);
      upstream.on("error", end).on("close", end);
    });
    await new Promise<void>((resolve) => worker.front.listen(0, "127.0.0.1", resolve));
    worker.url = `http://127.0.0.1:${(worker.front.address() as { port: number }).port}`;
    return worker;
  };

  /** Brings `name`'s edge in line with the account; resolves with its URL, or undefined when it is not deployed. */
  const reconcile = async (name: string): Promise<string | undefined> => {
    if (!existsSync(join(stateDir, "workers", name, "deployed"))) return undefined;
    let worker = workers.get(name);
    if (worker === undefined) {
      worker = await openFront();
      workers.set(name, worker);
    }
    const secret = secretOf(name) ?? "";
    if (worker.edge === undefined || worker.edgeSecret !== secret) {
      const previous = worker.edge;
      worker.edge = await startEdge({ EDGESOCKS_TOKEN: secret });
      edgesStarted++;
      worker.edgeSecret = secret;
      worker.backendPort = Number(new URL(worker.edge.url).port);
      await previous?.stop();
    }
    return worker.url;
  };

  const poll = async () => {
    if (busy || stopped || !existsSync(syncDir)) return;
    busy = true;
    try {
      for (const file of readdirSync(syncDir).filter((entry) => entry.endsWith(".request")).sort()) {
        if (handled.has(file)) continue;
        handled.add(file);
        const id = file.slice(0, -".request".length);
        let reply: { url?: string; error?: string };
        try {
          const url = await reconcile(readFileSync(join(syncDir, file), "utf8"));
          reply = url === undefined ? {} : { url };
        } catch (error) {
          failure = error instanceof Error ? error : new Error(String(error));
          reply = { error: failure.message.split("\n")[0] ?? "failed" };
        }
        writeFileSync(join(syncDir, `${id}.reply.tmp`), JSON.stringify(reply));
        renameSync(join(syncDir, `${id}.reply.tmp`), join(syncDir, `${id}.reply`));
      }
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void poll(), POLL_MS);

  const readCalls = (): string => (existsSync(join(stateDir, "calls.jsonl")) ? readFileSync(join(stateDir, "calls.jsonl"), "utf8") : "");
  return {
    stateDir,
    env: { STANDIN_WRANGLER_STATE: stateDir, STANDIN_WRANGLER_NODE: process.execPath },
    calls: () => {
      if (failure !== undefined) throw failure;
      return readCalls()
        .split("\n")
        .filter((line) => line !== "")
        .map((line) => JSON.parse(line) as StandInCall);
    },
    callLog: readCalls,
    secret: secretOf,
    workerUrl: (name) => workers.get(name)?.url,
    edgesStarted: () => edgesStarted,
    mark: (marker) => writeFileSync(join(stateDir, marker), ""),
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      while (busy) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      for (const worker of workers.values()) {
        for (const socket of worker.sockets) socket.destroy();
        await new Promise<void>((resolve) => worker.front.close(() => resolve()));
        await worker.edge?.stop();
      }
      rmSync(stateDir, { recursive: true, force: true });
      if (failure !== undefined) throw failure;
    },
  };
}
