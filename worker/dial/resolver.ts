// Resolves a name over DNS-over-HTTPS (RFC 8484 POST to EDGESOCKS_DOH_URL), A and AAAA at once,
// through the isolate's NameCache: how the edge tells a name that does not resolve from one on
// Cloudflare's network when connect() refuses both with the same error.

import type { EdgeConfig } from "../config.ts";
import { DNS_MESSAGE_TYPE, MAX_DNS_MESSAGE_BYTES } from "../protocol/index.ts";
import { DnsWireError, Rcode, RecordType, encodeAddressQuery, parseAddressAnswer, type AddressRecordType } from "./dns-wire.ts";
import { NameCache, type NameEntry } from "./name-cache.ts";
import { isTimeout, readAtMost } from "./bounded-body.ts";

/** The isolate's names: one cache for every tunnel it serves. */
export const isolateNames = new NameCache();

/** A name's entry (addresses, or none when it does not resolve), or why the resolver gave no answer. */
export type Resolution = { kind: "resolved"; entry: NameEntry } | { kind: "failed"; reason: string };

/** The cached entry for `name`, or one fresh from the resolver (then cached for its TTL). Never throws. */
export async function resolveName(name: string, config: EdgeConfig, cache: NameCache = isolateNames): Promise<Resolution> {
  const cached = cache.get(name);
  if (cached) return { kind: "resolved", entry: cached };
  const [v4, v6] = await Promise.all([query(name, RecordType.A, config), query(name, RecordType.AAAA, config)]);
  if (typeof v4 === "string" && typeof v6 === "string") return { kind: "failed", reason: v4 };
  const answers = [v4, v6].filter((answer) => typeof answer !== "string");
  const addresses = answers.flatMap((answer) => answer.addresses);
  // One family's failure with the other answering no data says nothing sure: not cached as absent.
  if (addresses.length === 0 && answers.length < 2) return { kind: "failed", reason: typeof v4 === "string" ? v4 : String(v6) };
  if (addresses.length === 0 && answers.some((answer) => answer.rcode !== Rcode.NoError && answer.rcode !== Rcode.NxDomain)) {
    return { kind: "failed", reason: `resolver answered RCODE ${answers.map((answer) => answer.rcode).join("/")}` };
  }
  const ttls = answers.filter((answer) => answer.addresses.length > 0 || addresses.length === 0).map((answer) => answer.ttlSeconds);
  const known = ttls.filter((ttl): ttl is number => ttl !== undefined);
  return { kind: "resolved", entry: cache.set(name, addresses, known.length > 0 ? Math.min(...known) : undefined) };
}

type Answer = { rcode: number; addresses: string[]; ttlSeconds: number | undefined };

/** One DoH query's answer, or a one-line reason it gave none. Never throws. */
async function query(name: string, type: AddressRecordType, config: EdgeConfig): Promise<Answer | string> {
  let body: Uint8Array;
  try {
    body = encodeAddressQuery(name, type, 0);
  } catch (error) {
    return error instanceof DnsWireError ? error.message : String(error);
  }
  try {
    const response = await fetch(config.dohUrl, {
      method: "POST",
      headers: { "Content-Type": DNS_MESSAGE_TYPE, Accept: DNS_MESSAGE_TYPE },
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(config.dohTimeoutMs),
    });
    if (response.status !== 200) {
      await response.body?.cancel();
      return `resolver answered HTTP ${response.status}`;
    }
    // Read no further than a DNS message can be: an answer streamed without end stops here.
    const bytes = await readAtMost(response, MAX_DNS_MESSAGE_BYTES);
    if (bytes === "too large") return "resolver's answer is too large";
    return parseAddressAnswer(bytes, type);
  } catch (error) {
    if (error instanceof DnsWireError) return `resolver's answer is malformed: ${error.message}`;
    if (isTimeout(error)) return `resolver did not answer within ${config.dohTimeoutMs} ms`;
    // The URL stays out: it may carry a resolver account's secret path.
    return `resolver unreachable: ${error instanceof Error ? error.message : String(error)}`.slice(0, 200);
  }
}
