// `edgesocks run` (and `edgesocks` with only flags): parse, listen, check the edge and the token,
// print one ready line, stop on a signal.

import { ConfigError, USAGE, parseAgentCommand } from "../config/config.ts";
import { checkEdgesAtStart } from "../tunnel/edge-probe.ts";
import { holdLine } from "../tunnel/held-bytes.ts";
import { createLogger } from "../log.ts";
import { startAgent } from "../server.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";

/** Exit statuses: 2 for a bad command line, 1 for a start-up failure, 3 for a shutdown that reset transfers. */
const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;
const EXIT_DRAIN_CUT = 3;
/** Time the tunnels' close frames get to leave before the process exits. */
const EXIT_FLUSH_MS = 100;
/**
 * A signal this soon after the first is the same request, not a second one: Ctrl-C under
 * `npm start` reaches the agent twice, from the terminal and forwarded by the dev runner.
 */
const REPEAT_SIGNAL_MS = 500;
/** Log lines kept while the start-up check runs (at most START_CHECK_TIMEOUT_MS); later ones are counted. */
const MAX_HELD_LOG_LINES = 1_000;

/** Runs the agent until a signal stops it; the process exits with the statuses above. */
export async function runAgentCommand(argv: string[]): Promise<void> {
  let command;
  try {
    command = parseAgentCommand(argv, process.env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`edgesocks: ${error.message}\n`);
    process.exit(EXIT_USAGE);
  }
  if (command.kind === "help") {
    process.stdout.write(USAGE);
    return;
  }
  if (command.kind === "version") {
    process.stdout.write(`edgesocks ${EDGESOCKS_VERSION}\n`);
    return;
  }
  const { config } = command;
  // Until the start-up check has spoken, log lines (the warm pool's first failures, early
  // clients) are held: a refused token must be the one line the agent leaves.
  let held: string[] | undefined = [];
  let droppedLines = 0;
  const log = createLogger(config.logLevel, (line) => {
    if (held === undefined) process.stderr.write(line);
    else if (held.length < MAX_HELD_LOG_LINES) held.push(line);
    else droppedLines++;
  });
  for (const warning of command.warnings) log.warn(warning);
  let agent;
  try {
    agent = await startAgent(config, log);
  } catch (error) {
    process.stderr.write(`edgesocks: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(EXIT_FAILURE);
  }
  const check = await checkEdgesAtStart(config.edges, config.token);
  if (check.refusal !== undefined) {
    process.stderr.write(`edgesocks: ${check.refusal}\n`);
    process.exit(EXIT_FAILURE);
  }
  for (const warning of check.warnings) log.warn(warning);
  for (const line of held) process.stderr.write(line);
  held = undefined;
  if (droppedLines > 0) log.warn(`${droppedLines} more log lines written during the start-up check were dropped`);
  const { address, port } = agent.address;
  const socksAddress = address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
  const edgeList = config.edges.length === 1 ? `edge ${config.edgeLabel}` : `edges ${config.edges.map((edge) => edge.edgeLabel).join(", ")}`;
  process.stdout.write(`edgesocks: SOCKS5, SOCKS4 and HTTP proxy on ${socksAddress} -> ${edgeList}\n`);
  let stoppingSince: number | undefined;
  const stop = (signal: string) => {
    if (stoppingSince !== undefined) {
      if (Date.now() - stoppingSince < REPEAT_SIGNAL_MS) return;
      log.warn(`${signal} again: resetting the ${agent.openConnections} connections still open`);
      agent.abort();
      return;
    }
    stoppingSince = Date.now();
    const open = agent.openConnections;
    log.info(
      open === 0
        ? `${signal}: closing (no open connections)`
        : `${signal}: no longer accepting; ${open} open connections have ${config.drainTimeoutMs} ms to finish (--drain-timeout-ms), then they are reset; a second signal resets them now`,
    );
    void agent.close(config.drainTimeoutMs).then(({ finished, reset }) => {
      if (reset === 0) log.info(`closed: ${finished} connections finished`);
      else log.warn(`closed: ${finished} connections finished, ${reset} reset before they finished`);
      setTimeout(() => process.exit(reset === 0 ? 0 : EXIT_DRAIN_CUT), EXIT_FLUSH_MS);
    });
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGUSR2", () => log.info(holdLine()));
}
