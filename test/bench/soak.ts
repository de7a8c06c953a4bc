// `npm run soak`: mixed traffic through the real agent and the real Worker (its own workerd, not
// wrangler's dev proxy) for --minutes, every byte checked, while the RSS of both processes is
// sampled; then a summary, and exit 1 on any failure.
//
//   npm run soak -- [--minutes N] [--concurrency N] [--sample-seconds N] [--seed N] [--json]
//
// --concurrency clients each run one step after another (soak-mix.ts: SOCKS5, HTTP CONNECT and
// plain http:// downloads, uploads and short exchanges; about one in seven reset by the client
// midway, which is not a failure). Growth per hour is a line fitted to the second half of the
// samples (rss-trend.ts: the first half is warm-up). After the last step every connection at the
// destinations must be closed within DESTINATIONS_SETTLE_MS. --json prints the summary as JSON.

import { parseArgs } from "node:util";
import { endGroupsOnExit } from "./process-groups.ts";
import { RssSeries, summarizeRss, type RssSummary } from "./rss-trend.ts";
import { STEP_KINDS, Random, StepTimeout, drawStep, runStep } from "./soak-mix.ts";
import { openDestinationSockets, startSoakOrigins, type SoakOrigins, type UploadEnds } from "./soak-origins.ts";
import { startSoakStack, type SoakStack } from "./soak-stack.ts";
import { ByteMismatch } from "./soak-streams.ts";

/** Longest one step may take: a 32 MiB transfer takes under 2 s here, so this only ends hangs. */
const STEP_TIMEOUT_MS = 60_000;
/** Time the destinations get, after the last client, to see every connection closed (the agent's and the Worker's resets and ends are immediate; this covers a loaded machine). */
const DESTINATIONS_SETTLE_MS = 10_000;
const PROGRESS_EVERY_MS = 30_000;
/** Failure reasons kept; every failure is counted. */
const KEPT_FAILURES = 100;
const SHOWN_FAILURES = 5;

type Options = { minutes: number; concurrency: number; sampleSeconds: number; seed: number; json: boolean };

function usage(message: string): never {
  process.stderr.write(`soak: ${message}\n`);
  process.exit(2);
}

function parseOptions(): Options {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        minutes: { type: "string", default: "5" },
        concurrency: { type: "string", default: "12" },
        "sample-seconds": { type: "string", default: "5" },
        seed: { type: "string" },
        json: { type: "boolean", default: false },
      },
    }));
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const minutes = Number(values.minutes);
  if (!Number.isFinite(minutes) || minutes <= 0) usage(`--minutes takes a number above 0, not ${values.minutes}`);
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) usage(`--concurrency takes a whole number from 1 to 64, not ${values.concurrency}`);
  const sampleSeconds = Number(values["sample-seconds"]);
  if (!Number.isFinite(sampleSeconds) || sampleSeconds < 0.5) usage(`--sample-seconds takes a number of 0.5 or more, not ${values["sample-seconds"]}`);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0) usage(`--seed takes a whole number of 0 or more, not ${values.seed}`);
  return { minutes, concurrency, sampleSeconds, seed, json: values.json ?? false };
}

type KindStats = { steps: number; connections: number; resetByClient: number; failures: number; downloadBytes: number; uploadBytes: number };
type Failure = { kind: string; atSeconds: number; reason: string; byteMismatch: boolean };

/** Everything the run counted, as the summary reports it. */
class Tally {
  readonly byKind = new Map<string, KindStats>(STEP_KINDS.map((kind) => [kind, { steps: 0, connections: 0, resetByClient: 0, failures: 0, downloadBytes: 0, uploadBytes: 0 }]));
  readonly failures: Failure[] = [];
  failureCount = 0;
  byteMismatches = 0;

  stats(kind: string): KindStats {
    const stats = this.byKind.get(kind);
    if (stats === undefined) throw new Error(`no step kind ${kind}`);
    return stats;
  }
  fail(kind: string, atSeconds: number, error: unknown): void {
    const byteMismatch = error instanceof ByteMismatch;
    this.failureCount++;
    if (byteMismatch) this.byteMismatches++;
    if (this.failures.length < KEPT_FAILURES) this.failures.push({ kind, atSeconds, reason: error instanceof Error ? error.message : String(error), byteMismatch });
  }
  total(field: keyof KindStats): number {
    let sum = 0;
    for (const stats of this.byKind.values()) sum += stats[field];
    return sum;
  }
}

const progressLine = (line: string) => process.stderr.write(`soak: ${line}\n`);

async function main(): Promise<void> {
  const options = parseOptions();
  let phase = "starting";
  let reported = false;
  // Node exits 0 when nothing is left to wake a pending wait (a paused socket is no handle): a
  // soak that ends that way has not passed.
  process.on("beforeExit", () => {
    if (reported) return;
    progressLine(`the event loop emptied while ${phase}: a wait that nothing will end`);
    process.exit(1);
  });
  let stack: SoakStack | undefined;
  let origins: SoakOrigins | undefined;
  let stopping = false;
  endGroupsOnExit(async (signal) => {
    stopping = true;
    progressLine(`${signal}: stopping the agent and the edge (no summary)`);
    await stack?.stop();
    await origins?.close();
  });
  origins = await startSoakOrigins();
  stack = await startSoakStack(progressLine);
  const running = { stack, origins };
  progressLine(`agent on 127.0.0.1:${stack.agentPort} (pid ${stack.agentPid}); ${options.minutes} min, concurrency ${options.concurrency}, seed ${options.seed}`);
  phase = "running traffic";

  const tally = new Tally();
  const series = [new RssSeries("agent", stack.agentPid), new RssSeries("Worker's workerd", stack.workerPid)];
  const startedMs = performance.now();
  const elapsedSeconds = () => (performance.now() - startedMs) / 1000;
  const deadlineMs = startedMs + options.minutes * 60_000;
  for (const one of series) one.sample(0);
  const sampler = setInterval(() => {
    const dead = running.stack.deadReason();
    if (dead !== undefined) {
      if (!stopping) tally.fail("process", elapsedSeconds(), new Error(dead));
      stopping = true;
      return;
    }
    for (const one of series) one.sample(elapsedSeconds());
  }, options.sampleSeconds * 1000);
  const reporter = setInterval(() => {
    const mib = (one: RssSeries) => ((one.samples[one.samples.length - 1]?.bytes ?? 0) / 2 ** 20).toFixed(0);
    progressLine(
      `${elapsedSeconds().toFixed(0)} s: ${tally.total("connections")} connections, ${((tally.total("downloadBytes") + tally.total("uploadBytes")) / 1e9).toFixed(2)} GB checked, ${tally.failureCount} failures; RSS agent ${mib(series[0] as RssSeries)} MiB, workerd ${mib(series[1] as RssSeries)} MiB`,
    );
  }, PROGRESS_EVERY_MS);

  let stepNumber = 0;
  const client = async (index: number) => {
    const random = new Random(options.seed + index * 0x9e3779b9);
    while (!stopping && performance.now() < deadlineMs) {
      const step = drawStep(random);
      const stats = tally.stats(step.kind);
      stats.steps++;
      try {
        const outcome = await runStep(step, { proxyPort: running.stack.agentPort, origins: running.origins, random, id: `soak-${index}-${stepNumber++}` }, STEP_TIMEOUT_MS);
        stats.connections += outcome.connections;
        stats.downloadBytes += outcome.downloadBytes;
        stats.uploadBytes += outcome.uploadBytes;
        if (outcome.resetByClient) stats.resetByClient++;
      } catch (error) {
        if (stopping && !(error instanceof ByteMismatch)) break; // a process died: that is the failure, not this step
        stats.connections++;
        stats.failures++;
        tally.fail(step.kind, elapsedSeconds(), error instanceof StepTimeout ? new Error(`${step.kind}: ${error.message}`) : error);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, (_, index) => client(index)));
  clearInterval(sampler);
  clearInterval(reporter);
  const runSeconds = elapsedSeconds();
  phase = "waiting for the destinations' connections to close";
  progressLine(`traffic stopped at ${runSeconds.toFixed(0)} s; ${phase}`);
  const dead = stack.deadReason();
  if (dead === undefined) for (const one of series) one.sample(runSeconds);

  const settle = await destinationsSettle(origins);
  if (settle.left !== undefined) tally.fail("destinations", runSeconds, new Error(`${settle.left} still open at the destinations ${DESTINATIONS_SETTLE_MS / 1000} s after the last client finished`));
  const agentTail = stack.agentOutput().trim().split("\n").slice(-5);
  stopping = true;
  phase = "stopping the agent and the edge";
  await stack.stop();
  phase = "closing the destinations";
  await origins.close();

  const summary = {
    minutes: runSeconds / 60,
    concurrency: options.concurrency,
    seed: options.seed,
    sampleSeconds: options.sampleSeconds,
    connections: tally.total("connections"),
    steps: tally.total("steps"),
    resetByClient: tally.total("resetByClient"),
    downloadBytes: tally.total("downloadBytes"),
    uploadBytes: tally.total("uploadBytes"),
    failures: tally.failureCount,
    byteMismatches: tally.byteMismatches,
    firstFailures: tally.failures.slice(0, SHOWN_FAILURES),
    destinationsClosedAfterMs: settle.closedAfterMs,
    uploadEndsAtDestination: { ...origins.uploadEnds },
    byKind: Object.fromEntries(tally.byKind),
    rss: series.map((one) => summarizeRss(one, runSeconds)),
    agentLogTail: tally.failureCount > 0 ? agentTail : [],
    passed: tally.failureCount === 0,
  };
  process.stdout.write(options.json ? `${JSON.stringify(summary, null, 2)}\n` : humanSummary(summary));
  reported = true;
  process.exitCode = summary.passed ? 0 : 1;
}

/** Waits until no connection is open at the destinations; `left` describes those still open at the deadline. */
async function destinationsSettle(origins: SoakOrigins): Promise<{ closedAfterMs: number | undefined; left: string | undefined }> {
  const started = performance.now();
  for (;;) {
    const open = openDestinationSockets(origins.ports());
    if (open.size === 0) return { closedAfterMs: Math.round(performance.now() - started), left: undefined };
    if (performance.now() - started > DESTINATIONS_SETTLE_MS) {
      const states = [...open].map(([state, count]) => `${count} ${state}`).join(", ");
      return { closedAfterMs: undefined, left: `connections (${states})` };
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

type Summary = {
  minutes: number;
  concurrency: number;
  seed: number;
  sampleSeconds: number;
  connections: number;
  steps: number;
  resetByClient: number;
  downloadBytes: number;
  uploadBytes: number;
  failures: number;
  byteMismatches: number;
  firstFailures: Failure[];
  destinationsClosedAfterMs: number | undefined;
  uploadEndsAtDestination: UploadEnds;
  byKind: Record<string, KindStats>;
  rss: RssSummary[];
  agentLogTail: string[];
  passed: boolean;
};

function humanSummary(summary: Summary): string {
  const gb = (bytes: number) => (bytes / 1e9).toFixed(2);
  const lines = [
    `soak: ${summary.minutes.toFixed(1)} min, concurrency ${summary.concurrency}, seed ${summary.seed}`,
    `connections: ${summary.connections} (${summary.steps} steps; ${summary.resetByClient} reset by their client midway on purpose, not failures)`,
    `bytes checked: ${gb(summary.downloadBytes)} GB down, ${gb(summary.uploadBytes)} GB up`,
    `failures: ${summary.failures} (byte mismatches: ${summary.byteMismatches})`,
    ...summary.firstFailures.map((failure) => `  at ${failure.atSeconds.toFixed(0)} s, ${failure.kind}: ${failure.reason}`),
    `destinations: ${summary.destinationsClosedAfterMs === undefined ? "connections left open (a failure above)" : `every connection closed ${summary.destinationsClosedAfterMs} ms after the last client finished`}`,
    `uploads at the destination: ${summary.uploadEndsAtDestination.answered} complete, ${summary.uploadEndsAtDestination.endedShort} short with a clean end (FIN), ${summary.uploadEndsAtDestination.reset} short with a reset`,
    "",
    "| step | steps | connections | reset by client | failures | MB down | MB up |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...Object.entries(summary.byKind).map(
      ([kind, stats]) => `| ${kind} | ${stats.steps} | ${stats.connections} | ${stats.resetByClient} | ${stats.failures} | ${(stats.downloadBytes / 1e6).toFixed(0)} | ${(stats.uploadBytes / 1e6).toFixed(0)} |`,
    ),
    "",
    `RSS, sampled every ${summary.sampleSeconds} s; growth is the slope of a least-squares line through the second half's samples (the first half is warm-up, excluded):`,
    "",
    "| process | start MiB | peak MiB | end MiB | growth MiB/h (second half) |",
    "| --- | --- | --- | --- | --- |",
    ...summary.rss.map(
      (rss) =>
        `| ${rss.name} (pid ${rss.pid}) | ${rss.startMiB.toFixed(1)} | ${rss.peakMiB.toFixed(1)} | ${rss.endMiB.toFixed(1)} | ${rss.growthMiBPerHour === undefined ? `too few samples (${rss.fitSamples})` : `${rss.growthMiBPerHour.toFixed(1)} (${rss.fitSamples} samples from ${rss.fitFromSeconds.toFixed(0)} s)`} |`,
    ),
    "",
  ];
  if (summary.agentLogTail.length > 0) lines.push("the agent's last log lines:", ...summary.agentLogTail.map((line) => `  ${line}`), "");
  lines.push(summary.passed ? "result: PASS" : "result: FAIL");
  return `${lines.join("\n")}\n`;
}

void main().catch((error: unknown) => {
  process.stderr.write(`soak: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
