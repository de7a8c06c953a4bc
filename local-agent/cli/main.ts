#!/usr/bin/env node
// The `edgesocks` command: a subcommand first (run, deploy, doctor, service), or only flags,
// which run the agent as `edgesocks run` does.

import { deployCommand } from "./deploy.ts";
import { doctorCommand } from "./doctor.ts";
import { runAgentCommand } from "./run.ts";
import { serviceCommand } from "./service.ts";

/** Subcommands that finish and hand back an exit status; `run` keeps the process until a signal. */
const FINISHING = { deploy: deployCommand, doctor: doctorCommand, service: serviceCommand } as const;

async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv;
  if (first === "run") return runAgentCommand(rest);
  if (first !== undefined && Object.hasOwn(FINISHING, first)) {
    process.exitCode = await FINISHING[first as keyof typeof FINISHING](rest);
    return;
  }
  return runAgentCommand(argv);
}

void main(process.argv.slice(2));
