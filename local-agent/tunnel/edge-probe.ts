// Start-up checks of the edge: GET /healthz, so a wrong --edge or a Worker from another release
// is reported once at start rather than as a failure on every connection, and GET /check, which
// proves the token without opening anything (docs/protocol.md, "GET /check").

import { fetchFailureText } from "../error-text.ts";
import { readAtMost } from "../../worker/dial/bounded-body.ts";
import { CHECK_PATH, PROTOCOL_VERSION, PROTOCOL_VERSIONS, TUNNEL_PATH } from "../../worker/protocol/index.ts";

/** How long each check waits for the edge unless its caller says otherwise. */
export const PROBE_TIMEOUT_MS = 5_000;
/** Longest part of the edge's refusal body a TokenCheck carries: its refusals are one short line. */
const MAX_REFUSAL_MESSAGE_CHARS = 200;
/** What of a refusal's body is read for its message: the edge's are one line, a stranger's may be a page. */
const MAX_REFUSAL_BODY_BYTES = 4 * 1024;
/** What of /healthz's body is read: the edge's is a line of JSON; a stranger's may be a page. */
export const MAX_HEALTHZ_BODY_BYTES = 4 * 1024;

/** The URL of the edge's `path` for a tunnel URL (ws[s]://host/base/tunnel -> http[s]://host/base/path). */
function edgeUrl(tunnelUrl: string, path: string): string {
  const url = new URL(tunnelUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = `${url.pathname.slice(0, -TUNNEL_PATH.length)}${path}`;
  return url.toString();
}

/** The healthz URL for a tunnel URL (ws[s]://host/base/tunnel -> http[s]://host/base/healthz). */
export function healthzUrl(tunnelUrl: string): string {
  return edgeUrl(tunnelUrl, "/healthz");
}

/** The token-check URL for a tunnel URL (ws[s]://host/base/tunnel -> http[s]://host/base/check). */
export function checkUrl(tunnelUrl: string): string {
  return edgeUrl(tunnelUrl, CHECK_PATH);
}

/** What GET /healthz gave: the answer (status, body, Date header, when it was asked and answered), or why none came. */
export type HealthzAnswer =
  | { kind: "answered"; status: number; body: Uint8Array | "too large"; date: string | null; sentAtMs: number; receivedAtMs: number }
  | { kind: "unreachable"; cause: string };

/** Asks the edge's GET /healthz, its body read to at most MAX_HEALTHZ_BODY_BYTES; never throws. */
export async function askHealthz(tunnelUrl: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<HealthzAnswer> {
  const sentAtMs = Date.now();
  try {
    const response = await fetch(healthzUrl(tunnelUrl), { redirect: "manual", signal: AbortSignal.timeout(timeoutMs) });
    const receivedAtMs = Date.now();
    const body = await readAtMost(response, MAX_HEALTHZ_BODY_BYTES);
    return { kind: "answered", status: response.status, body, date: response.headers.get("Date"), sentAtMs, receivedAtMs };
  } catch (error) {
    return { kind: "unreachable", cause: fetchFailureText(error, timeoutMs) };
  }
}

/** The JSON object a /healthz answer carries, or undefined when its body is not one. */
export function healthzBody(body: Uint8Array | "too large"): { name?: unknown; version?: unknown; protocol?: unknown } | undefined {
  if (body === "too large") return undefined;
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(body));
    return parsed !== null && typeof parsed === "object" ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What the edge said of a token: `accepted` (204); `refused` with the status and the edge's
 * one-line message (401 "wrong token" or "missing bearer token", 503 no token set, 500
 * misconfigured, any other error status but 404); `unknown` when the edge cannot say, because it
 * is older than /check (404) or answered something else (`status`); `unreachable` with the cause
 * when no answer came. No variant carries the token.
 */
export type TokenCheck =
  | { kind: "accepted" }
  | { kind: "refused"; status: number; message: string }
  | { kind: "unknown"; status: number }
  | { kind: "unreachable"; cause: string };

/** Asks the edge's GET /check whether it accepts `token`; never throws, never opens a tunnel (one Worker request). */
export async function checkToken(tunnelUrl: string, token: string, { timeoutMs = PROBE_TIMEOUT_MS }: { timeoutMs?: number } = {}): Promise<TokenCheck> {
  let response: Response;
  try {
    response = await fetch(checkUrl(tunnelUrl), {
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(timeoutMs),
      // A redirect would carry the token to a URL --edge does not name.
      redirect: "manual",
    });
  } catch (error) {
    return { kind: "unreachable", cause: fetchFailureText(error, timeoutMs) };
  }
  if (response.status === 204) {
    await response.body?.cancel();
    return { kind: "accepted" };
  }
  if (response.status === 404 || response.status < 400) {
    await response.body?.cancel();
    return { kind: "unknown", status: response.status };
  }
  return { kind: "refused", status: response.status, message: await refusalMessage(response, token) };
}

/** The first line of a refusal's body, bounded and without `token`; empty when it has none or it does not arrive. */
async function refusalMessage(response: Response, token: string): Promise<string> {
  try {
    // Whatever answers may echo the request: the token never leaves in a message.
    const text = (await firstBytesText(response, MAX_REFUSAL_BODY_BYTES)).replaceAll(token, "<token>");
    return (text.split("\n", 1)[0] ?? "").trim().slice(0, MAX_REFUSAL_MESSAGE_CHARS);
  } catch {
    return "";
  }
}

/** The first `maxBytes` of a body as text, cut there rather than refused (bounded-body.ts's readAtMost refuses): the rest is not read. */
async function firstBytesText(response: Response, maxBytes: number): Promise<string> {
  const reader = response.body?.getReader();
  if (reader === undefined) return "";
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  while (bytes < maxBytes) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    bytes += value.byteLength;
  }
  await reader.cancel();
  return Buffer.concat(chunks).subarray(0, maxBytes).toString("utf8");
}

/** Resolves with a warning to print, or undefined when the edge answers as this agent expects. */
export async function probeEdge(tunnelUrl: string, { timeoutMs = PROBE_TIMEOUT_MS }: { timeoutMs?: number } = {}): Promise<string | undefined> {
  const url = healthzUrl(tunnelUrl);
  const answer = await askHealthz(tunnelUrl, timeoutMs);
  if (answer.kind === "unreachable") return `the edge is not answering ${url} (${answer.cause}); connections will fail until it does`;
  if (answer.status < 200 || answer.status > 299) return `the edge answered ${url} with HTTP ${answer.status}; is --edge the edgesocks Worker?`;
  const body = healthzBody(answer.body);
  if (body === undefined) return `the edge's ${url} is not edgesocks JSON; is --edge the edgesocks Worker?`;
  const protocol = body.protocol;
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

/**
 * How long the start-up checks wait before the ready line: on loopback an answer takes a few
 * milliseconds and across the internet a few hundred; an edge silent this long is reported as
 * not answering, and the agent starts anyway.
 */
export const START_CHECK_TIMEOUT_MS = 2_000;

/** What the start-up checks found: `refusal`, when set, is the one line to exit with; `warnings` are to print and go on. */
export type StartCheck = { refusal?: string; warnings: string[] };

/**
 * Checks every edge at start, /healthz and the token side by side (one round trip each): a 401
 * from any edge is a refusal (the token is wrong, and no connection through it would open); no
 * answer, an edge older than /check or any other surprise is a warning. Messages never carry the token.
 */
export async function checkEdgesAtStart(edges: readonly { tunnelUrl: string; edgeLabel: string }[], token: string, timeoutMs = START_CHECK_TIMEOUT_MS): Promise<StartCheck> {
  const results = await Promise.all(
    edges.map(async (edge) => {
      const [healthWarning, tokenCheck] = await Promise.all([probeEdge(edge.tunnelUrl, { timeoutMs }), checkToken(edge.tunnelUrl, token, { timeoutMs })]);
      return { edge, healthWarning, tokenCheck };
    }),
  );
  const warnings: string[] = [];
  for (const { edge, healthWarning, tokenCheck } of results) {
    const theEdge = edges.length > 1 ? `the edge ${edge.edgeLabel}` : "the edge";
    if (tokenCheck.kind === "refused" && tokenCheck.status === 401) {
      return { refusal: `${theEdge} refused the token (401 ${tokenCheck.message}): check EDGESOCKS_TOKEN / --token-file against the Worker's secret`, warnings: [] };
    }
    if (healthWarning !== undefined) warnings.push(healthWarning);
    const tokenWarning = tokenCheckWarning(tokenCheck, checkUrl(edge.tunnelUrl), theEdge);
    // An edge that does not answer /healthz has been reported already; its /check adds nothing.
    if (tokenWarning !== undefined && !(tokenCheck.kind === "unreachable" && healthWarning !== undefined)) warnings.push(tokenWarning);
  }
  return { warnings };
}

/** The warning for a token check that neither accepted nor refused the token (the 401 is fatal, not a warning). */
function tokenCheckWarning(check: TokenCheck, url: string, theEdge: string): string | undefined {
  switch (check.kind) {
    case "accepted":
      return undefined;
    case "refused":
      return `${theEdge} refused the token check at ${url} (HTTP ${check.status}${check.message === "" ? "" : ` ${check.message}`}); connections will fail until the Worker is fixed`;
    case "unknown":
      return check.status === 404
        ? `${theEdge} has no ${CHECK_PATH} (a release older than this agent), so the token was not checked; redeploy the Worker (npm run deploy)`
        : `${theEdge} answered ${url} with HTTP ${check.status}, so the token was not checked; is --edge the edgesocks Worker?`;
    case "unreachable":
      return `${theEdge} is not answering ${url} (${check.cause}), so the token was not checked; connections will fail until it does`;
  }
}
