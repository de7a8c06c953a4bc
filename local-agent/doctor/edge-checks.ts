// Every check of one edge, in order, each after the ones it needs: a check whose precondition
// failed is skipped with the reason, so the first failure in the table is the one to fix.

import type { AgentConfig, EdgeTarget } from "../config/config.ts";
import { askHealthz, healthzUrl } from "../tunnel/edge-probe.ts";
import { AddressType, type Destination } from "../../worker/protocol/index.ts";
import { CHECK_TIMEOUT_MS, CheckName, skip, type CheckResult } from "./check.ts";
import { FALLBACK_DNS_NAME, checkDnsRow, checkTokenRow, clockVerdict, healthzVerdict } from "./edge-http-checks.ts";
import { checkName, checkTcp, checkTls, edgeAddress } from "./reach-checks.ts";
import { checkCloudflareStream, checkTargetStream } from "./stream-checks.ts";

/** Where the doctor's streams go. */
export type DoctorTargets = { target: Destination; cloudflareTarget: Destination };

/** The rows the checks after `from` (in CheckName order) get when they cannot run. */
function skipped(from: CheckName, why: string, only?: readonly CheckName[]): CheckResult[] {
  const order = Object.values(CheckName);
  return order.slice(order.indexOf(from) + 1).filter((name) => only === undefined || only.includes(name)).map((name) => skip(name, why));
}

/** The name the DNS row asks for: the target's, or a fixed one when the target is an IP literal. */
export function dnsQueryName(target: Destination): string {
  return target.type === AddressType.Domain ? target.host : FALLBACK_DNS_NAME;
}

/**
 * Runs every check of `edge` in CheckName order; resolves with one row per check, never rejects.
 * No row carries the token, whatever the edge (or what answers in its place) echoed.
 */
export async function checkEdge(edge: EdgeTarget, config: AgentConfig, targets: DoctorTargets): Promise<CheckResult[]> {
  const rows = await runChecks(edge, config, targets);
  const scrub = (text: string) => text.replaceAll(config.token, "<token>");
  return rows.map((row) => ({ ...row, detail: scrub(row.detail), ...(row.fix === undefined ? {} : { fix: scrub(row.fix) }) }));
}

async function runChecks(edge: EdgeTarget, config: AgentConfig, targets: DoctorTargets): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const address = edgeAddress(edge.tunnelUrl);

  const name = await checkName(address);
  results.push(name);
  if (name.status === "fail") return [...results, ...skipped(CheckName.Name, "needs the edge's name to resolve")];
  const tcp = await checkTcp(address);
  results.push(tcp);
  if (tcp.status === "fail") return [...results, ...skipped(CheckName.Tcp, "needs a TCP connection to the edge")];
  const tls = await checkTls(address);
  results.push(tls);
  if (tls.status === "fail") return [...results, ...skipped(CheckName.Tls, "needs a TLS handshake with the edge")];

  const answer = await askHealthz(edge.tunnelUrl, CHECK_TIMEOUT_MS);
  const healthz = healthzVerdict(answer, healthzUrl(edge.tunnelUrl));
  results.push(healthz);
  // The clock compares the healthz answer's Date: it needs an answer, not an edgesocks one.
  const clock = answer.kind === "answered" ? clockVerdict(answer.date, answer.sentAtMs, answer.receivedAtMs) : skip(CheckName.Clock, "needs an HTTP answer from the edge");
  if (healthz.status === "fail") return [...results, ...skipped(CheckName.Healthz, "needs /healthz to answer as edgesocks", [CheckName.Token, CheckName.Stream, CheckName.Dns, CheckName.Cloudflare]), clock];

  const token = await checkTokenRow(edge.tunnelUrl, config.token);
  results.push(token);
  if (token.status === "fail") return [...results, ...skipped(CheckName.Token, "needs an accepted token", [CheckName.Stream, CheckName.Dns, CheckName.Cloudflare]), clock];

  results.push(await checkTargetStream(config, edge.tunnelUrl, targets.target));
  results.push(await checkDnsRow(edge.tunnelUrl, config.token, dnsQueryName(targets.target)));
  results.push(await checkCloudflareStream(config, edge.tunnelUrl, targets.cloudflareTarget));
  results.push(clock);
  return results;
}
