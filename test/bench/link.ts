// `npm run bench:link`: single streams over an emulated bottleneck link (link-relay.ts: a rate,
// a bounded queue and a one-way delay each way), every byte checked, for several RTTs and rates.
//
//   A (edgesocks): client → agent (loopback) → link → the Worker's own workerd → origin
//   B (Dante):     client → link → Dante → origin
//   link alone:    client → link → origin, the relay's own accuracy (should reach ≥ 0.95 of the rate)
//
//   npm run bench:link -- [--rtts 20,40,100] [--rates 12.5,50] [--bytes N] [--rounds N] [--queue-bytes N]
//   npm run bench:link -- --concurrent 60 [--rtts 40] [--rates 12.5] [--bytes N] [--rounds N]
//
// Rates are in MB/s (10^6 bytes); --bytes defaults to 4 s at each rate. MB/s is timed where the
// bytes arrive, from the first to the last, so the request's trip is not charged but a window's
// ramp is. Each edgesocks transfer gets a fresh agent; its and the Worker's workerd's peak RSS
// are sampled during the run, and so is the flow-control window: a counter named like
// `peakWindowBytes` in the edge's GET /dev/counters (EDGESOCKS_DEV_COUNTERS) or in the agent's
// SIGUSR2 line ("peak window N bytes"), "-" when neither has one, and the edge's
// downloadUncreditedBytes (download bytes sent and not yet credited back: the window in use).
// The edge's peaks are started over (GET /dev/counters?reset=peaks) before each edgesocks
// transfer, so both sides' figures are the run's own; "peak window ÷ BDP" divides it by rate × RTT.
//
// --concurrent N: N checked downloads at once, sharing one link (the relay's `shared` mode: the
// agent opens a tunnel, so a TCP connection, per stream, and a per-connection link would give
// each its own rate), through edgesocks, Dante and the link alone; each of rate × 8 s ÷ N bytes
// unless --bytes says. MB/s is the aggregate, from the first byte of any download to the last of
// all. During edgesocks' runs the edge's counters are read every 100 ms: the largest
// uploadHeldBytes + downloadUncreditedBytes, its peakBudgetInUseBytes, against budgetBytes and
// the per-stream floors the budget may be exceeded by (docs/protocol.md §5, Budgets).

import { type Server, type Socket } from "node:net";
import { cpus, release, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { startTcpOrigin, type Listening } from "../e2e/origins.ts";
import { startAgent, startEdge, type RunningAgent, type RunningEdge } from "../e2e/processes.ts";
import { MIN_QUEUE_BYTES, startLinkRelay, type LinkRelay, type LinkShape } from "./link-relay.ts";
import { assertLocalEdgeAlive, localEdge, type LocalEdge } from "./local-edge.ts";
import { Mode, PATTERN } from "./origin.ts";
import { ensurePeerPackages, startDante, type Peer } from "./peers.ts";
import { processTree, totalRssBytes } from "./proc-stats.ts";
import { openConnection, type Route } from "./workloads.ts";

const MB = 1e6;
const MIB = 1024 * 1024;
const DIRECTIONS = ["download", "upload"] as const;
type Direction = (typeof DIRECTIONS)[number];
const CONTENDERS = ["link alone", "edgesocks", "dante"] as const;
type ContenderName = (typeof CONTENDERS)[number];
/** Seconds of transfer at the link's rate when --bytes is not given: long enough for a steady state. */
const DEFAULT_TRANSFER_SECONDS = 4;
/** How often RSS is read from /proc during a run. */
const RSS_SAMPLE_MS = 100;
/** How often the edge's counters are fetched and the agent signalled during a run (each costs a request or a log line). */
const WINDOW_SAMPLE_MS = 250;
/** A mode byte and an 8-byte length: the download and upload requests of origin.ts's protocol. */
const REQUEST_HEAD_BYTES = 9;
/** The upload origin's answer: intact bytes (u64), first and last arrival (f64 ms, this process's clock), first read's bytes (u64). */
const UPLOAD_ANSWER_BYTES = 32;

const progress = (line: string) => process.stderr.write(`bench:link: ${line}\n`);

function usage(message: string): never {
  process.stderr.write(`bench:link: ${message}\n`);
  process.exit(2);
}

type Options = { rttsMs: number[]; ratesMBps: number[]; bytes: number | undefined; rounds: number; queueBytes: number | undefined; concurrent: number | undefined };

/** The command line, checked: a mistake ends the program with one line and exit status 2. */
function parseOptions(): Options {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        rtts: { type: "string" },
        rates: { type: "string" },
        bytes: { type: "string" },
        rounds: { type: "string", default: "3" },
        "queue-bytes": { type: "string" },
        concurrent: { type: "string" },
      },
    }));
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const list = (option: string, text: string, atLeast: number) => {
    const numbers = text.split(",").map(Number);
    if (numbers.length === 0 || numbers.some((number) => !Number.isFinite(number) || number < atLeast)) usage(`--${option} takes a comma-separated list of numbers of ${atLeast} or more, not ${text}`);
    return numbers;
  };
  const whole = (option: string, text: string | undefined, atLeast: number) => {
    if (text === undefined) return undefined;
    const number = Number(text);
    if (!Number.isInteger(number) || number < atLeast) usage(`--${option} takes a whole number of ${atLeast} or more (1e8 is fine), not ${text}`);
    return number;
  };
  const concurrent = whole("concurrent", values.concurrent, 1);
  // A concurrent run is one shape by default: the matrix's middle RTT and its slower rate.
  return {
    concurrent,
    rttsMs: list("rtts", values.rtts ?? (concurrent === undefined ? "20,40,100" : "40"), 0),
    ratesMBps: list("rates", values.rates ?? (concurrent === undefined ? "12.5,50" : "12.5"), 0.1),
    bytes: whole("bytes", values.bytes, 1),
    rounds: whole("rounds", values.rounds, 1) ?? 3,
    queueBytes: whole("queue-bytes", values["queue-bytes"], MIN_QUEUE_BYTES),
  };
}

/** Offset in `chunk` of its first byte that differs from PATTERN at stream offset `streamOffset`; -1 if none does. */
function firstMismatch(chunk: Buffer, streamOffset: number): number {
  for (let done = 0; done < chunk.byteLength; ) {
    const at = (streamOffset + done) % PATTERN.byteLength;
    const length = Math.min(chunk.byteLength - done, PATTERN.byteLength - at);
    if (!chunk.subarray(done, done + length).equals(PATTERN.subarray(at, at + length))) return done;
    done += length;
  }
  return -1;
}

/** Where bytes arrived: the first read's size and time, the last read's time (performance.now() ms). */
type Arrival = { firstAtMs: number; lastAtMs: number; firstReadBytes: number };

/** MB/s from the first arrival to the last: the first read's bytes came before the clock started. */
const steadyMBps = (totalBytes: number, arrival: Arrival) => (totalBytes - arrival.firstReadBytes) / MB / ((arrival.lastAtMs - arrival.firstAtMs) / 1000);

/**
 * origin.ts's download and upload protocol ('D' or 'U' and an 8-byte length), PATTERN repeated;
 * an upload is checked here as it arrives and answered, once all of it has, with
 * UPLOAD_ANSWER_BYTES: the bytes intact before the first wrong one, and when they arrived.
 */
async function startCheckedOrigin(): Promise<Listening<Server>> {
  const sockets = new Set<Socket>();
  const origin = await startTcpOrigin((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    let head = Buffer.alloc(0);
    const onHead = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.byteLength < REQUEST_HEAD_BYTES) return;
      socket.off("data", onHead);
      const totalBytes = Number(head.readBigUInt64BE(1));
      if (head[0] === Mode.Download) void sendPattern(socket, totalBytes);
      else if (head[0] === Mode.Upload) checkUpload(socket, totalBytes, head.subarray(REQUEST_HEAD_BYTES));
      else socket.resetAndDestroy();
    };
    socket.on("data", onHead);
  });
  return {
    ...origin,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await origin.close();
    },
  };
}

/** Resolves at the socket's next 'drain', or its close (then the caller's next write fails). */
function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done).off("close", done);
      resolve();
    };
    socket.on("drain", done).on("close", done);
  });
}

async function sendPattern(socket: Socket, totalBytes: number): Promise<void> {
  for (let remaining = totalBytes; remaining > 0 && !socket.destroyed; ) {
    const chunk = remaining >= PATTERN.byteLength ? PATTERN : PATTERN.subarray(0, remaining);
    remaining -= chunk.byteLength;
    if (!socket.write(chunk)) await drained(socket);
  }
  socket.end();
}

function checkUpload(socket: Socket, expectedBytes: number, early: Buffer): void {
  let receivedBytes = 0;
  let intactBytes = 0;
  let arrival: Arrival | undefined;
  const take = (data: Buffer) => {
    if (data.byteLength === 0) return;
    const nowMs = performance.now();
    arrival ??= { firstAtMs: nowMs, lastAtMs: nowMs, firstReadBytes: data.byteLength };
    arrival.lastAtMs = nowMs;
    const mismatch = intactBytes === receivedBytes ? firstMismatch(data, receivedBytes) : 0;
    intactBytes += mismatch === -1 ? data.byteLength : mismatch;
    receivedBytes += data.byteLength;
    if (receivedBytes < expectedBytes || socket.writableEnded) return;
    const answer = Buffer.alloc(UPLOAD_ANSWER_BYTES);
    answer.writeBigUInt64BE(BigInt(intactBytes), 0);
    answer.writeDoubleBE(arrival.firstAtMs, 8);
    answer.writeDoubleBE(arrival.lastAtMs, 16);
    answer.writeBigUInt64BE(BigInt(arrival.firstReadBytes), 24);
    socket.end(answer);
  };
  socket.on("data", take);
  take(early);
}

/** Fails a transfer that takes longer than this: at 5% of the link's rate, plus 30 s. */
const transferTimeoutMs = (totalBytes: number, rateMBps: number) => 30_000 + (totalBytes / (rateMBps * MB * 0.05)) * 1000;

/** Runs `work` on a fresh connection through `route`; the socket is destroyed after, and at `timeoutMs`. */
async function withConnection<T>(route: Route, timeoutMs: number, work: (socket: Socket) => Promise<T>): Promise<T> {
  const socket = await openConnection(route);
  const timer = setTimeout(() => socket.destroy(new Error(`no end within ${(timeoutMs / 1000).toFixed(0)} s`)), timeoutMs);
  try {
    return await work(socket);
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}

/** Downloads `totalBytes` through `route`, checking each byte; resolves with the MB/s they arrived at. */
async function checkedDownload(route: Route, totalBytes: number, timeoutMs: number): Promise<number> {
  return steadyMBps(totalBytes, await checkedDownloadArrival(route, totalBytes, timeoutMs));
}

/** Downloads `totalBytes` through `route`, checking each byte; resolves with when they arrived. */
function checkedDownloadArrival(route: Route, totalBytes: number, timeoutMs: number): Promise<Arrival> {
  return withConnection(route, timeoutMs, async (socket) => {
    const request = Buffer.alloc(REQUEST_HEAD_BYTES);
    request[0] = Mode.Download;
    request.writeBigUInt64BE(BigInt(totalBytes), 1);
    let receivedBytes = 0;
    let arrival: Arrival | undefined;
    await new Promise<void>((resolve, reject) => {
      socket.on("data", (chunk: Buffer) => {
        const nowMs = performance.now();
        arrival ??= { firstAtMs: nowMs, lastAtMs: nowMs, firstReadBytes: chunk.byteLength };
        arrival.lastAtMs = nowMs;
        const mismatch = firstMismatch(chunk, receivedBytes);
        if (mismatch >= 0) reject(new Error(`download: corrupt byte at offset ${receivedBytes + mismatch}`));
        receivedBytes += chunk.byteLength;
      });
      socket.once("end", resolve);
      socket.once("error", reject);
      socket.write(request);
    });
    if (receivedBytes !== totalBytes || arrival === undefined) throw new Error(`download: ${receivedBytes} of ${totalBytes} bytes arrived, then a clean end`);
    return arrival;
  });
}

/** Uploads `totalBytes` through `route` to the checking origin; resolves with the MB/s they arrived there at. */
function checkedUpload(route: Route, totalBytes: number, timeoutMs: number): Promise<number> {
  return withConnection(route, timeoutMs, async (socket) => {
    const answer = new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      socket.once("end", () => resolve(Buffer.concat(chunks)));
      socket.once("error", reject);
    });
    const request = Buffer.alloc(REQUEST_HEAD_BYTES);
    request[0] = Mode.Upload;
    request.writeBigUInt64BE(BigInt(totalBytes), 1);
    socket.write(request);
    for (let remaining = totalBytes; remaining > 0; ) {
      const chunk = remaining >= PATTERN.byteLength ? PATTERN : PATTERN.subarray(0, remaining);
      remaining -= chunk.byteLength;
      if (!socket.write(chunk)) await drained(socket);
      if (socket.destroyed) break;
    }
    const bytes = await answer;
    if (bytes.byteLength !== UPLOAD_ANSWER_BYTES) throw new Error(`upload: the origin answered ${bytes.byteLength} bytes, not ${UPLOAD_ANSWER_BYTES}`);
    const intactBytes = Number(bytes.readBigUInt64BE(0));
    if (intactBytes !== totalBytes) throw new Error(`upload: ${intactBytes} of ${totalBytes} bytes arrived intact`);
    return steadyMBps(totalBytes, { firstAtMs: bytes.readDoubleBE(8), lastAtMs: bytes.readDoubleBE(16), firstReadBytes: Number(bytes.readBigUInt64BE(24)) });
  });
}

/**
 * Peaks seen while an edgesocks transfer runs; undefined where nothing reported one. Both sides'
 * peakWindowBytes are this run's: the agent is fresh for each transfer, and the edge's peaks are
 * started over before it.
 */
type Peaks = { agentRssBytes: number; workerdRssBytes: number; windowBytes: number | undefined; uncreditedBytes: number | undefined };

/** The largest number under a key named like peakWindowBytes, anywhere in `value`. */
function peakWindowIn(value: unknown): number | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  let peak: number | undefined;
  for (const [key, inner] of Object.entries(value)) {
    const found = typeof inner === "number" && /^peak_?window_?bytes$/i.test(key) ? inner : peakWindowIn(inner);
    if (found !== undefined) peak = Math.max(peak ?? found, found);
  }
  return peak;
}

/** A window count in the agent's SIGUSR2 line ("peakWindowBytes=N", "peak window N bytes"), if it has one. */
const AGENT_PEAK_WINDOW = /peak[ _]?window(?:[ _]?bytes)?\D{0,3}(\d+)/gi;

const maxOf = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));

/** The edge's GET /dev/counters, undefined if it did not answer; `resetPeaks` starts its peaks over after the answer. */
function fetchCounters(local: LocalEdge, token: string, resetPeaks = false): Promise<Record<string, unknown> | undefined> {
  return fetch(`${local.agentEdgeUrl}/dev/counters${resetPeaks ? "?reset=peaks" : ""}`, { headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(2_000) })
    .then(async (response) => (response.ok ? ((await response.json()) as Record<string, unknown>) : undefined))
    .catch(() => undefined); // a sample lost is a sample fewer, not a failed run
}

/** Starts the edge's peaks over, or fails: a run's peaks would otherwise be mixed with the runs before it. */
async function resetEdgePeaks(local: LocalEdge, token: string): Promise<void> {
  if ((await fetchCounters(local, token, true)) === undefined) throw new Error("the edge's GET /dev/counters?reset=peaks did not answer (EDGESOCKS_DEV_COUNTERS=1 and the token are needed)");
}

/** Samples RSS, the edge's counters and the agent's hold line until the function returned is called, which resolves with the peaks. */
async function samplePeaks(agent: RunningAgent, local: LocalEdge, token: string): Promise<() => Promise<Peaks>> {
  const peaks: Peaks = { agentRssBytes: 0, workerdRssBytes: 0, windowBytes: undefined, uncreditedBytes: undefined };
  let edgeWindow: number | undefined;
  const agentPids = processTree(agent.pid);
  const logStart = agent.log().length;
  const sampleRss = () => {
    peaks.agentRssBytes = Math.max(peaks.agentRssBytes, totalRssBytes(agentPids));
    peaks.workerdRssBytes = Math.max(peaks.workerdRssBytes, totalRssBytes([local.workerPid]));
  };
  await resetEdgePeaks(local, token);
  let counting: Promise<void> = Promise.resolve();
  const sampleWindows = () => {
    try {
      process.kill(agent.pid, "SIGUSR2");
    } catch {
      // the agent has gone: the transfer fails and says so
    }
    counting = fetchCounters(local, token).then((counters) => {
      edgeWindow = maxOf(edgeWindow, peakWindowIn(counters));
      if (typeof counters?.downloadUncreditedBytes === "number") peaks.uncreditedBytes = maxOf(peaks.uncreditedBytes, counters.downloadUncreditedBytes);
    });
  };
  sampleRss();
  const rssTimer = setInterval(sampleRss, RSS_SAMPLE_MS);
  const windowTimer = setInterval(sampleWindows, WINDOW_SAMPLE_MS);
  return async () => {
    clearInterval(rssTimer);
    clearInterval(windowTimer);
    sampleRss();
    await counting;
    sampleWindows();
    await counting;
    await new Promise((resolve) => setTimeout(resolve, 50)); // the agent's answer to the last SIGUSR2
    for (const match of agent.log().slice(logStart).matchAll(AGENT_PEAK_WINDOW)) peaks.windowBytes = maxOf(peaks.windowBytes, Number(match[1]));
    peaks.windowBytes = maxOf(peaks.windowBytes, edgeWindow);
    return peaks;
  };
}

/** One cell of the matrix: a link shape, with a relay in front of each contender's first hop. */
type Cell = { rttMs: number; rateMBps: number };
type Sample = { mbps: number; peaks?: Peaks };
const samples = new Map<string, Sample[]>();
const sampleKey = (cell: Cell, contender: ContenderName, direction: Direction) => `${cell.rttMs}|${cell.rateMBps}|${contender}|${direction}`;

/**
 * The process trees this run owns, for the last resort: an exit that skips the cleanups (an error
 * thrown from a timer ends the process past every finally) SIGKILLs them, Dante's forks and
 * wrangler's workerd included, as 'exit' allows nothing asynchronous.
 */
const ownedTrees = new Set<() => number[]>();

type Running = { edge: RunningEdge; local: LocalEdge; dante: Peer; origin: Listening<Server> };

/** Every contender once, in `order`, each way, over a fresh link of `cell`'s shape. */
async function measureCell(running: Running, cell: Cell, order: readonly ContenderName[], options: Options): Promise<void> {
  const shape: LinkShape = { rttMs: cell.rttMs, rateBytesPerSecond: cell.rateMBps * MB, queueBytes: options.queueBytes, chargeTcpHandshake: true };
  const totalBytes = options.bytes ?? Math.round(cell.rateMBps * MB * DEFAULT_TRANSFER_SECONDS);
  const timeoutMs = transferTimeoutMs(totalBytes, cell.rateMBps);
  const relays: LinkRelay[] = [];
  try {
    const relayTo = async (port: number) => {
      const relay = await startLinkRelay(port, shape);
      relays.push(relay);
      return relay;
    };
    const toEdge = await relayTo(Number(new URL(running.local.agentEdgeUrl).port));
    const toDante = await relayTo(running.dante.port);
    const toOrigin = await relayTo(running.origin.port);
    for (const contender of order) {
      for (const direction of DIRECTIONS) {
        const transfer = direction === "download" ? checkedDownload : checkedUpload;
        // A fresh agent each time: its peak window is the largest since it started. info: SIGUSR2's hold line is logged at info.
        const agent = contender === "edgesocks" ? await startAgent(`http://127.0.0.1:${toEdge.port}`, running.edge.token, ["--log-level", "info"]) : undefined;
        const agentTree = () => (agent ? processTree(agent.pid) : []);
        ownedTrees.add(agentTree);
        let mbps: number;
        let peaks: Peaks | undefined;
        try {
          const stopSampling = agent ? await samplePeaks(agent, running.local, running.edge.token) : undefined;
          const route: Route = agent ? { proxyPort: agent.port, originPort: running.origin.port } : contender === "dante" ? { proxyPort: toDante.port, originPort: running.origin.port } : { proxyPort: undefined, originPort: toOrigin.port };
          mbps = await transfer(route, totalBytes, timeoutMs);
          peaks = await stopSampling?.();
        } catch (error) {
          if (agent) process.stderr.write(`bench:link: the agent's last log lines:\n${agent.log().split("\n").slice(-8).join("\n")}\n`);
          throw new Error(`${contender}, ${direction}, ${cell.rttMs} ms, ${cell.rateMBps} MB/s: ${error instanceof Error ? error.message : String(error)}`);
        } finally {
          await agent?.stop();
          ownedTrees.delete(agentTree);
          assertLocalEdgeAlive(running.local); // a restarted workerd explains a failure better than the failure does
        }
        const key = sampleKey(cell, contender, direction);
        samples.set(key, [...(samples.get(key) ?? []), peaks ? { mbps, peaks } : { mbps }]);
        progress(`${cell.rttMs} ms ${cell.rateMBps} MB/s ${contender} ${direction}: ${mbps.toFixed(1)} MB/s`);
        if (contender === "link alone" && mbps < 0.95 * cell.rateMBps) progress(`warning: the link alone reached ${(mbps / cell.rateMBps).toFixed(3)} of its rate (below 0.95): this cell's ratios are suspect`);
      }
    }
  } finally {
    for (const relay of relays) await relay.close();
  }
}

const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)] ?? Number.NaN;

function table(options: Options): string {
  const mib = (bytes: number | undefined) => (bytes === undefined ? "-" : (bytes / MIB).toFixed(bytes < 10 * MIB ? 2 : 0));
  const fixed = (value: number, digits = 1) => (Number.isNaN(value) ? "-" : value.toFixed(digits));
  const lines = [
    "| RTT | link MB/s | direction | link alone (÷ rate) | edgesocks MB/s | edgesocks ÷ rate | Dante MB/s | Dante ÷ rate | edgesocks ÷ Dante | agent peak RSS MiB | workerd peak RSS MiB | peak window MiB | peak window ÷ BDP | edge in flight, peak MiB |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const rttMs of options.rttsMs) {
    for (const rateMBps of options.ratesMBps) {
      for (const direction of DIRECTIONS) {
        const cell = { rttMs, rateMBps };
        const mbps = (contender: ContenderName) => median((samples.get(sampleKey(cell, contender, direction)) ?? []).map((sample) => sample.mbps));
        const peaks = (samples.get(sampleKey(cell, "edgesocks", direction)) ?? []).flatMap((sample) => (sample.peaks ? [sample.peaks] : []));
        const peakOf = (pick: (peaks: Peaks) => number | undefined) => peaks.map(pick).reduce(maxOf, undefined);
        const windowBytes = peakOf((p) => p.windowBytes);
        const bdpBytes = (rateMBps * MB * rttMs) / 1000;
        const [alone, edge, dante] = CONTENDERS.map(mbps) as [number, number, number];
        lines.push(
          `| ${rttMs} ms | ${rateMBps} | ${direction} | ${fixed(alone)} (${fixed(alone / rateMBps, 2)}) | ${fixed(edge)} | ${fixed(edge / rateMBps, 2)} | ${fixed(dante)} | ${fixed(dante / rateMBps, 2)} | ${fixed(edge / dante, 2)} | ` +
            `${mib(peakOf((p) => p.agentRssBytes))} | ${mib(peakOf((p) => p.workerdRssBytes))} | ${mib(windowBytes)} | ${windowBytes === undefined || bdpBytes === 0 ? "-" : fixed(windowBytes / bdpBytes, 2)} | ${direction === "download" ? mib(peakOf((p) => p.uncreditedBytes)) : "-"} |`,
        );
      }
    }
  }
  return lines.join("\n");
}

/** Seconds a concurrent run lasts at the link's rate, all its downloads together, when --bytes is not given. */
const CONCURRENT_RUN_SECONDS = 8;
/** How often RSS and the edge's counters are read during a concurrent run. */
const CONCURRENT_SAMPLE_MS = 100;
/**
 * What each stream may take beyond the edge's budget (docs/protocol.md §5, Budgets): the upload
 * window's floor of 64 KiB (BUDGET_FLOOR_BYTES) and the download's in-flight floor, the larger
 * of 64 KiB and a v4 agent's credit batch (at most 256 KiB).
 */
const FLOOR_BYTES_PER_STREAM = 64 * 1024 + 256 * 1024;

/** The edge's hold during a concurrent run: the largest sampled, and its own peaks (reset before the run). */
type EdgeHold = { heldPeakBytes: number; peakBudgetInUseBytes: number; budgetBytes: number; streamsPeak: number; samples: number };
type ConcurrentSample = { mbps: number; agentRssBytes?: number; workerdRssBytes?: number; hold?: EdgeHold };
const concurrentSamples = new Map<string, ConcurrentSample[]>();

const numberIn = (counters: Record<string, unknown> | undefined, key: string) => (typeof counters?.[key] === "number" ? counters[key] : undefined);

/** Samples RSS and the edge's counters every CONCURRENT_SAMPLE_MS until the function returned is called. */
async function sampleConcurrent(agent: RunningAgent, local: LocalEdge, token: string): Promise<() => Promise<Omit<ConcurrentSample, "mbps">>> {
  await resetEdgePeaks(local, token);
  const agentPids = processTree(agent.pid);
  let agentRssBytes = 0;
  let workerdRssBytes = 0;
  const hold: EdgeHold = { heldPeakBytes: 0, peakBudgetInUseBytes: 0, budgetBytes: 0, streamsPeak: 0, samples: 0 };
  const take = (counters: Record<string, unknown> | undefined) => {
    if (counters === undefined) return;
    hold.samples++;
    hold.heldPeakBytes = Math.max(hold.heldPeakBytes, (numberIn(counters, "uploadHeldBytes") ?? 0) + (numberIn(counters, "downloadUncreditedBytes") ?? 0));
    hold.peakBudgetInUseBytes = Math.max(hold.peakBudgetInUseBytes, numberIn(counters, "peakBudgetInUseBytes") ?? 0);
    hold.budgetBytes = numberIn(counters, "budgetBytes") ?? hold.budgetBytes;
    hold.streamsPeak = Math.max(hold.streamsPeak, numberIn(counters, "streams") ?? 0);
  };
  // One request at a time: a slow answer skips samples rather than piling requests on the Worker.
  let counting: Promise<void> | undefined;
  const sample = () => {
    agentRssBytes = Math.max(agentRssBytes, totalRssBytes(agentPids));
    workerdRssBytes = Math.max(workerdRssBytes, totalRssBytes([local.workerPid]));
    counting ??= fetchCounters(local, token)
      .then(take)
      .finally(() => (counting = undefined));
  };
  sample();
  const timer = setInterval(sample, CONCURRENT_SAMPLE_MS);
  return async () => {
    clearInterval(timer);
    await counting;
    sample();
    await counting;
    return { agentRssBytes, workerdRssBytes, hold };
  };
}

/** `count` checked downloads of `eachBytes` at once through `route`; resolves with their aggregate MB/s, first byte of any to last of all. */
async function concurrentDownloads(route: Route, count: number, eachBytes: number, timeoutMs: number): Promise<number> {
  const settled = await Promise.allSettled(Array.from({ length: count }, () => checkedDownloadArrival(route, eachBytes, timeoutMs)));
  // Every download settled before a failure is reported: none is left running into the relay's close.
  const failures = settled.flatMap((result) => (result.status === "rejected" ? [result.reason as unknown] : []));
  if (failures.length > 0) throw new Error(`${failures.length} of ${count} downloads failed; the first: ${failures[0] instanceof Error ? failures[0].message : String(failures[0])}`);
  const arrivals = settled.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
  const first = arrivals.reduce((earliest, arrival) => (arrival.firstAtMs < earliest.firstAtMs ? arrival : earliest));
  const lastAtMs = Math.max(...arrivals.map((arrival) => arrival.lastAtMs));
  return steadyMBps(count * eachBytes, { firstAtMs: first.firstAtMs, lastAtMs, firstReadBytes: first.firstReadBytes });
}

const concurrentEachBytes = (cell: Cell, options: Options, count: number) => options.bytes ?? Math.round((cell.rateMBps * MB * CONCURRENT_RUN_SECONDS) / count);

/** Every contender once, in `order`: `count` downloads at once over one fresh shared link of `cell`'s shape per contender. */
async function measureConcurrentCell(running: Running, cell: Cell, order: readonly ContenderName[], options: Options, count: number): Promise<void> {
  const shape: LinkShape = { rttMs: cell.rttMs, rateBytesPerSecond: cell.rateMBps * MB, queueBytes: options.queueBytes, chargeTcpHandshake: true, shared: true };
  const eachBytes = concurrentEachBytes(cell, options, count);
  const timeoutMs = transferTimeoutMs(count * eachBytes, cell.rateMBps);
  for (const contender of order) {
    const target = contender === "edgesocks" ? Number(new URL(running.local.agentEdgeUrl).port) : contender === "dante" ? running.dante.port : running.origin.port;
    const relay = await startLinkRelay(target, shape);
    let agent: RunningAgent | undefined;
    const agentTree = () => (agent ? processTree(agent.pid) : []);
    ownedTrees.add(agentTree);
    let sample: ConcurrentSample;
    try {
      agent = contender === "edgesocks" ? await startAgent(`http://127.0.0.1:${relay.port}`, running.edge.token) : undefined;
      const stopSampling = agent ? await sampleConcurrent(agent, running.local, running.edge.token) : undefined;
      const route: Route = agent ? { proxyPort: agent.port, originPort: running.origin.port } : contender === "dante" ? { proxyPort: relay.port, originPort: running.origin.port } : { proxyPort: undefined, originPort: relay.port };
      const mbps = await concurrentDownloads(route, count, eachBytes, timeoutMs);
      sample = { mbps, ...(await stopSampling?.()) };
    } catch (error) {
      if (agent) process.stderr.write(`bench:link: the agent's last log lines:\n${agent.log().split("\n").slice(-8).join("\n")}\n`);
      throw new Error(`${contender}, ${count} concurrent downloads, ${cell.rttMs} ms, ${cell.rateMBps} MB/s: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      await agent?.stop();
      ownedTrees.delete(agentTree);
      await relay.close();
      assertLocalEdgeAlive(running.local);
    }
    const key = sampleKey(cell, contender, "download");
    concurrentSamples.set(key, [...(concurrentSamples.get(key) ?? []), sample]);
    const held = sample.hold ? `; edge held peak ${(sample.hold.heldPeakBytes / MIB).toFixed(2)} MiB, budget in use peak ${(sample.hold.peakBudgetInUseBytes / MIB).toFixed(2)} MiB of ${(sample.hold.budgetBytes / MIB).toFixed(0)}, ${sample.hold.streamsPeak} streams` : "";
    progress(`${cell.rttMs} ms ${cell.rateMBps} MB/s ${contender} ${count} concurrent downloads: ${sample.mbps.toFixed(1)} MB/s${held}`);
    if (contender === "link alone" && sample.mbps < 0.95 * cell.rateMBps) progress(`warning: the shared link alone reached ${(sample.mbps / cell.rateMBps).toFixed(3)} of its rate (below 0.95): this cell's ratios are suspect`);
  }
}

function concurrentTable(options: Options, count: number): string {
  const mib = (bytes: number | undefined) => (bytes === undefined ? "-" : (bytes / MIB).toFixed(bytes < 10 * MIB ? 2 : 0));
  const fixed = (value: number, digits = 1) => (Number.isNaN(value) ? "-" : value.toFixed(digits));
  const lines = [
    "| RTT | link MB/s | downloads | MB each | link alone (÷ rate) | edgesocks MB/s | edgesocks ÷ rate | Dante MB/s | Dante ÷ rate | edgesocks ÷ Dante | edge held, peak MiB | edge budget in use, peak MiB | edge budget MiB | floors allowance MiB | inside budget (+ floors) | agent peak RSS MiB | workerd peak RSS MiB |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const rttMs of options.rttsMs) {
    for (const rateMBps of options.ratesMBps) {
      const cell = { rttMs, rateMBps };
      const of = (contender: ContenderName) => concurrentSamples.get(sampleKey(cell, contender, "download")) ?? [];
      const [alone, edge, dante] = CONTENDERS.map((contender) => median(of(contender).map((sample) => sample.mbps))) as [number, number, number];
      const edgeSamples = of("edgesocks");
      const holds = edgeSamples.flatMap((sample) => (sample.hold && sample.hold.samples > 0 ? [sample.hold] : []));
      const largest = (pick: (hold: EdgeHold) => number) => (holds.length === 0 ? undefined : Math.max(...holds.map(pick)));
      const heldBytes = largest((hold) => hold.heldPeakBytes);
      const budgetInUseBytes = largest((hold) => hold.peakBudgetInUseBytes);
      const budgetBytes = largest((hold) => hold.budgetBytes);
      const streams = largest((hold) => hold.streamsPeak);
      const allowanceBytes = streams === undefined ? undefined : streams * FLOOR_BYTES_PER_STREAM;
      const peakBytes = maxOf(heldBytes, budgetInUseBytes);
      const inside =
        peakBytes === undefined || budgetBytes === undefined || allowanceBytes === undefined ? "-" : peakBytes <= budgetBytes ? "yes" : peakBytes <= budgetBytes + allowanceBytes ? "yes, with floors" : "NO";
      const rss = (pick: (sample: ConcurrentSample) => number | undefined) => edgeSamples.map(pick).reduce(maxOf, undefined);
      lines.push(
        `| ${rttMs} ms | ${rateMBps} | ${count} | ${fixed(concurrentEachBytes(cell, options, count) / MB, 2)} | ${fixed(alone)} (${fixed(alone / rateMBps, 2)}) | ${fixed(edge)} | ${fixed(edge / rateMBps, 2)} | ${fixed(dante)} | ${fixed(dante / rateMBps, 2)} | ${fixed(edge / dante, 2)} | ` +
          `${mib(heldBytes)} | ${mib(budgetInUseBytes)} | ${mib(budgetBytes)} | ${allowanceBytes === undefined ? "-" : `${mib(allowanceBytes)} (${streams} streams)`} | ${inside} | ${mib(rss((sample) => sample.agentRssBytes))} | ${mib(rss((sample) => sample.workerdRssBytes))} |`,
      );
    }
  }
  return lines.join("\n");
}

function concurrentReport(options: Options, local: LocalEdge, count: number): string {
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}`;
  const size = options.bytes === undefined ? `${CONCURRENT_RUN_SECONDS} s at the link's rate ÷ ${count} each` : `${(options.bytes / MB).toFixed(2)} MB each`;
  const queue = options.queueBytes === undefined ? "one BDP + 64 KiB" : `${options.queueBytes} bytes`;
  return [
    `### ${new Date().toISOString().slice(0, 10)}: link mode, ${count} concurrent downloads, ${machine}`,
    "",
    `Command: \`npm run bench:link -- ${process.argv.slice(2).join(" ")}\`.`,
    `Medians of ${options.rounds} round(s), contenders in rotating order; ${count} downloads at once (${size}), every byte checked; MB/s is the aggregate, from the first byte of any download to the last byte of all.`,
    `Link (link-relay.ts, shared): one link each way for all of a contender's connections (the agent's tunnels, or the client's connections to Dante or the origin): the rate, a queue of ${queue} before the relay stops reading, then RTT/2.`,
    `Path: ${local.description}. During edgesocks' runs (a fresh agent each) the edge's GET /dev/counters (peaks reset before the run) and RSS are read every ${CONCURRENT_SAMPLE_MS} ms;`,
    `held: the largest uploadHeldBytes + downloadUncreditedBytes sampled; budget in use: the edge's own peakBudgetInUseBytes; floors allowance: ${FLOOR_BYTES_PER_STREAM / 1024} KiB per stream (64 KiB upload floor + download floor of at most 256 KiB) × the most streams seen; inside: the larger of the two peaks ≤ the budget (or ≤ budget + allowance).`,
    "",
    concurrentTable(options, count),
  ].join("\n");
}

function report(options: Options, local: LocalEdge): string {
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}`;
  const size = options.bytes === undefined ? `${DEFAULT_TRANSFER_SECONDS} s at the link's rate` : `${(options.bytes / MB).toFixed(0)} MB`;
  const queue = options.queueBytes === undefined ? "one BDP + 64 KiB" : `${options.queueBytes} bytes`;
  return [
    `### ${new Date().toISOString().slice(0, 10)}: link mode, ${machine}`,
    "",
    `Command: \`npm run bench:link -- ${process.argv.slice(2).join(" ")}\`.`.replace(" -- `", "`"),
    `Medians of ${options.rounds} round(s), contenders in rotating order; single streams of ${size}, every byte checked; MB/s timed where the bytes arrive, first to last.`,
    `Link (link-relay.ts): each way the rate, a queue of ${queue} before the relay stops reading, then RTT/2; TCP ends at the relay on both sides.`,
    `Path: ${local.description}; the link is between the agent and the Worker, and between the client and Dante. Peaks are sampled every ${RSS_SAMPLE_MS} ms (RSS) and ${WINDOW_SAMPLE_MS} ms (counters) during edgesocks' runs, a fresh agent for each;`,
    "peak window: the largest window a stream grew to in the run (peakWindowBytes of the agent, or of the edge, whose peaks are reset before each run; the largest of the rounds), ÷ BDP: over rate × RTT; in flight: the edge's downloadUncreditedBytes.",
    "",
    table(options),
  ].join("\n");
}

async function main(): Promise<void> {
  const options = parseOptions();
  ensurePeerPackages();
  const cleanups: (() => Promise<void>)[] = [];
  const cleanUp = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  };
  process.once("exit", () => {
    for (const pid of [...ownedTrees].flatMap((tree) => tree())) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  });
  process.once("uncaughtException", (error) => {
    progress(`stopping on an uncaught error: ${error.stack ?? error.message}`);
    void cleanUp().finally(() => process.exit(1));
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void cleanUp().finally(() => process.exit(signal === "SIGINT" ? 130 : 143)));
  try {
    const origin = await startCheckedOrigin();
    cleanups.push(origin.close);
    const dante = await startDante();
    cleanups.push(dante.stop);
    ownedTrees.add(dante.pids);
    const edge = await startEdge({ EDGESOCKS_DEV_COUNTERS: "1" });
    cleanups.push(edge.stop);
    ownedTrees.add(() => processTree(edge.wranglerPid));
    const local = await localEdge(edge, "worker");
    progress(`${local.description}: ${local.agentEdgeUrl}`);
    const running: Running = { edge, local, dante, origin };
    for (let round = 0; round < options.rounds; round++) {
      for (const rttMs of options.rttsMs) {
        for (const rateMBps of options.ratesMBps) {
          // Rotate each round, so no contender always runs first after a fresh agent.
          const order = CONTENDERS.map((_, index) => CONTENDERS[(index + round) % CONTENDERS.length] as ContenderName);
          if (options.concurrent === undefined) await measureCell(running, { rttMs, rateMBps }, order, options);
          else await measureConcurrentCell(running, { rttMs, rateMBps }, order, options, options.concurrent);
        }
      }
      progress(`round ${round + 1}/${options.rounds} done`);
    }
    process.stdout.write(`${options.concurrent === undefined ? report(options, local) : concurrentReport(options, local, options.concurrent)}\n`);
  } finally {
    await cleanUp();
  }
}

void main().catch((error: unknown) => {
  process.stderr.write(`bench:link: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
