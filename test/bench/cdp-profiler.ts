// V8's CPU profiler of the Worker, driven through the inspector wrangler dev serves on its
// --inspector-port (Chrome DevTools Protocol over WebSocket; wrangler passes the session on to
// the Worker's workerd). workerd answers the Profiler domain itself, with v8::CpuProfiler
// (src/workerd/io/worker.c++: Profiler.enable creates the profiler, setSamplingInterval,
// start and stop; stop returns nodes, samples and timeDeltas in microseconds). workerd keeps
// one inspector session per isolate and drops the older one when another attaches, so a run
// holds one session from start to stop and opens no other.

import WebSocket from "ws";
import type { CpuProfile } from "./v8-profile.ts";

/** Longest the inspector may take to answer a command; Profiler.stop of a long run is the slowest. */
const COMMAND_TIMEOUT_MS = 30_000;

/** A running profile of the Worker: stop() ends it and resolves with what V8 sampled. */
export type RunningProfile = { stop(): Promise<CpuProfile> };

/** The inspector target's WebSocket URL from http://127.0.0.1:`port`/json: the one Worker wrangler dev runs. */
export async function inspectorTarget(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/json`, { signal: AbortSignal.timeout(5_000) });
  const targets = (await response.json()) as { webSocketDebuggerUrl?: unknown }[];
  const url = targets[0]?.webSocketDebuggerUrl;
  if (targets.length !== 1 || typeof url !== "string") throw new Error(`the inspector on port ${port} lists ${targets.length} targets, expected the Worker alone`);
  return url;
}

/** Starts V8's sampling profiler in the Worker at `debuggerUrl`, sampling every `samplingIntervalUs`. */
export async function startProfile(debuggerUrl: string, samplingIntervalUs: number): Promise<RunningProfile> {
  const socket = new WebSocket(debuggerUrl, { perMessageDeflate: false, maxPayload: 1024 * 1024 * 1024 });
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  let nextId = 1;
  const pending = new Map<number, { resolve(result: unknown): void; reject(error: Error): void }>();
  const failAll = (error: Error) => {
    for (const caller of pending.values()) caller.reject(error);
    pending.clear();
  };
  socket.on("error", (error) => failAll(error));
  socket.on("close", (code) => failAll(new Error(`the inspector closed the session (${code})`)));
  socket.on("message", (data) => {
    // Events (Runtime.consoleAPICalled for the Worker's log lines, ...) have no id: not ours to answer.
    const message = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message?: string } };
    const caller = message.id === undefined ? undefined : pending.get(message.id);
    if (!caller || message.id === undefined) return;
    pending.delete(message.id);
    if (message.error) caller.reject(new Error(`inspector: ${message.error.message ?? "error"}`));
    else caller.resolve(message.result);
  });
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => reject(new Error(`inspector: no answer to ${method} within ${COMMAND_TIMEOUT_MS} ms`)), COMMAND_TIMEOUT_MS);
      pending.set(id, {
        resolve: (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      socket.send(JSON.stringify({ id, method, params }));
    });
  try {
    await call("Profiler.enable");
    // V8 reads the interval when profiling starts: it must come before Profiler.start.
    await call("Profiler.setSamplingInterval", { interval: samplingIntervalUs });
    await call("Profiler.start");
  } catch (error) {
    socket.terminate();
    throw error;
  }
  return {
    stop: async () => {
      try {
        const result = (await call("Profiler.stop")) as { profile?: CpuProfile } | undefined;
        if (!result?.profile) throw new Error("inspector: Profiler.stop returned no profile (was the Worker's isolate replaced?)");
        return result.profile;
      } finally {
        socket.close();
      }
    },
  };
}
