// The doctor's checks that ask the edge over plain HTTP: GET /healthz (is it edgesocks, and
// which protocol), GET /check (is the token accepted; the agent's own checkToken), POST /dns
// (does the edge's DNS-over-HTTPS resolver answer; the agent's own queryDnsOverEdge) and the
// clock (the Date of the healthz answer against this machine's). Each verdict is a pure
// function of what came back, so the tests hold every message and fix to it.

import { PROTOCOL_VERSION, PROTOCOL_VERSIONS } from "../../worker/protocol/index.ts";
import { errorText } from "../error-text.ts";
import { DnsWireError, Rcode, RecordType, encodeAddressQuery, parseAddressAnswer } from "../../worker/dial/dns-wire.ts";
import { DNS_QUERY_TIMEOUT_MS, dnsUrl, queryDnsOverEdge, type DnsOutcome } from "../tunnel/edge-dns.ts";
import { MAX_HEALTHZ_BODY_BYTES, checkToken, type HealthzAnswer, type TokenCheck } from "../tunnel/edge-probe.ts";
import { CHECK_TIMEOUT_MS, CheckName, fail, pass, skip, warn, withDeadline, type CheckResult } from "./check.ts";

/** Longest piece of a stranger's answer a detail quotes. */
const MAX_QUOTED_CHARS = 60;

const NOT_EDGESOCKS_FIX = "--edge must be the edgesocks Worker's URL (npm run deploy prints it)";
const REDEPLOY = "redeploy the Worker (npm run deploy)";

/** The healthz row: edgesocks at a protocol this agent speaks passes; an older one it still speaks warns. */
export function healthzVerdict(answer: HealthzAnswer, url: string): CheckResult {
  const name = CheckName.Healthz;
  if (answer.kind === "unreachable") return fail(name, `GET ${url}: ${answer.cause}`, "the edge takes TCP connections but does not answer HTTP: check the scheme and port in --edge");
  if (answer.status !== 200) return fail(name, `GET ${url} answered HTTP ${answer.status}`, NOT_EDGESOCKS_FIX);
  if (answer.body === "too large") return fail(name, `GET ${url} answered more than ${MAX_HEALTHZ_BODY_BYTES} bytes: not edgesocks`, NOT_EDGESOCKS_FIX);
  const text = new TextDecoder().decode(answer.body);
  let body: { name?: unknown; version?: unknown; protocol?: unknown };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    return fail(name, `GET ${url} is not JSON (${JSON.stringify(text.slice(0, MAX_QUOTED_CHARS))}): not edgesocks`, NOT_EDGESOCKS_FIX);
  }
  if (body === null || typeof body !== "object" || body.name !== "edgesocks") return fail(name, `GET ${url} does not name edgesocks`, NOT_EDGESOCKS_FIX);
  const version = typeof body.version === "string" ? body.version.slice(0, MAX_QUOTED_CHARS) : "of unknown version";
  const protocol = body.protocol;
  const speaks = `this agent speaks ${PROTOCOL_VERSIONS.join(", ")}`;
  if (typeof protocol !== "number" || !(PROTOCOL_VERSIONS as readonly number[]).includes(protocol)) {
    const shown = typeof protocol === "number" ? String(protocol) : "no number";
    const fix = typeof protocol === "number" && protocol > PROTOCOL_VERSION ? "update the agent to the Worker's release" : REDEPLOY;
    return fail(name, `edgesocks ${version} speaks protocol ${shown}, ${speaks}`, fix);
  }
  if (protocol < PROTOCOL_VERSION) {
    return warn(name, `edgesocks ${version}, protocol ${protocol}: older than this agent's ${PROTOCOL_VERSION}; connections work, without what newer versions add`, REDEPLOY);
  }
  return pass(name, `edgesocks ${version}, protocol ${protocol} (${speaks})`);
}

/** The token row, from the agent's own GET /check. */
export function tokenVerdict(check: TokenCheck): CheckResult {
  const name = CheckName.Token;
  switch (check.kind) {
    case "accepted":
      return pass(name, "the edge accepts the token (GET /check: 204)");
    case "refused": {
      const said = `HTTP ${check.status}${check.message === "" ? "" : ` ${check.message}`}`;
      if (check.status === 401) return fail(name, `the edge refused the token (${said})`, "set EDGESOCKS_TOKEN or --token-file to one of the Worker's tokens (npx wrangler secret put EDGESOCKS_TOKEN sets them)");
      if (check.status === 503) return fail(name, `the Worker has no token set (${said})`, "set one: npx wrangler secret put EDGESOCKS_TOKEN");
      if (check.status === 500) return fail(name, `the Worker is misconfigured (${said})`, "fix the Worker variable the message names, then redeploy (npm run deploy)");
      return fail(name, `the edge refused the token check (${said})`, NOT_EDGESOCKS_FIX);
    }
    case "unknown":
      return check.status === 404
        ? warn(name, "the edge has no GET /check (a release older than this agent): the token was not checked", REDEPLOY)
        : fail(name, `GET /check answered HTTP ${check.status}`, NOT_EDGESOCKS_FIX);
    case "unreachable":
      return fail(name, `GET /check: ${check.cause}`, "the edge answered /healthz but not /check: try again, then check the edge's logs (npx wrangler tail)");
  }
}

/** The token row: the agent's own checkToken under the doctor's deadline. */
export async function checkTokenRow(tunnelUrl: string, token: string): Promise<CheckResult> {
  return tokenVerdict(await checkToken(tunnelUrl, token, { timeoutMs: CHECK_TIMEOUT_MS }));
}

/** The name the DNS row asks the edge about when the test stream's target is an IP literal. */
export const FALLBACK_DNS_NAME = "example.com";

const DOH_FIX = "check EDGESOCKS_DOH_URL at the Worker (unset: https://cloudflare-dns.com/dns-query), then redeploy";

/** The DNS row: an A query for `queryName` through the edge's POST /dns, as SOCKS5 UDP ASSOCIATE's DNS goes. */
export function dnsVerdict(outcome: DnsOutcome, queryName: string, elapsedMs: number): CheckResult {
  const name = CheckName.Dns;
  if ("failure" in outcome) {
    if (outcome.kind === "answered") return fail(name, `POST /dns for ${queryName}: ${outcome.failure}`, DOH_FIX);
    return fail(name, `POST /dns for ${queryName}: ${outcome.failure}`, "the edge answered /healthz but not /dns: try again, then check the edge's logs (npx wrangler tail)");
  }
  let answer;
  try {
    answer = parseAddressAnswer(outcome.answer, RecordType.A);
  } catch (error) {
    const why = error instanceof DnsWireError ? error.message : errorText(error);
    return fail(name, `the edge's resolver answered ${queryName} with a message that does not parse: ${why}`, DOH_FIX);
  }
  const after = `in ${elapsedMs} ms, through the edge's resolver`;
  if (answer.rcode === Rcode.NoError) {
    return pass(name, `${queryName}: ${answer.addresses.length === 0 ? "no IPv4 address" : answer.addresses.join(", ")} (${after})`);
  }
  // The resolver answered: it works, and the name does not exist there.
  if (answer.rcode === Rcode.NxDomain) return pass(name, `${queryName} does not exist (NXDOMAIN ${after})`);
  const rcodeName = answer.rcode === Rcode.ServFail ? "SERVFAIL" : `RCODE ${answer.rcode}`;
  return fail(name, `the edge's resolver answered ${queryName} with ${rcodeName}`, DOH_FIX);
}

/** The DNS row: asks the edge (the agent's own queryDnsOverEdge) and judges the answer. */
export async function checkDns(tunnelUrl: string, token: string, queryName: string): Promise<CheckResult> {
  let query: Uint8Array;
  try {
    query = encodeAddressQuery(queryName, RecordType.A, 0);
  } catch (error) {
    return fail(CheckName.Dns, `${queryName} cannot be asked: ${errorText(error)}`, "pass a --target whose host is a valid name");
  }
  const startedMs = performance.now();
  const outcome = await queryDnsOverEdge(dnsUrl(tunnelUrl), token, query, AbortSignal.timeout(DNS_QUERY_TIMEOUT_MS));
  return dnsVerdict(outcome, queryName, Math.round(performance.now() - startedMs));
}

/** The DNS row under the doctor's deadline: a little over the agent's own per-query timeout. */
export function checkDnsRow(tunnelUrl: string, token: string, queryName: string): Promise<CheckResult> {
  return withDeadline(CheckName.Dns, DNS_QUERY_TIMEOUT_MS + 1_000, DOH_FIX, () => checkDns(tunnelUrl, token, queryName));
}

/**
 * Clock offsets the clock row tolerates. Past 30 s one-time codes (TOTP's 30 s steps, RFC 6238)
 * typed from this machine's authenticator start failing: a warning. Past 300 s (Kerberos's
 * default tolerance; signed API requests allow about as much) sign-ins and certificate checks
 * start failing: a failure. edgesocks itself does not depend on the clock.
 */
export const CLOCK_WARN_MS = 30_000;
export const CLOCK_FAIL_MS = 300_000;
const CLOCK_FIX = "set this machine's clock from the network (timedatectl set-ntp true, or the system's date and time settings)";

/**
 * The clock row: this machine's time when the healthz answer arrived against the edge's Date.
 * Date has whole seconds, so the edge's time lies in [Date, Date + 1 s) plus up to the round
 * trip; offsets within that uncertainty count as none.
 */
export function clockVerdict(dateHeader: string | null, sentAtMs: number, receivedAtMs: number): CheckResult {
  const name = CheckName.Clock;
  // Cloudflare's edge dates every answer; a local edge (wrangler dev) sends no Date at all.
  if (dateHeader === null) return skip(name, "the edge's answer has no Date header to compare (wrangler dev sends none)");
  const edgeMs = Date.parse(dateHeader);
  if (Number.isNaN(edgeMs)) return skip(name, `the edge's Date header does not parse (${JSON.stringify(dateHeader.slice(0, MAX_QUOTED_CHARS))})`);
  // Compared at the midpoints: the edge stamped Date somewhere in the round trip, within its second.
  const offsetMs = (sentAtMs + receivedAtMs) / 2 - (edgeMs + 500);
  const uncertaintyMs = 500 + (receivedAtMs - sentAtMs) / 2;
  const beyondMs = Math.max(0, Math.abs(offsetMs) - uncertaintyMs);
  const direction = offsetMs > 0 ? "ahead of" : "behind";
  const amount = `${formatSeconds(beyondMs)} ${direction} the edge's clock`;
  if (beyondMs > CLOCK_FAIL_MS) return fail(name, `this machine's clock is ${amount} (more than ${CLOCK_FAIL_MS / 1000} s)`, CLOCK_FIX);
  if (beyondMs > CLOCK_WARN_MS) return warn(name, `this machine's clock is ${amount} (more than ${CLOCK_WARN_MS / 1000} s)`, CLOCK_FIX);
  return pass(name, `within ${formatSeconds(uncertaintyMs + beyondMs)} of the edge's clock`);
}

/** Seconds for a detail: one decimal below 10 s, whole seconds above. */
function formatSeconds(ms: number): string {
  const seconds = ms / 1000;
  return seconds < 10 ? `${seconds.toFixed(1)} s` : `${Math.round(seconds)} s`;
}
