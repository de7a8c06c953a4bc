// Is the Worker just deployed live? GET /healthz says whether it is edgesocks and which release;
// GET /check (tunnel/edge-probe.ts's checkToken) whether it accepts the token. A fresh Worker, or
// a new version after `wrangler secret put`, takes a few seconds to answer everywhere, so the
// checks are asked again until they pass or a deadline.

import { askHealthz, checkToken, healthzBody, type TokenCheck } from "../tunnel/edge-probe.ts";
import { parseEdgeUrl } from "../config/config-values.ts";
import { PROTOCOL_VERSION } from "../../worker/protocol/index.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";

/** How long one request of a check waits. */
const REQUEST_TIMEOUT_MS = 5_000;
/** Pause between two rounds of checks. */
const RETRY_INTERVAL_MS = 1_000;

/** What /healthz said: this release of edgesocks, another release (`version`), or something else (`reason`). */
export type HealthCheck =
  | { kind: "this-release"; protocol: number }
  | { kind: "other-release"; version: string; protocol: number }
  | { kind: "not-edgesocks"; reason: string };

export type WorkerProbe = { health: HealthCheck; token: TokenCheck };

/** One round: /healthz and the token check side by side; never throws. */
export async function probeWorker(edgeUrl: string, token: string): Promise<WorkerProbe> {
  const { tunnelUrl } = parseEdgeUrl(edgeUrl);
  const [health, tokenCheck] = await Promise.all([checkHealth(tunnelUrl), checkToken(tunnelUrl, token, { timeoutMs: REQUEST_TIMEOUT_MS })]);
  return { health, token: tokenCheck };
}

/** True when the Worker is this release and accepts the token: the deploy is done. */
export function isLive(probe: WorkerProbe): boolean {
  return probe.health.kind === "this-release" && probe.token.kind === "accepted";
}

/** True when the Worker is this release but has the token wrong or not at all (401, 503): its secret needs putting. */
export function lacksToken(probe: WorkerProbe): boolean {
  return probe.health.kind === "this-release" && probe.token.kind === "refused" && (probe.token.status === 401 || probe.token.status === 503);
}

/** Probes `edgeUrl` until `done` says so or `deadline` (Date.now()) passes; resolves with the last probe. */
export async function probeUntil(edgeUrl: string, token: string, done: (probe: WorkerProbe) => boolean, deadline: number): Promise<WorkerProbe> {
  for (;;) {
    const probe = await probeWorker(edgeUrl, token);
    if (done(probe) || Date.now() + RETRY_INTERVAL_MS > deadline) return probe;
    await new Promise((resolve) => setTimeout(resolve, RETRY_INTERVAL_MS));
  }
}

/** One line for a probe that is not live: what the Worker answered instead. Never carries the token. */
export function describeProbe(probe: WorkerProbe, edgeUrl: string): string {
  const { health, token } = probe;
  if (health.kind === "not-edgesocks") return `${edgeUrl}/healthz ${health.reason}`;
  if (health.kind === "other-release") return `${edgeUrl} still answers as edgesocks ${health.version}, not ${EDGESOCKS_VERSION}`;
  switch (token.kind) {
    case "accepted":
      return `${edgeUrl} is live and accepts the token`;
    case "refused":
      return `${edgeUrl} refused the token (HTTP ${token.status}${token.message === "" ? "" : ` ${token.message}`})`;
    case "unknown":
      return `${edgeUrl} answered the token check with HTTP ${token.status}`;
    case "unreachable":
      return `${edgeUrl} did not answer the token check (${token.cause})`;
  }
}

async function checkHealth(tunnelUrl: string): Promise<HealthCheck> {
  const answer = await askHealthz(tunnelUrl, REQUEST_TIMEOUT_MS);
  if (answer.kind === "unreachable") return { kind: "not-edgesocks", reason: `did not answer (${answer.cause})` };
  if (answer.status < 200 || answer.status > 299) return { kind: "not-edgesocks", reason: `answered HTTP ${answer.status}` };
  const body = healthzBody(answer.body);
  if (body === undefined) return { kind: "not-edgesocks", reason: "is not JSON" };
  if (body.name !== "edgesocks" || typeof body.protocol !== "number") return { kind: "not-edgesocks", reason: "does not name edgesocks" };
  if (body.version !== EDGESOCKS_VERSION || body.protocol !== PROTOCOL_VERSION) return { kind: "other-release", version: String(body.version), protocol: body.protocol };
  return { kind: "this-release", protocol: body.protocol };
}
