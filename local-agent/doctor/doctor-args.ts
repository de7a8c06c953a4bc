// `edgesocks doctor`'s command line: its own few options, and every option of the agent, read as
// the agent reads them (parseAgentCommand), so the doctor checks the configuration the agent
// would run with. Pure but for what parseAgentCommand reads (the --config file, the token file).

import { parseArgs } from "node:util";
import { AGENT_OPTIONS, ConfigError, USAGE, parseAgentCommand, type AgentConfig } from "../config/config.ts";
import { argvProblem } from "../config/argv-errors.ts";
import { HttpProxyError, parseAuthority } from "../front/http-proxy.ts";
import type { Destination } from "../../worker/protocol/index.ts";
import { FALLBACK_DNS_NAME } from "./edge-http-checks.ts";

/**
 * Where the test stream goes unless --target says: IANA's example domain (RFC 2606 reserves it
 * for documentation), served outside Cloudflare's network, on the port every network lets out.
 */
export const DEFAULT_TARGET = "example.com:443";
/** A destination on Cloudflare's network for the Cloudflare-hosted row: Cloudflare's own site. */
export const DEFAULT_CLOUDFLARE_TARGET = "www.cloudflare.com:443";

/** The doctor's own options; every other option is the agent's (AGENT_OPTIONS). */
export const DOCTOR_OPTIONS = {
  target: { type: "string" },
  "cloudflare-target": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

export const DOCTOR_USAGE = `Usage: edgesocks doctor [--target HOST:PORT] [--cloudflare-target HOST:PORT] [options of run]

Checks each configured edge in order, as the agent would use it, and prints a table per edge
with a fix for each failure: the name resolves, TCP and TLS reach it, /healthz names edgesocks
at a protocol this agent speaks, the token is accepted, a test stream through the edge opens,
the edge's DNS over HTTPS answers, sites hosted on Cloudflare work, and the clock agrees with
the edge's. A check that cannot run after an earlier failure is skipped.

Options:
  --target HOST:PORT             where the test stream goes (default ${DEFAULT_TARGET}); the DNS
                                 check asks for its host name (${FALLBACK_DNS_NAME} for an IP)
  --cloudflare-target HOST:PORT  a destination on Cloudflare's network, for the Cloudflare-hosted
                                 check (default ${DEFAULT_CLOUDFLARE_TARGET})
  -h, --help                     show this help

The options of \`edgesocks run\` (edgesocks run --help) are read as the agent reads them: --edge
(repeatable), --config, --token-file or EDGESOCKS_TOKEN, --open-timeout-ms (each stream
check's timeout), --on-cloudflare. The token is never printed.

Exit status: 0 when no check failed (a warning, such as no fallback for Cloudflare-hosted
sites, does not fail), 1 when one did, 2 for a bad command line or configuration.
`;

export type DoctorCommand =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "check"; config: AgentConfig; warnings: string[]; target: Destination; cloudflareTarget: Destination };

/**
 * Splits argv into the doctor's options and the rest (the agent's, in their order). Expects an
 * argv that argvProblem has passed: every string option has its value.
 */
export function splitDoctorArgs(argv: readonly string[]): { doctor: { target?: string; cloudflareTarget?: string; help: boolean }; agentArgv: string[] } {
  const { tokens } = parseArgs({ args: [...argv], options: { ...AGENT_OPTIONS, ...DOCTOR_OPTIONS }, strict: false, allowPositionals: true, tokens: true });
  const doctor: { target?: string; cloudflareTarget?: string; help: boolean } = { help: false };
  const taken = new Set<number>();
  for (const token of tokens) {
    if (token.kind !== "option" || !Object.hasOwn(DOCTOR_OPTIONS, token.name)) continue;
    // --help is answered before the rest is read: nothing of argv needs to leave for it.
    if (token.name === "help") {
      doctor.help = true;
      continue;
    }
    taken.add(token.index);
    if (token.name === "target") doctor.target = token.value;
    else doctor.cloudflareTarget = token.value;
    if (!token.inlineValue) taken.add(token.index + 1);
  }
  return { doctor, agentArgv: argv.filter((_, index) => !taken.has(index)) };
}

/** `--target`-style HOST:PORT as a destination; a ConfigError naming `flag` when it is not one. */
export function parseTarget(text: string, flag: string): Destination {
  try {
    return parseAuthority(text);
  } catch (error) {
    if (error instanceof HttpProxyError) throw new ConfigError(`${flag} ${error.message}; expected HOST:PORT, e.g. ${DEFAULT_TARGET}`);
    throw error;
  }
}

/** Parses the doctor's argv and the agent's configuration; throws ConfigError with a one-line message. */
export function parseDoctorCommand(argv: string[], env: Record<string, string | undefined>): DoctorCommand {
  const problem = argvProblem(argv, { options: { ...AGENT_OPTIONS, ...DOCTOR_OPTIONS }, usage: `${DOCTOR_USAGE}\n${USAGE}`, helpCommand: "edgesocks doctor --help", secretFollowers: ["user"] });
  if (problem !== undefined) throw new ConfigError(problem);
  const { doctor, agentArgv } = splitDoctorArgs(argv);
  if (doctor.help) return { kind: "help" };
  const target = parseTarget(doctor.target ?? DEFAULT_TARGET, "--target");
  const cloudflareTarget = parseTarget(doctor.cloudflareTarget ?? DEFAULT_CLOUDFLARE_TARGET, "--cloudflare-target");
  const command = parseAgentCommand(agentArgv, env);
  if (command.kind === "help") return { kind: "help" };
  if (command.kind === "version") return { kind: "version" };
  return { kind: "check", config: command.config, warnings: command.warnings, target, cloudflareTarget };
}
