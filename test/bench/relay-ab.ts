// `npm run bench:ab`: two or more versions of edgesocks side by side on single streams. Each
// variant is a copy of the repository (a directory, or a git revision unpacked into one) whose
// own test/e2e/processes.ts starts its Worker under wrangler dev and its agent, so a variant runs
// as its own tests run it; the agent talks to the Worker's own workerd, past wrangler's dev proxy
// (local-edge.ts). Rounds rotate the variants' order and every byte is checked
// (checked-transfer.ts). The report gives medians of MB/s and of CPU seconds per GB for the agent
// and the Worker's workerd, and ratios to the first variant paired round by round.
//
//   npm run bench:ab -- --variant NAME=DIR | --rev NAME=GITREV   (two or more; the first is the base)
//                       [--rounds N] [--mib N] [--only download|upload]
//                       [--cpu-prof-dir DIR] [--perf FILE]
//
// --cpu-prof-dir writes a V8 CPU profile of each agent over the measured runs (DIR/NAME-agent.cpuprofile);
// --perf records the first variant's Worker workerd over them with `perf record -g`.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { repoRoot, type RunningAgent } from "../e2e/processes.ts";
import { checkedDownload, checkedUpload, startUploadChecker, type CheckedOrigins } from "./checked-transfer.ts";
import { assertLocalEdgeAlive, localEdge, type LocalEdge } from "./local-edge.ts";
import { startOrigin } from "./origin.ts";
import { cpuSeconds } from "./proc-stats.ts";

const MIB = 1024 * 1024;
const DIRECTIONS = ["download", "upload"] as const;
type Direction = (typeof DIRECTIONS)[number];
const METRICS = ["MB/s", "agent CPU s/GB", "workerd CPU s/GB"] as const;
type Metric = (typeof METRICS)[number];

/** What starts a variant: its own copy of the e2e harness (main's types; every commit but the first has these). */
type Harness = Pick<typeof import("../e2e/processes.ts"), "startEdge" | "startAgent">;

/** Where a variant's code comes from, as given on the command line. */
type VariantSource = { name: string; dir: string; label: string } | { name: string; rev: string; label: string };

type Variant = { name: string; label: string; local: LocalEdge; agent: RunningAgent };

function usage(message: string): never {
  process.stderr.write(`bench:ab: ${message}\n`);
  process.exit(2);
}

const progress = (line: string) => process.stderr.write(`bench:ab: ${line}\n`);

type Options = { sources: VariantSource[]; rounds: number; totalBytes: number; directions: readonly Direction[]; cpuProfDir: string | undefined; perfFile: string | undefined };

/** The command line, checked: any mistake ends the program with one line and exit status 2. */
function parseOptions(): Options {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        variant: { type: "string", multiple: true },
        rev: { type: "string", multiple: true },
        rounds: { type: "string", default: "5" },
        mib: { type: "string", default: "256" },
        only: { type: "string" },
        "cpu-prof-dir": { type: "string" },
        perf: { type: "string" },
      },
      tokens: true,
    });
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const { values, tokens } = parsed;
  // Tokens keep --variant and --rev in the order given: the first of either is the base.
  const sources = tokens.flatMap((token) => (token.kind === "option" && (token.name === "variant" || token.name === "rev") ? [variantSource(token.name, token.value ?? "")] : []));
  if (sources.length < 2) usage("give two or more variants: --variant NAME=DIR or --rev NAME=GITREV");
  const names = sources.map((source) => source.name);
  const repeated = names.find((name, index) => names.indexOf(name) !== index);
  if (repeated !== undefined) usage(`variant name ${repeated} is given twice`);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) usage(`--rounds takes a whole number of 1 or more, not ${values.rounds}`);
  const mib = Number(values.mib);
  if (!Number.isInteger(mib) || mib < 1) usage(`--mib takes a whole number of 1 or more, not ${values.mib}`);
  const only = values.only;
  if (only !== undefined && only !== "download" && only !== "upload") usage(`--only takes download or upload, not ${only}`);
  if (values.perf !== undefined && spawnSync("perf", ["--version"]).status !== 0) usage("--perf needs the perf command, which does not run here");
  return { sources, rounds, totalBytes: mib * MIB, directions: only ? [only] : DIRECTIONS, cpuProfDir: values["cpu-prof-dir"], perfFile: values.perf };
}

/** One --variant NAME=DIR or --rev NAME=GITREV, checked before anything starts. */
function variantSource(option: "variant" | "rev", spec: string): VariantSource {
  const equals = spec.indexOf("=");
  const name = spec.slice(0, equals);
  const value = spec.slice(equals + 1);
  const form = option === "variant" ? "--variant NAME=DIR" : "--rev NAME=GITREV";
  if (equals < 0 || value === "" || !/^[\w.-]+$/.test(name)) usage(`${form}, with NAME of letters, digits, '.', '_' or '-', not --${option} ${spec}`);
  if (option === "variant") {
    const dir = resolve(value);
    if (!existsSync(join(dir, "test/e2e/processes.ts"))) usage(`--variant ${spec}: ${dir} is not a copy of edgesocks (no test/e2e/processes.ts)`);
    return { name, dir, label: dir };
  }
  const commit = git(["rev-parse", "--verify", "--quiet", `${value}^{commit}`]);
  if (commit === undefined) usage(`--rev ${spec}: ${value} is no commit of ${resolve(repoRoot)}`);
  if (git(["cat-file", "-e", `${commit}:test/e2e/processes.ts`]) === undefined) usage(`--rev ${spec}: that commit has no test/e2e/processes.ts to start it with`);
  return { name, rev: commit, label: `${value} (${commit.slice(0, 7)})` };
}

/** Standard output of git in this repository, trimmed; undefined if it failed. */
function git(args: string[]): string | undefined {
  const result = spawnSync("git", ["-C", repoRoot, ...args], { encoding: "utf8" });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

/** `git archive REV | tar -x` into a fresh directory, with this repository's node_modules linked in. */
function unpackRevision(name: string, commit: string): string {
  const dir = mkdtempSync(join(tmpdir(), `bench-ab-${name}-`));
  const archive = spawnSync("git", ["-C", repoRoot, "archive", "--format=tar", commit], { maxBuffer: 1024 * MIB });
  const untar = archive.status === 0 ? spawnSync("tar", ["-x", "-C", dir], { input: archive.stdout }) : archive;
  if (untar.status !== 0) throw new Error(`git archive ${commit} | tar -x -C ${dir}: ${String(untar.stderr).trim()}`);
  symlinkSync(join(repoRoot, "node_modules"), join(dir, "node_modules"));
  return dir;
}

/**
 * Starts the variant's Worker and agent with its own harness; `cleanups` gets what stops them.
 * With `inspect`, the agent runs with Node's inspector on a free loopback port, for the profiler.
 */
async function startVariant(source: VariantSource, dir: string, inspect: boolean, cleanups: (() => Promise<void>)[]): Promise<Variant> {
  const harness = (await import(pathToFileURL(join(dir, "test/e2e/processes.ts")).href)) as Harness;
  const edge = await harness.startEdge();
  cleanups.push(edge.stop);
  const local = await localEdge(edge, "worker");
  // The harness hands this process's environment to the agent and spawns it before its first
  // await, so NODE_OPTIONS is set only for that call (--cpu-prof is not allowed there; --inspect is).
  const savedNodeOptions = process.env.NODE_OPTIONS;
  if (inspect) process.env.NODE_OPTIONS = `${savedNodeOptions ?? ""} --inspect=127.0.0.1:0`.trim();
  const starting = harness.startAgent(local.agentEdgeUrl, edge.token, ["--log-level", "warn"]);
  if (savedNodeOptions === undefined) delete process.env.NODE_OPTIONS;
  else process.env.NODE_OPTIONS = savedNodeOptions;
  const agent = await starting;
  cleanups.push(agent.stop);
  progress(`${source.name} = ${source.label}: agent ${agent.pid} on :${agent.port}, the Worker's workerd ${local.workerPid} at ${local.agentEdgeUrl}`);
  return { name: source.name, label: source.label, local, agent };
}

/** Starts V8's sampling profiler through a Node inspector; the function returned stops it and resolves with the profile. */
async function startCpuProfile(debuggerUrl: string): Promise<() => Promise<unknown>> {
  const socket = new WebSocket(debuggerUrl);
  await new Promise((resolveOpen, reject) => {
    socket.once("open", resolveOpen);
    socket.once("error", reject);
  });
  let nextId = 1;
  const pending = new Map<number, { resolve(result: unknown): void; reject(error: Error): void }>();
  socket.on("message", (data) => {
    const message = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message?: string } };
    const caller = message.id === undefined ? undefined : pending.get(message.id);
    if (message.error) caller?.reject(new Error(`inspector: ${message.error.message ?? "error"}`));
    else caller?.resolve(message.result);
  });
  const call = (method: string) =>
    new Promise<unknown>((resolveCall, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolveCall, reject });
      socket.send(JSON.stringify({ id, method }));
    });
  await call("Profiler.enable");
  await call("Profiler.start");
  return async () => {
    const { profile } = (await call("Profiler.stop")) as { profile: unknown };
    socket.close();
    return profile;
  };
}

/** `perf record -g` of `pid` until the function returned is called. */
async function startPerf(pid: number, file: string): Promise<() => Promise<void>> {
  const perf = spawn("perf", ["record", "-F", "999", "-g", "-p", String(pid), "-o", file], { stdio: ["ignore", "ignore", "inherit"] });
  const exited = new Promise<number | null>((resolveExit) => perf.once("exit", resolveExit));
  await new Promise((resolveWait) => setTimeout(resolveWait, 500)); // attached before the first run
  return async () => {
    if (perf.exitCode !== null) throw new Error(`perf record exited ${perf.exitCode} before the runs ended`);
    perf.kill("SIGINT");
    await exited;
  };
}

type Samples = Map<string, number[]>;
const sampleKey = (variant: string, direction: Direction, metric: Metric) => `${variant}|${direction}|${metric}`;

/** One checked single stream through `variant`, with the CPU its agent and Worker workerd spent on it. */
async function measure(variant: Variant, direction: Direction, totalBytes: number, origins: CheckedOrigins): Promise<Record<Metric, number>> {
  const pids = { agent: [variant.agent.pid], workerd: [variant.local.workerPid] };
  const agentBefore = cpuSeconds(pids.agent);
  const workerdBefore = cpuSeconds(pids.workerd);
  const transfer = direction === "download" ? checkedDownload : checkedUpload;
  let seconds: number;
  try {
    seconds = await transfer(variant.agent.port, origins, totalBytes);
  } catch (error) {
    throw new Error(`${variant.name}, ${direction}: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    assertLocalEdgeAlive(variant.local); // a restarted workerd explains a failure better than the failure does
  }
  await new Promise((resolveWait) => setTimeout(resolveWait, 100)); // the last window updates and closes are this run's too
  const gigabytes = totalBytes / 1e9;
  return {
    "MB/s": totalBytes / 1e6 / seconds,
    "agent CPU s/GB": (cpuSeconds(pids.agent) - agentBefore) / gigabytes,
    "workerd CPU s/GB": (cpuSeconds(pids.workerd) - workerdBefore) / gigabytes,
  };
}

const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)] ?? Number.NaN;

/** A list of ratios as its median, with its range when there is more than one: "1.02 (0.97–1.06)". */
function spread(ratios: number[]): string {
  const middle = median(ratios).toFixed(2);
  return ratios.length > 1 ? `${middle} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})` : middle;
}

/** The table: medians per variant and direction, and each round's ratio to the base in the same round, medianed. */
function report(options: Options, variants: Variant[], samples: Samples): string {
  const base = variants[0]?.name ?? "";
  const format = (value: number) => (value >= 100 ? value.toFixed(0) : value.toFixed(2));
  const lines = [
    `${options.rounds} rotating round(s) of ${options.totalBytes / MIB} MiB single streams, every byte checked; medians, and ratios to ${base} paired by round (median, and range over the rounds).`,
    ...variants.map((variant) => `- ${variant.name}: ${variant.label}`),
    ...(options.cpuProfDir === undefined ? [] : ["(agent CPU includes its profiler's sampling)"]),
    "",
    `| variant | direction | ${METRICS.join(" | ")} | ${METRICS.map((metric) => `${metric.replace(/ CPU s\/GB$/, "")} ÷ ${base}`).join(" | ")} |`,
    `| --- | --- | ${[...METRICS, ...METRICS].map(() => "---").join(" | ")} |`,
  ];
  for (const direction of options.directions) {
    for (const variant of variants) {
      const series = METRICS.map((metric) => samples.get(sampleKey(variant.name, direction, metric)) ?? []);
      const baseSeries = METRICS.map((metric) => samples.get(sampleKey(base, direction, metric)) ?? []);
      const ratios = series.map((list, index) => spread(list.map((value, round) => value / (baseSeries[index]?.[round] ?? Number.NaN))));
      lines.push(`| ${variant.name} | ${direction} | ${series.map((list) => format(median(list))).join(" | ")} | ${ratios.join(" | ")} |`);
    }
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const options = parseOptions();
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const variants: Variant[] = [];
    for (const source of options.sources) {
      const dir = "dir" in source ? source.dir : unpackRevision(source.name, source.rev);
      if (!("dir" in source)) cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
      variants.push(await startVariant(source, dir, options.cpuProfDir !== undefined, cleanups));
    }
    const origin = await startOrigin();
    cleanups.push(origin.close);
    const uploadChecker = await startUploadChecker();
    cleanups.push(uploadChecker.close);
    const origins: CheckedOrigins = { downloadPort: origin.port, uploadPort: uploadChecker.port };

    // One unrecorded run each first: JIT, the first WebSocket, the warm pool.
    for (const variant of variants) for (const direction of options.directions) await measure(variant, direction, options.totalBytes, origins);
    const stopProfilers = new Map<string, () => Promise<unknown>>();
    if (options.cpuProfDir !== undefined) {
      for (const variant of variants) {
        const listening = await variant.agent.waitForLog(/Debugger listening on ws:\/\/\S+/);
        stopProfilers.set(variant.name, await startCpuProfile(/ws:\/\/\S+/.exec(listening)?.[0] ?? ""));
      }
    }
    const firstWorkerPid = variants[0]?.local.workerPid;
    const stopPerf = options.perfFile !== undefined && firstWorkerPid !== undefined ? await startPerf(firstWorkerPid, options.perfFile) : undefined;

    const samples: Samples = new Map();
    for (let round = 0; round < options.rounds; round++) {
      // Rotate the order each round so no variant always runs first or last.
      const order = variants.map((_, index) => variants[(index + round) % variants.length] as Variant);
      for (const direction of options.directions) {
        for (const variant of order) {
          const result = await measure(variant, direction, options.totalBytes, origins);
          for (const metric of METRICS) {
            const key = sampleKey(variant.name, direction, metric);
            samples.set(key, [...(samples.get(key) ?? []), result[metric]]);
          }
        }
      }
      progress(`round ${round + 1}/${options.rounds} done`);
    }

    await stopPerf?.();
    if (options.cpuProfDir !== undefined) {
      mkdirSync(options.cpuProfDir, { recursive: true });
      for (const [name, stop] of stopProfilers) {
        const file = join(options.cpuProfDir, `${name}-agent.cpuprofile`);
        writeFileSync(file, JSON.stringify(await stop()));
        progress(`wrote ${file}`);
      }
    }
    if (options.perfFile !== undefined) progress(`wrote ${options.perfFile} (the Worker's workerd of ${variants[0]?.name})`);
    process.stdout.write(`${report(options, variants, samples)}\n`);
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((error: unknown) => progress(`cleanup: ${error instanceof Error ? error.message : String(error)}`));
  }
}

void main().catch((error: unknown) => {
  process.stderr.write(`bench:ab: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
