// The doctor's output, pure: one table per edge (check, result, detail, and under a warning or a
// failure its fix), then one summary line. Details quote what edges and resolvers answered, so
// every control character is escaped: each row stays one line however they answer.

import type { CheckResult, CheckStatus } from "./check.ts";

/** The result column's word for each status: a failure in capitals, to be found at a glance. */
const RESULT_WORDS: Readonly<Record<CheckStatus, string>> = { pass: "pass", warn: "warn", fail: "FAIL", skip: "skip" };
const INDENT = "  ";
const GAP = "  ";

/** One edge's rows, with the label it is shown under (the URL as the user gave it). */
export type EdgeReport = { edgeLabel: string; results: readonly CheckResult[] };

/** `text` on one line: control characters (line breaks, escapes a terminal would obey) as \uXXXX. */
export function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** The table of one edge: a heading, a header row, then each check; a fix on its own line under its row. */
export function renderEdgeTable(report: EdgeReport, position: { index: number; count: number }): string {
  const heading = position.count > 1 ? `edge ${position.index + 1} of ${position.count}: ${oneLine(report.edgeLabel)}` : `edge ${oneLine(report.edgeLabel)}`;
  const header = { check: "CHECK", result: "RESULT" };
  const checkWidth = Math.max(header.check.length, ...report.results.map((result) => oneLine(result.name).length));
  const resultWidth = Math.max(header.result.length, ...Object.values(RESULT_WORDS).map((word) => word.length));
  const detailColumn = INDENT.length + checkWidth + GAP.length + resultWidth + GAP.length;
  const row = (check: string, result: string, detail: string) => `${INDENT}${check.padEnd(checkWidth)}${GAP}${result.padEnd(resultWidth)}${GAP}${detail}`.trimEnd();
  const lines = [heading, row(header.check, header.result, "DETAIL")];
  for (const result of report.results) {
    lines.push(row(oneLine(result.name), RESULT_WORDS[result.status], oneLine(result.detail)));
    if (result.fix !== undefined && (result.status === "fail" || result.status === "warn")) lines.push(`${" ".repeat(detailColumn)}fix: ${oneLine(result.fix)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Counts of each status over every edge. */
export function countStatuses(reports: readonly EdgeReport[]): Record<CheckStatus, number> {
  const counts: Record<CheckStatus, number> = { pass: 0, warn: 0, fail: 0, skip: 0 };
  for (const report of reports) for (const result of report.results) counts[result.status]++;
  return counts;
}

/** True when no check of any edge failed: warnings and skips do not fail the doctor. */
export function allPassed(reports: readonly EdgeReport[]): boolean {
  return countStatuses(reports).fail === 0;
}

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** The last line: how many checks passed, warned, failed and were skipped over how many edges, and which edges failed. */
export function renderSummary(reports: readonly EdgeReport[]): string {
  const counts = countStatuses(reports);
  const edges = plural(reports.length, "edge");
  const tally = `${counts.pass} passed, ${plural(counts.warn, "warning")}, ${counts.fail} failed, ${counts.skip} skipped`;
  if (counts.fail === 0) return `edgesocks doctor: no check failed on ${edges} (${tally})\n`;
  const failing = reports.filter((report) => report.results.some((result) => result.status === "fail")).map((report) => oneLine(report.edgeLabel));
  return `edgesocks doctor: checks failed on ${failing.length} of ${edges}: ${failing.join(", ")} (${tally}); fix the first failure of each first\n`;
}
