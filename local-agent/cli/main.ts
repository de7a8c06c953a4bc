#!/usr/bin/env node
// The `edgesocks` command: a subcommand first (run, deploy, doctor, service), or only flags,
// which run the agent as `edgesocks run` does.

import { deployCommand } from "./deploy.ts";
import { doctorCommand } from "./doctor.ts";
import { runAgentCommand } from "./run.ts";
import { serviceCommand } from "./service.ts";
import { USAGE } from "../config/config.ts";

/** Subcommands that finish and hand back an exit status; `run` keeps the process until a signal. */
const FINISHING = { deploy: deployCommand, doctor: doctorCommand, service: serviceCommand } as const;
const COMMANDS = ["run", ...Object.keys(FINISHING)] as const;
const EXIT_USAGE = 2;

/** `edgesocks --help`: the subcommands, then the agent's own help (what `edgesocks` with only flags runs). */
export const TOP_USAGE = `Usage: edgesocks [run] [options]
       edgesocks deploy|doctor|service [options]

Commands:
  run       run the proxy agent (the default when the first argument is an option)
  deploy    deploy the edgesocks Worker to your Cloudflare account
  doctor    check the configuration, the edge and the token, and say what is wrong
  service   install or remove the agent as a service that starts at login

\`edgesocks COMMAND --help\` shows a command's own options. The options of run:

${USAGE.replace(/^Usage: .*\n\n/, "")}`;

async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv;
  if (first === "run") return runAgentCommand(rest);
  if (first !== undefined && Object.hasOwn(FINISHING, first)) {
    process.exitCode = await FINISHING[first as keyof typeof FINISHING](rest);
    return;
  }
  if (first === "--help" || first === "-h" || first === "help") {
    process.stdout.write(TOP_USAGE);
    return;
  }
  // A first word that is not a flag is a command name, mistyped: not the agent's stray argument.
  if (first !== undefined && !first.startsWith("-")) {
    process.stderr.write(`edgesocks: ${unknownCommand(first)}\n`);
    process.exitCode = EXIT_USAGE;
    return;
  }
  return runAgentCommand(argv);
}

/**
 * The message for a first argument that names no command. It is quoted only when it is a short
 * word: a URL may carry credentials and a long string may be the token typed in the wrong place.
 */
function unknownCommand(word: string): string {
  const commands = `commands: ${COMMANDS.join(", ")} (see edgesocks --help)`;
  if (/^[a-z][a-z0-9-]{0,14}$/i.test(word)) return `unknown command ${JSON.stringify(word)}; ${commands}`;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(word)) return `argument 1 looks like a URL: the edge goes in --edge URL (see edgesocks --help)`;
  return `argument 1 is not a command (not shown, since it may be a secret); ${commands}`;
}

void main(process.argv.slice(2));
