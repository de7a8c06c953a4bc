// POST /dns: one DNS query from the agent (a SOCKS5 client's UDP datagram to port 53), answered
// through the DNS-over-HTTPS resolver in EDGESOCKS_DOH_URL. A Worker cannot send UDP, so this
// is how a client's name lookups leave from the edge rather than from the agent's machine.
// The checks and their statuses follow GET /tunnel's (tunnel-endpoint.ts) where they apply.

import type { EdgeConfig, EdgeEnv } from "./config.ts";
import { configOrRefusal, refuse, tokenRefusal } from "./refusal.ts";
import { DNS_HEADER_BYTES, DNS_MESSAGE_TYPE, MAX_DNS_MESSAGE_BYTES } from "./protocol/index.ts";
import { isTimeout, readAtMost } from "./dial/bounded-body.ts";

/** Answers a DNS query: 200 with the resolver's answer, or the status that says why not. */
export async function handleDnsRequest(request: Request, env: EdgeEnv): Promise<Response> {
  const config = configOrRefusal(env, "answers");
  if (config instanceof Response) return config;
  if (request.method !== "POST") return refuse(405, `the DNS endpoint takes POST with a ${DNS_MESSAGE_TYPE} body`, { Allow: "POST" });
  if (mediaType(request.headers.get("Content-Type")) !== DNS_MESSAGE_TYPE) {
    return refuse(415, `the DNS endpoint takes Content-Type: ${DNS_MESSAGE_TYPE}`, { Accept: DNS_MESSAGE_TYPE });
  }
  const unauthorized = await tokenRefusal(request, config);
  if (unauthorized) return unauthorized;
  // Only an authenticated body is read, and never more of it than a DNS message can be.
  const query = await readAtMost(request, MAX_DNS_MESSAGE_BYTES);
  if (query === "too large") return refuse(413, `a DNS message is at most ${MAX_DNS_MESSAGE_BYTES} bytes`);
  if (query.byteLength < DNS_HEADER_BYTES) {
    return refuse(400, `a DNS message is at least ${DNS_HEADER_BYTES} bytes (its header); this one is ${query.byteLength}`);
  }
  const answer = await askResolver(query, config);
  if (typeof answer === "string") return refuse(502, answer);
  return new Response(answer, { status: 200, headers: { "Content-Type": DNS_MESSAGE_TYPE, "Cache-Control": "no-store" } });
}

/** The resolver's answer bytes, or a one-line reason it gave none. Never throws. */
async function askResolver(query: Uint8Array, config: EdgeConfig): Promise<Uint8Array | string> {
  let response: Response;
  try {
    response = await fetch(config.dohUrl, {
      method: "POST",
      headers: { "Content-Type": DNS_MESSAGE_TYPE, Accept: DNS_MESSAGE_TYPE },
      body: query,
      // A redirect would send the query somewhere EDGESOCKS_DOH_URL does not name.
      redirect: "manual",
      signal: AbortSignal.timeout(config.dohTimeoutMs),
    });
  } catch (error) {
    if (isTimeout(error)) return `resolver did not answer within ${config.dohTimeoutMs} ms`;
    // The URL stays out of the reason: it may carry a resolver account's secret path.
    return `resolver unreachable: ${oneLine(error instanceof Error ? error.message : String(error))}`;
  }
  if (response.status !== 200) {
    await response.body?.cancel();
    return `resolver answered HTTP ${response.status}`;
  }
  const type = mediaType(response.headers.get("Content-Type"));
  if (type !== DNS_MESSAGE_TYPE) {
    await response.body?.cancel();
    return `resolver answered with Content-Type ${oneLine(type || "(none)")}, not ${DNS_MESSAGE_TYPE}`;
  }
  let answer;
  try {
    answer = await readAtMost(response, MAX_DNS_MESSAGE_BYTES);
  } catch (error) {
    // The fetch's timeout also covers the body: an answer still arriving at it is no answer in time.
    if (isTimeout(error)) return `resolver did not answer within ${config.dohTimeoutMs} ms`;
    return `resolver's answer broke off: ${oneLine(error instanceof Error ? error.message : String(error))}`;
  }
  if (answer === "too large") return `resolver's answer is over ${MAX_DNS_MESSAGE_BYTES} bytes`;
  if (answer.byteLength < DNS_HEADER_BYTES) return `resolver's answer is ${answer.byteLength} bytes, shorter than a DNS header`;
  return answer;
}

/** The media type of a Content-Type header, lower-cased and without parameters. */
function mediaType(contentType: string | null): string {
  return (contentType ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").slice(0, 200);
}
