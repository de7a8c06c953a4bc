// `npm run bench:agent-cost`: what the agent's CPU, and the Worker's, pay per short connection
// (issue 10: measured ~2.2 ms of agent CPU and ~3.9 ms of workerd CPU per connection; goals 0.5 ms
// and 1 ms). The real agent (its warm pool and tunnel reuse as configured) against the Worker's
// own workerd (local-edge.ts), with a loopback origin. Each connection: SOCKS5 greeting, CONNECT
// to the origin, one small request and its answer, the client's FIN, the origin's FIN, close.
//
//   npm run bench:agent-cost -- [--connections N] [--concurrency N] [--request-bytes N]
//                               [--response-bytes N] [--sampling-us N] [--agent-arg ARG]...
//                               [--root DIR] [--compare-root DIR] [--compare-agent-arg ARG]...
//                               [--chunk N] [--top N]
//                               [--warm-up N] [--node-arg ARG]... [--skip-profile]
//                               [--cpu-prof-dir DIR]
//
// The agent runs with --inspect on a loopback port; no session is attached until the profiled
// pass. (a) Unprofiled: user and system CPU of the agent (per thread too) and of the Worker's
// workerd, from /proc. (b) Under V8's CPU profiler in both (inspector, as cdp-profiler.ts),
// bottom-up: self time by module (ws, net and streams, timers, our files, GC, ...) and by the
// nearest function of ours on the stack, which charges what Node does on our behalf (a log
// line's write to stderr) to the line of ours that asked for it.
//
// --root runs the edge and agent A from another checkout (`git archive HEAD | tar -x -C DIR`,
// node_modules linked): wrangler dev restarts the Worker's workerd when a file under worker/
// changes, which would end a run on a tree someone is editing. --compare-root adds agent B from a
// second checkout (or --compare-agent-arg: B with other flags) against the same edge; the unprofiled connections alternate between A and B in
// chunks of --chunk, and the report gives B - A. This machine's speed drifts by 2x within an hour
// (the reference loop in the report), so only such paired figures compare two changes.

import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { repoRoot, startEdge, type RunningEdge } from "../e2e/processes.ts";
import { inspectorTarget, startProfile, type RunningProfile } from "./cdp-profiler.ts";
import { assertLocalEdgeAlive, localEdge, type LocalEdge } from "./local-edge.ts";
import { achievedPeriodUs, type CpuProfile } from "./v8-profile.ts";

/** After a pass, the last closes, frames and log lines are still its work: this long is allowed for them. */
const SETTLE_MS = 200;
/** Longest one connection may take before the run is called broken. */
const CONNECTION_TIMEOUT_MS = 10_000;
/** Kernel clock ticks per second for /proc/PID/stat times (USER_HZ). */
const TICKS_PER_SECOND = 100;

const progress = (line: string) => process.stderr.write(`bench:agent-cost: ${line}\n`);

function usage(message: string): never {
  process.stderr.write(`bench:agent-cost: ${message}\n`);
  process.exit(2);
}

type Options = {
  connections: number;
  concurrency: number;
  requestBytes: number;
  responseBytes: number;
  samplingUs: number;
  agentArgs: string[];
  root: string;
  top: number;
  cpuProfDir: string | undefined;
  /** A second agent's checkout, measured against the same edge in alternating chunks. */
  compareRoot: string | undefined;
  /** Flags for agent B alone, after --agent-arg's (the same checkout with another setting: --compare-root may be --root). */
  compareAgentArgs: string[];
  /** Connections per chunk when two agents alternate. */
  chunk: number;
  skipProfile: boolean;
  /** Unrecorded connections per agent first: the JIT, the warm pool's first tunnels. */
  warmUp: number;
  /** Flags for node itself, before the agent's script (V8's, --max-semi-space-size, ...). */
  nodeArgs: string[];
};

/** The command line, checked: a mistake ends the program with one line and exit status 2. */
function parseOptions(): Options {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        connections: { type: "string", default: "1000" },
        concurrency: { type: "string", default: "4" },
        "request-bytes": { type: "string", default: "100" },
        "response-bytes": { type: "string", default: "1024" },
        "sampling-us": { type: "string", default: "100" },
        "agent-arg": { type: "string", multiple: true, default: [] },
        root: { type: "string" },
        top: { type: "string", default: "25" },
        "cpu-prof-dir": { type: "string" },
        "compare-root": { type: "string" },
        "compare-agent-arg": { type: "string", multiple: true, default: [] },
        chunk: { type: "string", default: "100" },
        "skip-profile": { type: "boolean", default: false },
        "warm-up": { type: "string", default: "1000" },
        "node-arg": { type: "string", multiple: true, default: [] },
      },
    }));
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const whole = (name: string, text: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) usage(`--${name} takes a whole number from ${min} to ${max}, not ${text}`);
    return value;
  };
  return {
    connections: whole("connections", values.connections, 1),
    concurrency: whole("concurrency", values.concurrency, 1, 256),
    requestBytes: whole("request-bytes", values["request-bytes"], 1, 65_536),
    responseBytes: whole("response-bytes", values["response-bytes"], 1, 1 << 20),
    samplingUs: whole("sampling-us", values["sampling-us"], 50),
    agentArgs: values["agent-arg"] ?? [],
    root: values.root === undefined ? repoRoot : resolve(values.root),
    top: whole("top", values.top, 1),
    cpuProfDir: values["cpu-prof-dir"],
    compareRoot: values["compare-root"] === undefined ? undefined : resolve(values["compare-root"]),
    chunk: whole("chunk", values.chunk, 1),
    compareAgentArgs: values["compare-agent-arg"] ?? [],
    skipProfile: values["skip-profile"] ?? false,
    warmUp: whole("warm-up", values["warm-up"], 0),
    nodeArgs: values["node-arg"] ?? [],
  };
}

// --- the origin and the client ---------------------------------------------------------------

type Origin = { port: number; close(): Promise<void> };

/** A loopback origin: answers a request of `requestBytes` with `responseBytes`, and ends when the client has. */
async function startOrigin(requestBytes: number, responseBytes: number): Promise<Origin> {
  const response = Buffer.alloc(responseBytes, 0x62);
  const sockets = new Set<Socket>();
  const server: Server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    let receivedBytes = 0;
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      const before = receivedBytes;
      receivedBytes += chunk.byteLength;
      if (before < requestBytes && receivedBytes >= requestBytes) socket.write(response);
    });
    socket.on("end", () => socket.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * One short connection through the proxy: greeting, CONNECT, request, the whole answer, FIN, and
 * the proxy's FIN back (a reset or a short answer is an error: the run is broken).
 */
function oneConnection(proxyPort: number, originPort: number, request: Buffer, responseBytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port: proxyPort, noDelay: true, allowHalfOpen: true });
    const fail = (why: string) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail(`no end within ${CONNECTION_TIMEOUT_MS} ms`), CONNECTION_TIMEOUT_MS);
    let phase: "greeting" | "connect" | "answer" | "end" = "greeting";
    let buffered = Buffer.alloc(0);
    let answerBytes = 0;
    socket.on("error", (error) => fail(`${phase}: ${error.message}`));
    socket.on("connect", () => socket.write(Uint8Array.of(0x05, 0x01, 0x00)));
    socket.on("data", (chunk: Buffer) => {
      if (phase === "answer" || phase === "end") {
        answerBytes += chunk.byteLength;
        if (answerBytes > responseBytes) fail(`${answerBytes} bytes of answer, ${responseBytes} expected`);
        else if (answerBytes === responseBytes) {
          phase = "end";
          socket.end();
        }
        return;
      }
      buffered = Buffer.concat([buffered, chunk]);
      if (phase === "greeting" && buffered.byteLength >= 2) {
        if (buffered[1] !== 0x00) return fail(`SOCKS method 0x${(buffered[1] ?? 0).toString(16)}`);
        buffered = buffered.subarray(2);
        phase = "connect";
        socket.write(Uint8Array.of(0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, originPort >> 8, originPort & 0xff));
      }
      if (phase === "connect" && buffered.byteLength >= 10) {
        if (buffered[1] !== 0x00) return fail(`SOCKS reply 0x${(buffered[1] ?? 0).toString(16)}`);
        if (buffered.byteLength > 10) return fail("bytes came with the SOCKS reply");
        phase = "answer";
        socket.write(request);
      }
    });
    socket.on("end", () => {
      if (phase !== "end") fail(`the proxy ended the connection in phase ${phase}`);
    });
    socket.on("close", (hadError) => {
      clearTimeout(timer);
      if (phase === "end" && !hadError) resolve();
      else reject(new Error(`closed in phase ${phase}${hadError ? " with an error" : ""}`));
    });
  });
}

/** `count` connections, `concurrency` at a time. */
async function runConnections(count: number, options: Options, proxyPort: number, originPort: number): Promise<void> {
  const request = Buffer.alloc(options.requestBytes, 0x61);
  let next = 0;
  const lane = async () => {
    while (next < count) {
      const index = next++;
      try {
        await oneConnection(proxyPort, originPort, request, options.responseBytes);
      } catch (error) {
        throw new Error(`connection ${index + 1} of ${count}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, count) }, lane));
}

// --- the agent --------------------------------------------------------------------------------

type Agent = { pid: number; port: number; inspectorUrl: string; root: string; log(): string; stop(): Promise<void> };

/**
 * The real agent of `root`, with --inspect on a free loopback port (no session until the profiled
 * pass). Its own process group, ended by stop() (SIGTERM, SIGKILL after 5 s).
 */
async function startAgentProcess(edgeUrl: string, token: string, options: Options, root: string, extraArgs: string[]): Promise<Agent> {
  const cli = join(root, "local-agent", "cli", "main.ts");
  const child: ChildProcess = spawn(process.execPath, ["--inspect=127.0.0.1:0", ...options.nodeArgs, cli, "--edge", edgeUrl, "--listen", "127.0.0.1:0", "--bypass", "none", ...options.agentArgs, ...extraArgs], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, EDGESOCKS_TOKEN: token },
    detached: true,
  });
  let stderr = "";
  let stdout = "";
  /** Log lines counted, not kept: a thousand connections write a thousand. */
  let logLines = 0;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      // gone
    }
    const killer = setTimeout(() => {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // gone
        }
      }
    }, 5_000);
    await exited;
    clearTimeout(killer);
  };
  const ready = new Promise<{ port: number; inspectorUrl: string }>((resolve, reject) => {
    let port: number | undefined;
    let inspectorUrl: string | undefined;
    const check = () => {
      if (port !== undefined && inspectorUrl !== undefined) resolve({ port, inspectorUrl });
    };
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /proxy on 127\.0\.0\.1:(\d+) -> edge /.exec(stdout);
      if (match) port = Number(match[1]);
      check();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      const text = chunk.toString();
      for (let at = text.indexOf("\n"); at >= 0; at = text.indexOf("\n", at + 1)) logLines++;
      if (stderr.length < 64 * 1024) stderr += text;
      const match = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/[\w-]+)/.exec(stderr);
      if (match?.[1]) inspectorUrl = match[1];
      check();
    });
    child.once("exit", (code) => reject(new Error(`agent exited ${code}: ${stderr}`)));
  });
  try {
    const { port, inspectorUrl } = await ready;
    return { pid: child.pid ?? 0, port, inspectorUrl, root, log: () => `${logLines} lines; first: ${stderr.slice(0, 2000)}`, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

// --- CPU from /proc ---------------------------------------------------------------------------

type CpuTimes = { userSeconds: number; systemSeconds: number };

/** User and system CPU seconds `pid` (all its threads) has used so far. */
function cpuTimes(pid: number): CpuTimes {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command name.
  return { userSeconds: Number(after[11]) / TICKS_PER_SECOND, systemSeconds: Number(after[12]) / TICKS_PER_SECOND };
}

/** CPU seconds (user plus system) of each of `pid`'s threads so far, summed by thread name (node's main thread is "node"). */
function threadTimes(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = tid === String(pid) ? "main thread" : stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")).replace(/\d+$/, "N");
      const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      byName.set(name, (byName.get(name) ?? 0) + (Number(after[11]) + Number(after[12])) / TICKS_PER_SECOND);
    } catch {
      // the thread ended while we looked
    }
  }
  return byName;
}

/** Voluntary context switches of `pid`'s main thread: a count of its event-loop wake-ups. */
function wakeUps(pid: number): number {
  const match = /voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(match?.[1] ?? 0);
}

// --- the profile, bottom-up -------------------------------------------------------------------

type Node = CpuProfile["nodes"][number];

/** A module a sample's leaf frame belongs to. */
function moduleOf(frame: Node["callFrame"], root: string): string {
  const { url, functionName } = frame;
  if (functionName === "(garbage collector)") return "GC";
  if (functionName === "(program)" || functionName === "(root)") return "(program: native, no JS on the stack)";
  if (functionName === "(idle)") return "(idle)";
  if (url.includes("/node_modules/ws/")) return "ws";
  if (url.includes("/node_modules/")) return `node_modules/${url.split("/node_modules/")[1]?.split("/")[0] ?? "?"}`;
  const ours = ourFile(url, root);
  if (ours) return ours === "local-agent/log.ts" ? "logging (local-agent/log.ts)" : `ours: ${ours}`;
  if (/^node:internal\/timers|^node:timers/.test(url)) return "timers";
  if (/^node:(internal\/)?(net|stream_base_commons|tcp_wrap|dns)|^node:internal\/net/.test(url)) return "net";
  if (/^node:(internal\/)?(streams|_stream|stream)/.test(url)) return "streams";
  if (/^node:(internal\/)?(http|_http)/.test(url)) return "http (ws's upgrade)";
  if (/^node:(internal\/)?(events|event_target)/.test(url)) return "events";
  if (/^node:internal\/(process\/task_queues|async_hooks|process\/promises)/.test(url)) return "ticks and microtasks";
  if (/^node:(internal\/)?(buffer|crypto|util|url|internal\/url|internal\/util)/.test(url)) return "buffer, crypto, util, url";
  if (url.startsWith("node:")) return `node: ${url.slice(5)}`;
  if (url === "") return "(native)";
  return url;
}

/** `url` as a path under `root` when it is one of this project's files. */
function ourFile(url: string, root: string): string | undefined {
  const path = url.startsWith("file://") ? decodeURIComponent(url.slice(7)) : url;
  const base = root.endsWith("/") ? root : `${root}/`;
  if (!path.startsWith(base)) return undefined;
  const relative = path.slice(base.length);
  return relative.startsWith("local-agent/") || relative.startsWith("worker/") ? relative : undefined;
}

/** Samples that are not the script's CPU: waiting, or the runtime's C++ with no JavaScript on the stack. */
const NOT_CPU_OF_JAVASCRIPT: ReadonlySet<string> = new Set(["(idle)", "(program)", "(root)"]);

type Bottom = {
  samplingPeriodUs: number;
  cpuMs: number;
  byModule: Map<string, number>;
  byFunction: Map<string, number>;
  byOurCaller: Map<string, number>;
};

/**
 * Self time by the leaf's module and function, and by the nearest frame of ours on the stack
 * (a native leaf takes its caller's module). Milliseconds, each sample counted as one sampling
 * period; (idle) and (program) are not CPU of JavaScript and are reported apart.
 */
function bottomUp(profile: CpuProfile, root: string, label: (frame: Node["callFrame"]) => string = (frame) => ourLabel(frame, root)): Bottom {
  const samplingPeriodUs = achievedPeriodUs(profile.timeDeltas ?? []);
  const nodeById = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentById = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentById.set(child, node.id);
  const byModule = new Map<string, number>();
  const byFunction = new Map<string, number>();
  const byOurCaller = new Map<string, number>();
  const add = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + samplingPeriodUs / 1000);
  let cpuMs = 0;
  for (const id of profile.samples ?? []) {
    const node = nodeById.get(id);
    if (!node) continue;
    let frame = node.callFrame;
    // A native leaf ("writev", "(native)") is charged to the module of the script that called it.
    let moduleFrame = frame;
    for (let at: number | undefined = id; moduleFrame.url === "" && !moduleFrame.functionName.startsWith("(") && at !== undefined; ) {
      at = parentById.get(at);
      const parent = at === undefined ? undefined : nodeById.get(at);
      if (!parent) break;
      moduleFrame = parent.callFrame;
    }
    const module = frame.url === "" && !frame.functionName.startsWith("(") ? moduleOf(moduleFrame, root) : moduleOf(frame, root);
    add(byModule, module);
    if (NOT_CPU_OF_JAVASCRIPT.has(frame.functionName) && frame.url === "") continue;
    cpuMs += samplingPeriodUs / 1000;
    add(byFunction, `${frame.functionName || "(anonymous)"} ${frame.url ? `${shortUrl(frame.url, root)}:${frame.lineNumber + 1}` : `[native, in ${moduleOf(moduleFrame, root)}]`}`);
    let caller = "(no frame of ours: event loop, ws, net)";
    for (let at: number | undefined = id; at !== undefined; at = parentById.get(at)) {
      const candidate = nodeById.get(at)?.callFrame;
      if (candidate && ourFile(candidate.url, root)) {
        caller = label(candidate);
        break;
      }
      frame = candidate ?? frame;
    }
    add(byOurCaller, caller);
  }
  return { samplingPeriodUs, cpuMs, byModule, byFunction, byOurCaller };
}

function ourLabel(frame: Node["callFrame"], root: string): string {
  return `${frame.functionName || "(anonymous)"} ${shortUrl(frame.url, root)}:${frame.lineNumber + 1}`;
}

function shortUrl(url: string, root: string): string {
  const ours = ourFile(url, root);
  if (ours) return ours;
  if (url.includes("/node_modules/")) return url.slice(url.lastIndexOf("/node_modules/") + 14);
  return url.replace(/^file:\/\/.*\//, "");
}

/** The workerd profile: its script is wrangler's bundle, so a function is named by name and line only. */
function workerLabel(frame: Node["callFrame"]): string {
  return `${frame.functionName || "(anonymous)"} ${frame.url.split("/").pop() ?? ""}:${frame.lineNumber + 1}`;
}

/** The workerd profile bottom-up: everything in the bundle counts as one module, so by function. */
function workerBottomUp(profile: CpuProfile): { samplingPeriodUs: number; cpuMs: number; byKind: Map<string, number>; byFunction: Map<string, number> } {
  const samplingPeriodUs = achievedPeriodUs(profile.timeDeltas ?? []);
  const nodeById = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentById = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentById.set(child, node.id);
  const byKind = new Map<string, number>();
  const byFunction = new Map<string, number>();
  const add = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + samplingPeriodUs / 1000);
  let cpuMs = 0;
  for (const id of profile.samples ?? []) {
    const frame = nodeById.get(id)?.callFrame;
    if (!frame) continue;
    if (NOT_CPU_OF_JAVASCRIPT.has(frame.functionName) && frame.url === "") {
      add(byKind, frame.functionName);
      continue;
    }
    add(byKind, frame.functionName === "(garbage collector)" ? "(garbage collector)" : "JavaScript (Workers APIs it calls included)");
    cpuMs += samplingPeriodUs / 1000;
    let label = workerLabel(frame);
    if (frame.url === "") {
      const parentId = parentById.get(id);
      const parent = parentId === undefined ? undefined : nodeById.get(parentId)?.callFrame;
      label = `${frame.functionName || "(native)"} in ${parent ? workerLabel(parent) : "?"}`;
    }
    add(byFunction, label);
  }
  return { samplingPeriodUs, cpuMs, byKind, byFunction };
}

// --- the run ---------------------------------------------------------------------------------

/** What one agent's connections cost, summed over its chunks. */
type Tally = { connections: number; agent: CpuTimes; worker: CpuTimes; wallSeconds: number; agentWakeUps: number; agentThreads: Map<string, number> };

function emptyTally(): Tally {
  return { connections: 0, agent: { userSeconds: 0, systemSeconds: 0 }, worker: { userSeconds: 0, systemSeconds: 0 }, wallSeconds: 0, agentWakeUps: 0, agentThreads: new Map() };
}

/** Runs `count` connections through `agent` and adds what they cost, the agent's and the Worker's, to `tally`. */
async function chunk(tally: Tally, count: number, options: Options, agent: Agent, local: LocalEdge, originPort: number): Promise<void> {
  const agentBefore = cpuTimes(agent.pid);
  const workerBefore = cpuTimes(local.workerPid);
  const wakeUpsBefore = wakeUps(agent.pid);
  const threadsBefore = threadTimes(agent.pid);
  const started = performance.now();
  await runConnections(count, options, agent.port, originPort);
  tally.wallSeconds += (performance.now() - started) / 1000;
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  assertLocalEdgeAlive(local);
  const agentAfter = cpuTimes(agent.pid);
  const workerAfter = cpuTimes(local.workerPid);
  tally.connections += count;
  tally.agent.userSeconds += agentAfter.userSeconds - agentBefore.userSeconds;
  tally.agent.systemSeconds += agentAfter.systemSeconds - agentBefore.systemSeconds;
  tally.worker.userSeconds += workerAfter.userSeconds - workerBefore.userSeconds;
  tally.worker.systemSeconds += workerAfter.systemSeconds - workerBefore.systemSeconds;
  tally.agentWakeUps += wakeUps(agent.pid) - wakeUpsBefore;
  for (const [name, seconds] of threadTimes(agent.pid)) tally.agentThreads.set(name, (tally.agentThreads.get(name) ?? 0) + seconds - (threadsBefore.get(name) ?? 0));
}

/**
 * CPU milliseconds of a fixed loop in this process: how fast the machine is right now. On this
 * shared machine the same run measured 0.79 and 1.9 ms of agent CPU per connection an hour apart,
 * with the loop's time 2.4 times longer in the second: compare figures across runs only with it.
 */
function referenceLoopMs(): number {
  const before = process.cpuUsage();
  let x = 0;
  for (let i = 0; i < 50_000_000; i++) x = (x * 31 + i) | 0;
  const used = process.cpuUsage(before);
  if (x === 0.5) progress("unreachable"); // keeps x alive
  return (used.user + used.system) / 1000;
}

function table(title: string, map: Map<string, number>, perUnit: number, top: number): string[] {
  const total = [...map.values()].reduce((sum, ms) => sum + ms, 0);
  const rows = [...map].sort((a, b) => b[1] - a[1]).slice(0, top);
  return [
    `${title}`,
    "| ms per connection | share | what |",
    "| ---: | ---: | --- |",
    ...rows.map(([name, ms]) => `| ${(ms / perUnit).toFixed(3)} | ${((100 * ms) / total).toFixed(1)}% | ${name.replaceAll("|", "\\|")} |`),
    "",
  ];
}

function tallyLines(name: string, tally: Tally): string[] {
  const n = tally.connections;
  const ms = (seconds: number) => ((seconds * 1000) / n).toFixed(3);
  const cpu = (times: CpuTimes) => `${ms(times.userSeconds + times.systemSeconds)} ms CPU per connection (user ${ms(times.userSeconds)}, system ${ms(times.systemSeconds)})`;
  const threads = [...tally.agentThreads]
    .filter(([, seconds]) => seconds > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([thread, seconds]) => `${thread} ${ms(seconds)}`)
    .join(", ");
  return [
    `  ${name}: ${n} connections, ${tally.wallSeconds.toFixed(2)} s (${(n / tally.wallSeconds).toFixed(0)} connections/s)`,
    `    agent: ${cpu(tally.agent)}; by thread: ${threads}; main-thread wake-ups ${(tally.agentWakeUps / n).toFixed(1)} per connection`,
    `    workerd (the Worker's): ${cpu(tally.worker)}`,
  ];
}

/** The agent's and the Worker's profiles over `connections` through `agent`, as report lines. */
async function profiledLines(name: string, options: Options, agent: Agent, local: LocalEdge, workerInspectorPort: number, originPort: number): Promise<string[]> {
  const agentProfiler: RunningProfile = await startProfile(agent.inspectorUrl, options.samplingUs);
  // workerd's sampler overshoots short periods (cdp-profiler.ts, stream-cost.ts): 250 µs or more.
  const workerProfiler: RunningProfile = await startProfile(await inspectorTarget(workerInspectorPort), Math.max(options.samplingUs, 250));
  const tally = emptyTally();
  await chunk(tally, options.connections, options, agent, local, originPort);
  const agentProfile = await agentProfiler.stop();
  const workerProfile = await workerProfiler.stop();
  if (options.cpuProfDir !== undefined) {
    mkdirSync(options.cpuProfDir, { recursive: true });
    writeFileSync(join(options.cpuProfDir, `${name}-agent.cpuprofile`), JSON.stringify(agentProfile));
    writeFileSync(join(options.cpuProfDir, `${name}-worker.cpuprofile`), JSON.stringify(workerProfile));
    // The Worker's profile names lines of wrangler's bundle, which wrangler deletes when it stops.
    const tmp = join(options.root, ".wrangler", "tmp");
    for (const dir of existsSync(tmp) ? readdirSync(tmp) : []) {
      if (existsSync(join(tmp, dir, "index.js"))) copyFileSync(join(tmp, dir, "index.js"), join(options.cpuProfDir, `worker-bundle-${dir}.js`));
    }
  }
  const n = options.connections;
  const agentBottom = bottomUp(agentProfile, agent.root);
  const workerBottom = workerBottomUp(workerProfile);
  return [
    `## ${name}: profiled (${n} connections; CPU from /proc while profiled: agent ${(((tally.agent.userSeconds + tally.agent.systemSeconds) * 1000) / n).toFixed(3)} ms, workerd ${(((tally.worker.userSeconds + tally.worker.systemSeconds) * 1000) / n).toFixed(3)} ms per connection)`,
    "",
    `The agent's V8 profile (sampling every ${agentBottom.samplingPeriodUs} µs achieved): JavaScript, GC and the natives JavaScript called ${(agentBottom.cpuMs / n).toFixed(3)} ms per connection; the rest of the agent's CPU is libuv, the kernel (loopback TCP), V8's threads and the sampler itself.`,
    "",
    ...table("Agent self time by module (a native leaf charged to its caller's module):", agentBottom.byModule, n, options.top),
    ...table("Agent self time by the nearest function of ours on the stack (what Node, ws and timers do on our behalf):", agentBottom.byOurCaller, n, options.top),
    ...table("Agent self time by function:", agentBottom.byFunction, n, options.top),
    `The Worker's V8 profile (sampling every ${workerBottom.samplingPeriodUs} µs achieved): JavaScript ${(workerBottom.cpuMs / n).toFixed(3)} ms per connection.`,
    "",
    ...table("Worker samples by kind:", workerBottom.byKind, n, options.top),
    ...table("Worker JavaScript self time by function (wrangler's bundle; --cpu-prof-dir keeps it):", workerBottom.byFunction, n, options.top),
  ];
}

async function main(): Promise<void> {
  const options = parseOptions();
  const cleanups: (() => Promise<void>)[] = [];
  const cleanUp = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((error: unknown) => progress(`cleanup: ${error instanceof Error ? error.message : String(error)}`));
    cleanups.length = 0;
  };
  for (const [signal, status] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    process.once(signal, () => void cleanUp().finally(() => process.exit(status)));
  }
  try {
    const loopBeforeMs = referenceLoopMs();
    const origin = await startOrigin(options.requestBytes, options.responseBytes);
    cleanups.push(origin.close);
    const edge: RunningEdge = await startEdge({}, options.root);
    cleanups.push(edge.stop);
    const local = await localEdge(edge, "worker");
    const comparing = options.compareRoot !== undefined || options.compareAgentArgs.length > 0;
    const roots = [options.root, ...(comparing ? [options.compareRoot ?? options.root] : [])];
    const agents: { name: string; agent: Agent; tally: Tally }[] = [];
    for (const [index, root] of roots.entries()) {
      const agent = await startAgentProcess(local.agentEdgeUrl, edge.token, options, root, index === 0 ? [] : options.compareAgentArgs);
      cleanups.push(agent.stop);
      agents.push({ name: index === 0 ? "A" : "B", agent, tally: emptyTally() });
      progress(`agent ${index === 0 ? "A" : "B"} (${root}): pid ${agent.pid}, port ${agent.port}`);
    }
    progress(`the Worker's workerd ${local.workerPid} at ${local.agentEdgeUrl}`);
    // The agents' start-up probe and pool fill run right after their ready lines.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    for (const { agent } of agents) if (options.warmUp > 0) await runConnections(options.warmUp, options, agent.port, origin.port);

    // Unprofiled, in chunks that alternate between the agents (A B B A ...), so a machine that
    // speeds up or slows down during the run (it does, here) weighs on both alike.
    const chunkCount = agents.length === 1 ? 1 : Math.max(2, Math.round(options.connections / options.chunk));
    for (let index = 0; index < chunkCount; index++) {
      const count = Math.round(((index + 1) * options.connections) / chunkCount) - Math.round((index * options.connections) / chunkCount);
      const order = index % 2 === 0 ? agents : [...agents].reverse();
      for (const entry of order) await chunk(entry.tally, count, options, entry.agent, local, origin.port);
    }
    progress("unprofiled passes done");

    const wranglerArgs = readFileSync(`/proc/${edge.wranglerPid}/cmdline`, "utf8").split("\0");
    const workerInspectorPort = Number(wranglerArgs[wranglerArgs.indexOf("--inspector-port") + 1]);
    const profiled: string[] = [];
    if (!options.skipProfile) for (const { name, agent } of agents) profiled.push(...(await profiledLines(name, options, agent, local, workerInspectorPort, origin.port)));
    const loopAfterMs = referenceLoopMs();

    const model = cpus()[0]?.model.trim() ?? "unknown CPU";
    const lines = [
      `Command: \`npm run bench:agent-cost -- ${process.argv.slice(2).join(" ")}\`. Edge from ${options.root}. ${cpus().length} cores (${model}), Node ${process.version}. Machine speed: the reference loop took ${loopBeforeMs.toFixed(0)} ms of CPU before and ${loopAfterMs.toFixed(0)} ms after (lower is faster; figures of runs with different loop times are not comparable).`,
      `${options.connections} connections per agent after ${options.warmUp} unrecorded, ${options.concurrency} at a time: SOCKS5 CONNECT to a loopback origin, ${options.requestBytes} B up, ${options.responseBytes} B down, FIN both ways. Agents: defaults, --bypass none ${options.agentArgs.join(" ")}; edge: the Worker's own workerd (${local.agentEdgeUrl}).`,
      ...agents.map(({ name, agent }) => `Agent ${name}: ${agent.root}${name === "B" && options.compareAgentArgs.length > 0 ? ` ${options.compareAgentArgs.join(" ")}` : ""}`),
      "",
      `## Unprofiled, from /proc${agents.length > 1 ? ` (${chunkCount} chunks per agent, alternating)` : ""}`,
      ...agents.flatMap(({ name, tally }) => tallyLines(name, tally)),
      ...(agents.length > 1 ? [ratioLine(agents[0]?.tally, agents[1]?.tally)] : []),
      "",
      ...profiled,
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  } catch (error) {
    progress(`failed: ${error instanceof Error ? error.message : String(error)}`);
    throw error;
  } finally {
    await cleanUp();
  }
}

/** B against A, per connection: the agents' CPU and the Worker's while each ran. */
function ratioLine(a: Tally | undefined, b: Tally | undefined): string {
  if (!a || !b) return "";
  const per = (tally: Tally, times: CpuTimes) => ((times.userSeconds + times.systemSeconds) * 1000) / tally.connections;
  const agentA = per(a, a.agent);
  const agentB = per(b, b.agent);
  const workerA = per(a, a.worker);
  const workerB = per(b, b.worker);
  return `  B - A: agent ${(agentB - agentA).toFixed(3)} ms per connection (B/A ${(agentB / agentA).toFixed(3)}); workerd ${(workerB - workerA).toFixed(3)} ms (B/A ${(workerB / workerA).toFixed(3)})`;
}

void main().catch(() => process.exit(1));
