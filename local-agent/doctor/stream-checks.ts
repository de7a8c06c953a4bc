// The doctor's two checks that open a stream through the edge (test-stream.ts): to --target, an
// ordinary destination, and to --cloudflare-target, one on Cloudflare's network, which a
// Worker's connect() cannot reach (README: "Sites hosted on Cloudflare"). The verdicts are pure.

import type { AgentConfig } from "../config/config.ts";
import type { OnCloudflareMode } from "../config/config-values.ts";
import { STATUS_NAMES } from "../tunnel/stream-request.ts";
import { StreamStatus, formatDestination, type Destination } from "../../worker/protocol/index.ts";
import { CheckName, fail, pass, warn, withDeadline, type CheckResult } from "./check.ts";
import { openTestStream, type StreamOutcome } from "./test-stream.ts";

const TUNNEL_FIX = "the edge answered /check but refuses tunnels: check the edge's logs (npx wrangler tail)";

/** A row for an outcome that is not an OPENED: the tunnel itself did not work. */
function tunnelFailure(name: string, outcome: Exclude<StreamOutcome, { kind: "opened" }>): CheckResult {
  switch (outcome.kind) {
    case "refused": {
      const said = `HTTP ${outcome.httpStatus}${outcome.explanation === "" ? "" : ` ${outcome.explanation}`}`;
      if (outcome.httpStatus === 401) return fail(name, `the edge refused the tunnel (${said})`, "set EDGESOCKS_TOKEN or --token-file to one of the Worker's tokens");
      return fail(name, `the edge refused the tunnel (${said})`, TUNNEL_FIX);
    }
    case "broken":
      return fail(name, outcome.cause, TUNNEL_FIX);
    case "timeout":
      return fail(name, `no OPENED from the edge within ${outcome.timeoutMs} ms (--open-timeout-ms)`, "the edge or the destination is slow: try again, or raise --open-timeout-ms");
  }
}

/** Why an open failed, as the agent's log says it, with the edge's reason. */
function openFailure(status: StreamStatus, reason: string): string {
  return `${STATUS_NAMES[status] ?? `status ${status}`}${reason === "" ? "" : `: ${reason}`}`;
}

/** The test-stream row: the edge opened --target, or what stopped it. */
export function targetVerdict(outcome: StreamOutcome, target: Destination): CheckResult {
  const name = CheckName.Stream;
  const where = formatDestination(target);
  if (outcome.kind !== "opened") return tunnelFailure(name, outcome);
  const { status, reason } = outcome;
  if (status === StreamStatus.Ok) return pass(name, `the edge opened ${where} in ${outcome.elapsedMs} ms (protocol v${outcome.version})`);
  const detail = `the edge could not open ${where} (${openFailure(status, reason)})`;
  if (status === StreamStatus.OnCloudflare) return warn(name, detail, "the target is on Cloudflare's network (see the Cloudflare-hosted row): pass a --target outside it");
  if (status === StreamStatus.HostUnreachable) return fail(name, detail, "check the spelling of --target's host");
  if (status === StreamStatus.Timeout) return fail(name, detail, "the target did not answer the edge in time: try another --target");
  return fail(name, detail, "the edge works but could not reach the target: check --target, or try another");
}

/**
 * The Cloudflare-hosted row. OPENED Ok: the edge's fallback carried it. OnCloudflare: no
 * fallback at the edge applies, which is a warning (those sites are refused, everything else
 * works), or a pass when the agent opens them directly (--on-cloudflare direct). Another
 * failure: a fallback is configured and failed.
 */
export function cloudflareVerdict(outcome: StreamOutcome, target: Destination, onCloudflare: OnCloudflareMode): CheckResult {
  const name = CheckName.Cloudflare;
  const where = formatDestination(target);
  if (outcome.kind !== "opened") return tunnelFailure(name, outcome);
  const { status, reason } = outcome;
  if (status === StreamStatus.Ok) return pass(name, `the edge opened ${where} in ${outcome.elapsedMs} ms: sites hosted on Cloudflare work (the edge's fallback carries them)`);
  if (status === StreamStatus.OnCloudflare) {
    if (onCloudflare === "direct") return pass(name, `${where} is on Cloudflare's network and the edge has no fallback; the agent opens such sites from this machine (--on-cloudflare direct)`);
    return warn(name, `sites hosted on Cloudflare will be refused: ${where} is on Cloudflare's network and no fallback at the edge applies`, `configure a fallback at the Worker (README: "Sites hosted on Cloudflare") or run the agent with --on-cloudflare direct`);
  }
  // A v2 tunnel hears NotAllowed where a v3 one hears OnCloudflare (statusForVersion); a v2 edge does not classify at all.
  if (outcome.version < 3) return warn(name, `the edge speaks protocol v${outcome.version}, which does not tell Cloudflare-hosted sites apart (${openFailure(status, reason)})`, "redeploy the Worker (npm run deploy)");
  return fail(name, `the edge could not open ${where} (${openFailure(status, reason)})`, "check the fallback the reason names (EDGESOCKS_UPSTREAM, EDGESOCKS_CLOUDFLARE_RELAY or EDGESOCKS_NAT64_PREFIX at the Worker)");
}

/** How long a stream row may take in all: the upgrade and the OPENED, plus a second for the close. */
function streamDeadlineMs(config: AgentConfig): number {
  return config.openTimeoutMs + 1_000;
}

/** The test-stream row: a stream through the edge to --target. */
export function checkTargetStream(config: AgentConfig, tunnelUrl: string, target: Destination): Promise<CheckResult> {
  return withDeadline(CheckName.Stream, streamDeadlineMs(config), TUNNEL_FIX, async () => targetVerdict(await openTestStream(config, tunnelUrl, target), target));
}

/** The Cloudflare-hosted row: a stream through the edge to --cloudflare-target. */
export function checkCloudflareStream(config: AgentConfig, tunnelUrl: string, target: Destination): Promise<CheckResult> {
  return withDeadline(CheckName.Cloudflare, streamDeadlineMs(config), TUNNEL_FIX, async () => cloudflareVerdict(await openTestStream(config, tunnelUrl, target), target, config.onCloudflare));
}
