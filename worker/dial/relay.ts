// EDGESOCKS_CLOUDFLARE_RELAY ("proxyIP" in edgetunnel's terms): TCP relays outside Cloudflare
// that forward to Cloudflare's anycast, where the TLS SNI or the Host header picks the site. The
// Worker dials a relay instead of the destination and passes the client's bytes unchanged, so
// only the ports Cloudflare's proxy listens on can be carried. Pure: text in, relays out.

import { formatIPv6, isPlausibleHostname, parseIPv4, parseIPv6 } from "../protocol/index.ts";

/**
 * Ports Cloudflare's proxy serves for proxied hostnames (developers.cloudflare.com, "Network
 * ports"): HTTP 80, 8080, 8880, 2052, 2082, 2086, 2095; HTTPS 443, 2053, 2083, 2087, 2096, 8443.
 * A relay cannot help on any other port: Cloudflare does not answer there.
 */
export const CLOUDFLARE_PROXIED_PORTS: ReadonlySet<number> = new Set([80, 8080, 8880, 2052, 2082, 2086, 2095, 443, 2053, 2083, 2087, 2096, 8443]);

/** One relay: dialed at `port`, or at the destination's own port when the entry names none. */
export type CloudflareRelay = { host: string; port: number | undefined; label: string };

/** An entry that is not host[:port]; the message names the entry. */
export class RelayConfigError extends Error {
  override readonly name = "RelayConfigError";
}

/** Parses the comma-separated `host[:port]` list ([IPv6] in brackets); an empty text is no relay. */
export function parseRelayList(text: string): CloudflareRelay[] {
  const entries = text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  return entries.map((entry, index) => parseRelay(entry, index + 1));
}

function parseRelay(entry: string, position: number): CloudflareRelay {
  const fail = (why: string) => new RelayConfigError(`EDGESOCKS_CLOUDFLARE_RELAY entry ${position} "${entry.slice(0, 80)}" ${why}`);
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(entry);
  if (!match) throw fail("is not host[:port] (an IPv6 address goes in brackets)");
  let port: number | undefined;
  if (match[3] !== undefined) {
    port = Number(match[3]);
    if (port < 1 || port > 65535) throw fail("has a port outside 1..65535");
  }
  let host: string;
  if (match[1] !== undefined) {
    const bytes = parseIPv6(match[1]);
    if (!bytes) throw fail("is not an IPv6 address in brackets");
    host = formatIPv6(Uint8Array.from(bytes));
  } else {
    host = (match[2] ?? "").toLowerCase();
    if (!parseIPv4(host) && !isPlausibleHostname(host)) throw fail("is not a host name or IP address");
  }
  const hostText = host.includes(":") ? `[${host}]` : host;
  return { host, port, label: port === undefined ? hostText : `${hostText}:${port}` };
}

/** Where to dial `relay` for a destination on `destinationPort`, or undefined when Cloudflare does not serve that port. */
export function relayTarget(relay: CloudflareRelay, destinationPort: number): { host: string; port: number } | undefined {
  if (!CLOUDFLARE_PROXIED_PORTS.has(destinationPort)) return undefined;
  return { host: relay.host, port: relay.port ?? destinationPort };
}
