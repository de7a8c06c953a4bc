// `edgesocks doctor`: checks each configured edge in order (local-agent/doctor/) and prints a
// table per edge with a fix for each failure, then one summary line.

import { ConfigError } from "../config/config.ts";
import { DOCTOR_USAGE, parseDoctorCommand } from "../doctor/doctor-args.ts";
import { checkEdge } from "../doctor/edge-checks.ts";
import { allPassed, oneLine, renderEdgeTable, renderSummary, type EdgeReport } from "../doctor/report.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";

/** Exit statuses: 0 no check failed (warnings included), 1 a check failed, 2 a bad command line or configuration. */
const EXIT_PASSED = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

/** Runs `edgesocks doctor` with the arguments after the subcommand; resolves to the exit status. */
export async function doctorCommand(argv: string[]): Promise<number> {
  let command;
  try {
    command = parseDoctorCommand(argv, process.env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`edgesocks doctor: ${error.message}\n`);
    return EXIT_USAGE;
  }
  if (command.kind === "help") {
    process.stdout.write(DOCTOR_USAGE);
    return EXIT_PASSED;
  }
  if (command.kind === "version") {
    process.stdout.write(`edgesocks ${EDGESOCKS_VERSION}\n`);
    return EXIT_PASSED;
  }
  const { config, warnings, target, cloudflareTarget } = command;
  for (const warning of warnings) process.stderr.write(`edgesocks doctor: warning: ${oneLine(warning)}\n`);
  const reports: EdgeReport[] = [];
  // One edge after another, each table printed as soon as its checks are done.
  for (const [index, edge] of config.edges.entries()) {
    const report = { edgeLabel: edge.edgeLabel, results: await checkEdge(edge, config, { target, cloudflareTarget }) };
    reports.push(report);
    process.stdout.write(`${index > 0 ? "\n" : ""}${renderEdgeTable(report, { index, count: config.edges.length })}`);
  }
  process.stdout.write(`\n${renderSummary(reports)}`);
  return allPassed(reports) ? EXIT_PASSED : EXIT_FAILED;
}
