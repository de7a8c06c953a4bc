// Every TCP connection the edge opens goes through openTcp: connect() from cloudflare:sockets,
// with production's refusal of Cloudflare's own addresses emulated when the dev-only var
// EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS names ranges. Local workerd connects anywhere, so without
// this no local test could see what a Cloudflare-hosted destination does in production.
//
// What it copies (workerd src/workerd/api/sockets.c++, Cloudflare's "TCP sockets" docs):
// connect() returns a socket at once; the refusal arrives asynchronously, `opened` and `closed`
// reject with an Error "proxy request failed, cannot connect to the specified address" (with
// the fetch hint appended on ports 80 and 443), reads fail and writes reject. Production refuses
// Cloudflare's IP literals and names that resolve to them alike; the emulation resolves a name
// through EDGESOCKS_DOH_URL to decide. What it does not copy: which addresses production really
// refuses (only the ranges named are), its timing, and its DNS (the emulation asks the resolver,
// production its own). Addresses match in the family they are written in: an IPv4-mapped IPv6
// dial target is not an IPv4 address here (so a NAT64 prefix of ::ffff:0:0/96 reaches loopback).

import { connect } from "cloudflare:sockets";
import type { EdgeConfig } from "../config.ts";
import { parseIPv4, parseIPv6 } from "../protocol/index.ts";
import { cidrContains, type Cidr } from "./cidr.ts";
import { resolveName } from "./resolver.ts";

/** The start of the error production's connect() gives for Cloudflare's addresses and for names that do not resolve. */
export const CLOUDFLARE_REFUSAL_MESSAGE = "proxy request failed, cannot connect to the specified address";
/** What workerd appends to the refusal on the HTTP ports. */
export const FETCH_HINT = ". It looks like you might be trying to connect to a HTTP-based service — consider using fetch instead";

/**
 * True for production's refusal, and for local workerd's wording of a failed name lookup
 * ("... failed to lookup address information"): both mean "classify before answering".
 */
export function isDialRefusal(error: unknown): boolean {
  const message = error instanceof Error ? error.message.toLowerCase() : String(error).toLowerCase();
  return message.includes(CLOUDFLARE_REFUSAL_MESSAGE) || message.includes("failed to lookup address information");
}

/** A host (name or IP literal, IPv6 without brackets) and port to dial. */
export type TcpTarget = { host: string; port: number };

/** Opens a TCP connection to `target` as production would: refused asynchronously inside the emulated ranges. */
export async function openTcp(target: TcpTarget, config: EdgeConfig): Promise<Socket> {
  if (config.emulatedCloudflareCidrs.length > 0 && (await isEmulatedCloudflare(target.host, config))) return refusedSocket(target.port);
  // connect() wants IPv6 literals in brackets: a bare "::1" is refused (measured).
  const hostname = parseIPv6(target.host) ? `[${target.host}]` : target.host;
  return connect({ hostname, port: target.port }, { allowHalfOpen: true });
}

async function isEmulatedCloudflare(host: string, config: EdgeConfig): Promise<boolean> {
  const ranges = config.emulatedCloudflareCidrs;
  const literal = literalBytes(host);
  if (literal) return inRanges(literal, ranges);
  const resolution = await resolveName(host, config);
  if (resolution.kind !== "resolved") return false;
  // Production refuses a name with no address the same way; refused here without dialing, so
  // local workerd does not ask the machine's own DNS about it (a packet off loopback).
  if (resolution.entry.addresses.length === 0) return true;
  return resolution.entry.addresses.some((address) => {
    const bytes = literalBytes(address);
    return bytes !== undefined && inRanges(bytes, ranges);
  });
}

function literalBytes(host: string): number[] | undefined {
  return parseIPv4(host) ?? parseIPv6(host);
}

function inRanges(address: number[], ranges: readonly Cidr[]): boolean {
  return ranges.some((range) => cidrContains(range, address));
}

/** A socket that fails the way production's does for a Cloudflare address. */
function refusedSocket(port: number): Socket {
  const error = new Error(`${CLOUDFLARE_REFUSAL_MESSAGE}${port === 80 || port === 443 ? FETCH_HINT : ""}`);
  const rejected = Promise.reject(error);
  rejected.catch(() => {});
  const socket = {
    opened: rejected,
    closed: rejected,
    readable: new ReadableStream<Uint8Array>({ start: (controller) => controller.error(error) }),
    writable: new WritableStream<Uint8Array>({ start: (controller) => controller.error(error) }),
    upgraded: false,
    secureTransport: "off",
    close: () => Promise.resolve(),
    startTls: () => {
      throw error;
    },
  };
  return socket as unknown as Socket;
}

