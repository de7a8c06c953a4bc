// `npm start`: a local edge (wrangler dev, workerd on 127.0.0.1:8787) and the agent on
// 127.0.0.1:1080 in front of it, sharing a token generated for this run. One Ctrl-C stops both:
// the agent drains its open transfers first (--drain-timeout-ms), then the edge stops.
//
// Flags after `npm start --` go to the agent, except --edge-port N, which moves the local edge.
// Flags before the `--` npm keeps for itself (as npm_config_* variables); they are caught here,
// and so is every bad agent flag, before the edge boots.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AGENT_OPTIONS, ConfigError, USAGE, parseAgentCommand } from "../config/config.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";

const DEFAULT_EDGE_PORT = 8787;
/** wrangler dev builds and boots workerd; on this 2-core machine that takes 3-10 s. */
const EDGE_READY_TIMEOUT_MS = 90_000;

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const wranglerBin = join(createRequire(import.meta.url).resolve("wrangler/package.json"), "..", "bin", "wrangler.js");

/** `npm start -- --help`: this runner's one flag, then the agent's options. */
const DEV_USAGE = `Usage: npm start [-- options]

Runs a local edge (wrangler dev on 127.0.0.1:${DEFAULT_EDGE_PORT}, with a token generated for this run) and the
agent in front of it; one Ctrl-C stops both. Flags go after --: npm keeps those before it for
itself (npm start -- --zero-rtt, not npm start --zero-rtt).

  --edge-port N              the local edge's port (default ${DEFAULT_EDGE_PORT})

The agent's options, all but --edge (npm start points the agent at its local edge):

${USAGE.slice(USAGE.indexOf("Options:\n") + "Options:\n".length).replace(/^ {2}--edge URL.*\n(?: {4,}.*\n)*/m, "")}`;

/** Flags npm may take from `npm start --flag`: the agent's (but --help and --version, which npm answers itself) and --edge-port. */
const NPM_CATCHABLE = [...Object.keys(AGENT_OPTIONS).filter((name) => name !== "help" && name !== "version"), "edge-port"];
/** npm 11 expands a flag that abbreviates one of its own settings: `--bypass` arrives as npm_config_bypass_2fa. */
const NPM_EXPANDS: Record<string, string> = { bypass: "bypass-2fa" };

/**
 * The flags `npm start --flag` (no `--`) gave to npm: it sets npm_config_<flag, - as _> ("true",
 * or the value of --flag=value; measured with npm 11.19) and passes nothing for it to the script.
 */
function flagsNpmTook(env: NodeJS.ProcessEnv): string[] {
  return NPM_CATCHABLE.filter((name) => env[`npm_config_${(NPM_EXPANDS[name] ?? name).replaceAll("-", "_")}`] !== undefined);
}

/** How a flag is written with a placeholder value, as --help shows it (`--pool-size N`); never a real value, which may be a password. */
function flagForm(name: string): string {
  if (name === "edge-port") return "--edge-port N";
  const spec = AGENT_OPTIONS[name as keyof typeof AGENT_OPTIONS];
  if (spec.type === "boolean") return `--${name}`;
  return `--${name} ${new RegExp(`--${name} ([A-Z][A-Z0-9_:|]*)`).exec(USAGE)?.[1] ?? "VALUE"}`;
}

function splitArgs(argv: string[]): { edgePort: number; agentArgs: string[] } {
  const agentArgs: string[] = [];
  let edgePort = DEFAULT_EDGE_PORT;
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index] ?? "";
    const inline = /^--edge-port=(.*)$/.exec(arg);
    if (arg === "--edge-port" || inline) {
      const text = inline ? inline[1] : argv[++index];
      edgePort = Number(text);
      if (!/^\d+$/.test(text ?? "") || edgePort < 1 || edgePort > 65535) fail(`--edge-port must be a port from 1 to 65535, not "${text ?? ""}"`);
      continue;
    }
    if (arg === "--edge" || arg.startsWith("--edge=")) fail("npm start runs its own local edge; to use a deployed Worker run `npm run agent -- --edge URL`");
    agentArgs.push(arg);
  }
  return { edgePort, agentArgs };
}

function fail(message: string): never {
  process.stderr.write(`edgesocks dev: ${message}\n`);
  process.exit(2);
}

async function waitForEdge(url: string, edge: ChildProcess): Promise<void> {
  const deadline = Date.now() + EDGE_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (edge.exitCode !== null) fail(`the local edge (wrangler dev) exited with status ${edge.exitCode}; its output is above`);
    try {
      const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  fail(`the local edge did not answer ${url}/healthz within ${EDGE_READY_TIMEOUT_MS / 1000} s`);
}

/** Copies a child's output to ours, each line behind a prefix, so the two logs stay apart. */
function prefixLines(stream: NodeJS.ReadableStream | null, prefix: string): void {
  let partial = "";
  stream?.setEncoding("utf8");
  stream?.on("data", (text: string) => {
    const lines = (partial + text).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) if (line.trim() !== "") process.stderr.write(`${prefix}${line}\n`);
  });
}

async function main(): Promise<void> {
  const taken = flagsNpmTook(process.env);
  if (taken.includes("edge")) fail("npm start runs its own local edge; to use a deployed Worker run `npm run agent -- --edge URL`");
  if (taken.length > 0) {
    const flags = taken.map((name) => `--${name}`);
    const listed = flags.length === 1 ? flags[0] : `${flags.slice(0, -1).join(", ")} and ${flags.at(-1)}`;
    fail(`npm took ${listed} for itself; pass agent flags after --: npm start -- ${taken.map(flagForm).join(" ")}`);
  }
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(DEV_USAGE);
    return;
  }
  if (argv.includes("--version") || argv.includes("-v")) {
    process.stdout.write(`edgesocks ${EDGESOCKS_VERSION}\n`);
    return;
  }
  const { edgePort, agentArgs } = splitArgs(argv);
  const token = process.env.EDGESOCKS_TOKEN?.trim() || randomBytes(24).toString("base64url");
  const edgeUrl = `http://127.0.0.1:${edgePort}`;
  // The agent's flags are checked before the edge boots (seconds): a typo fails at once.
  try {
    parseAgentCommand(["--edge", edgeUrl, ...agentArgs], { ...process.env, EDGESOCKS_TOKEN: token });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    fail(error.message.replaceAll("see edgesocks --help", "see npm start -- --help"));
  }
  // The token reaches wrangler through a private env file, never through argv (visible in ps).
  const secretsDir = mkdtempSync(join(tmpdir(), "edgesocks-dev-"));
  const envFile = join(secretsDir, ".env");
  writeFileSync(envFile, `EDGESOCKS_TOKEN=${token}\n`, { mode: 0o600 });

  // The edge runs in a process group of its own, so a Ctrl-C (SIGINT to the terminal's whole
  // group) does not stop it under the agent's draining transfers: it stops once the agent is gone.
  let edge: ChildProcess | undefined;
  let agent: ChildProcess | undefined;
  let stopping = false;
  const stopEdge = (status: number) => {
    rmSync(secretsDir, { recursive: true, force: true });
    if (edge?.pid !== undefined && edge.exitCode === null && edge.signalCode === null) {
      signalGroup(edge.pid, "SIGTERM");
      edge.once("exit", () => process.exit(status));
      setTimeout(() => {
        if (edge?.pid !== undefined) signalGroup(edge.pid, "SIGKILL");
        process.exit(status);
      }, 1_500).unref();
    } else process.exit(status);
  };
  const stop = (status: number) => {
    if (agent?.pid !== undefined && agent.exitCode === null && agent.signalCode === null) {
      // The agent drains on the first signal and resets on a second; it ignores a repeat that
      // follows within half a second, as a Ctrl-C's own SIGINT does this one.
      agent.kill("SIGTERM");
      if (!stopping) agent.once("exit", (code) => stopEdge(code ?? status));
    } else if (!stopping) stopEdge(status);
    stopping = true;
  };
  process.on("SIGINT", () => stop(0));
  process.on("SIGTERM", () => stop(0));

  // No metrics, and no fetch of Request.cf from workers.cloudflare.com at start (miniflare's
  // default): the local edge sends nothing to a third party.
  edge = spawn(
    process.execPath,
    [wranglerBin, "dev", "--ip", "127.0.0.1", "--port", String(edgePort), "--env-file", envFile, "--show-interactive-dev-session=false", "--log-level", "warn"],
    { cwd: repoRoot, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", EDGESOCKS_TOKEN: "" } },
  );
  prefixLines(edge.stdout, "[edge] ");
  prefixLines(edge.stderr, "[edge] ");
  edge.once("exit", (code) => {
    if (!stopping) {
      process.stderr.write(`edgesocks dev: the local edge exited (${code}); stopping\n`);
      stopping = true;
      if (agent?.pid !== undefined && agent.exitCode === null) {
        agent.kill("SIGTERM");
        agent.once("exit", () => stopEdge(1));
      } else stopEdge(1);
    }
  });
  await waitForEdge(edgeUrl, edge);
  if (stopping) return;
  process.stderr.write(`edgesocks dev: local edge ready on ${edgeUrl} (token generated for this run)\n`);

  agent = spawn(process.execPath, [join(repoRoot, "local-agent", "cli", "main.ts"), "--edge", edgeUrl, ...agentArgs], {
    cwd: repoRoot,
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, EDGESOCKS_TOKEN: token },
  });
  agent.once("exit", (code) => {
    if (!stopping) {
      stopping = true;
      stopEdge(code ?? 1);
    }
  });
}

/** Sends `signal` to the process group led by `pid` (wrangler, its workerd and esbuild). */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

void main();
