// DNS over the edge: POSTs one DNS query to the Worker's /dns endpoint, which answers it through
// its DNS-over-HTTPS resolver. A Worker cannot send UDP; this is the one kind of datagram that
// can still leave from the edge.

import { DNS_MESSAGE_TYPE, DNS_PATH, MAX_DNS_MESSAGE_BYTES, TUNNEL_PATH } from "../../worker/protocol/index.ts";
import { readAtMost } from "../../worker/dial/bounded-body.ts";
import { errorText } from "../error-text.ts";
import { countWorkerRequest } from "../status/worker-requests.ts";

/**
 * How long the edge has to answer one query. Longer than the edge's own 5 s resolver timeout,
 * so a slow resolver is reported by the edge with its reason rather than by this timer.
 */
export const DNS_QUERY_TIMEOUT_MS = 8_000;

/** The DNS endpoint's URL for a tunnel URL (ws[s]://host/base/tunnel -> http[s]://host/base/dns). */
export function dnsUrl(tunnelUrl: string): string {
  const url = new URL(tunnelUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = `${url.pathname.slice(0, -TUNNEL_PATH.length)}${DNS_PATH}`;
  return url.toString();
}

/**
 * Why a query has no answer: the edge answered with an HTTP status, or nothing answered (no
 * connection, or one that failed), or the query ran out of time, or the association closed.
 */
export type DnsFailureKind = "answered" | "unreachable" | "timeout" | "aborted";

export type DnsOutcome = { answer: Uint8Array } | { failure: string; kind: DnsFailureKind };

/**
 * Sends `query` to the edge and resolves with the answer, or with a one-line reason there is
 * none (the edge's status and first body line, a timeout, an unreachable edge). Never rejects.
 */
export async function queryDnsOverEdge(url: string, token: string, query: Uint8Array, signal: AbortSignal): Promise<DnsOutcome> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": DNS_MESSAGE_TYPE, Accept: DNS_MESSAGE_TYPE, Authorization: `Bearer ${token}` },
      body: query,
      redirect: "manual",
      signal: AbortSignal.any([signal, AbortSignal.timeout(DNS_QUERY_TIMEOUT_MS)]),
    });
  } catch (error) {
    return fetchFailure(error);
  }
  countWorkerRequest(url);
  try {
    // Neither body is read past what a DNS message can be: an edge (or whatever answers at its
    // address) that streams without end costs the query, not the agent's memory.
    const body = await readAtMost(response, MAX_DNS_MESSAGE_BYTES);
    if (response.status !== 200) {
      const line = body === "too large" ? "" : (new TextDecoder().decode(body).split("\n")[0]?.slice(0, 300) ?? "");
      return { failure: `edge answered HTTP ${response.status} ${line}`.trimEnd(), kind: "answered" };
    }
    if (body === "too large") return { failure: `edge's answer is over ${MAX_DNS_MESSAGE_BYTES} bytes`, kind: "answered" };
    return { answer: body };
  } catch (error) {
    return fetchFailure(error);
  }
}

function fetchFailure(error: unknown): { failure: string; kind: DnsFailureKind } {
  if (error instanceof Error && error.name === "TimeoutError") return { failure: `edge did not answer within ${DNS_QUERY_TIMEOUT_MS} ms`, kind: "timeout" };
  if (error instanceof Error && error.name === "AbortError") return { failure: "association closed", kind: "aborted" };
  return { failure: `edge unreachable: ${errorText(error)}`, kind: "unreachable" };
}
