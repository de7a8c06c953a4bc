// A start-up check of the edge: GET /healthz, so a wrong --edge or a Worker from another
// release is reported once at start rather than as a failure on every connection.

import { PROTOCOL_VERSION, PROTOCOL_VERSIONS, TUNNEL_PATH } from "../../worker/protocol/index.ts";

/** How long the start-up check waits; the agent serves clients meanwhile either way. */
const PROBE_TIMEOUT_MS = 5_000;

/** The healthz URL for a tunnel URL (ws[s]://host/base/tunnel -> http[s]://host/base/healthz). */
export function healthzUrl(tunnelUrl: string): string {
  const url = new URL(tunnelUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = `${url.pathname.slice(0, -TUNNEL_PATH.length)}/healthz`;
  return url.toString();
}

/** Resolves with a warning to print, or undefined when the edge answers as this agent expects. */
export async function probeEdge(tunnelUrl: string): Promise<string | undefined> {
  const url = healthzUrl(tunnelUrl);
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS), redirect: "manual" });
  } catch (error) {
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : error instanceof Error ? error.message : String(error);
    return `the edge is not answering ${url} (${cause}); connections will fail until it does`;
  }
  if (!response.ok) return `the edge answered ${url} with HTTP ${response.status}; is --edge the edgesocks Worker?`;
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    return `the edge's ${url} is not edgesocks JSON; is --edge the edgesocks Worker?`;
  }
  const protocol = (body as { protocol?: unknown }).protocol;
  if (!(PROTOCOL_VERSIONS as readonly unknown[]).includes(protocol)) {
    return `the edge speaks protocol ${String(protocol)}, this agent ${PROTOCOL_VERSIONS.join(" and ")}: redeploy the Worker or update the agent`;
  }
  if (protocol !== PROTOCOL_VERSION) {
    return `the edge speaks protocol ${String(protocol)}, an older version this agent still speaks: connections work, but ${whatOlderEdgesLack(protocol as number)}; redeploy the Worker (npm run deploy)`;
  }
  return undefined;
}

/** What an edge of `protocol` does not do that this agent's newest version does, newest first. */
function whatOlderEdgesLack(protocol: number): string {
  const lacks: string[] = [];
  // v4: windows that grow to the path.
  if (protocol < 4) lacks.push("its windows do not grow to the path, so one stream moves at most one window (--window-bytes) per round trip on a long link");
  // v3: the edge classifies the dials it is refused.
  if (protocol < 3) {
    lacks.push(
      'it does not classify its refused dials: a Cloudflare-hosted destination or a name that does not resolve is reported as "connection refused", and --on-cloudflare direct cannot apply',
    );
  }
  return lacks.join("; and ");
}
