#!/usr/bin/env node
// The edgesocks agent's command line: parse, start, print one ready line, stop on a signal.

import { ConfigError, USAGE, parseAgentCommand } from "./config.ts";
import { probeEdge } from "./edge-probe.ts";
import { createLogger } from "./log.ts";
import { startAgent } from "./server.ts";
import { EDGESOCKS_VERSION } from "../worker/version.ts";

/** Exit statuses: 2 for a bad command line, 1 for a start-up failure. */
const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

async function main(): Promise<void> {
  let command;
  try {
    command = parseAgentCommand(process.argv.slice(2), process.env);
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
  const log = createLogger(config.logLevel);
  let agent;
  try {
    agent = await startAgent(config, log);
  } catch (error) {
    process.stderr.write(`edgesocks: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(EXIT_FAILURE);
  }
  const { address, port } = agent.address;
  const socksAddress = address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
  process.stdout.write(`edgesocks: SOCKS5, SOCKS4 and HTTP proxy on ${socksAddress} -> edge ${config.edgeLabel}\n`);
  void probeEdge(config.tunnelUrl).then((warning) => {
    if (warning) log.warn(warning);
  });
  const stop = (signal: string) => {
    log.info(`${signal}: closing`);
    void agent.close().then(() => process.exit(0));
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
}

void main();
