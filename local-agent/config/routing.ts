// Routing rules: where each destination goes (through the edge, directly from this machine, or
// nowhere). Pure: destinations and rule text in, a route out. First matching rule wins.

import { AddressType, formatIPv6, parseIPv4, parseIPv6, type Destination } from "../../worker/protocol/index.ts";
import { cidrContains, ipToBytes, parseCidr, type Cidr } from "../../worker/dial/cidr.ts";

// The block parser lives with the Worker's dial checks so the two read blocks alike; it throws
// CidrError, which buildRule wraps into a RuleError naming the rule.
export { parseCidr, type Cidr };

export const Route = {
  /** Through the Worker: the default. */
  Edge: "edge",
  /** From this machine, as if there were no proxy. */
  Direct: "direct",
  /** Refused: SOCKS5 0x02, SOCKS4 0x5B, HTTP 403. */
  Block: "block",
} as const;
export type Route = (typeof Route)[keyof typeof Route];
export const ROUTES: readonly Route[] = Object.values(Route);

export type PortRange = { from: number; to: number };

/**
 * One rule. Every matcher it has must match (a rule with `domainSuffix` and `port` matches
 * that domain on that port only); a rule with no matcher matches everything.
 */
export type RouteRule = {
  route: Route;
  /** Lower-case name; matches itself and every name below it, on a label boundary. */
  domainSuffix?: string;
  /** Lower-case name or normalized IP literal; matches exactly. */
  host?: string;
  /** Matches IP destinations inside the block; never a domain name (names are not resolved here). */
  cidr?: Cidr;
  port?: PortRange;
  /** The rule as the user wrote it, for log lines and errors. */
  text: string;
};

/** A rule that does not parse; the message names what is wrong. */
export class RuleError extends Error {
  override readonly name = "RuleError";
}

/** Which destinations `--bypass` sends direct. */
export const BYPASS_MODES = ["private", "none"] as const;
export type BypassMode = (typeof BYPASS_MODES)[number];

/**
 * Loopback, link-local, private and shared address space, and names that only mean something
 * on this network. A Worker cannot reach any of them, so by default they go direct.
 */
export const PRIVATE_RULES: readonly RouteRule[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "::/128",
  "::1/128",
  "fc00::/7",
  "fe80::/10",
]
  .map((block): RouteRule => ({ route: Route.Direct, cidr: parseCidr(block), text: `direct cidr ${block} (--bypass private)` }))
  .concat(
    ["localhost", "local", "home.arpa"].map((name) => ({
      route: Route.Direct,
      domainSuffix: name,
      text: `direct suffix ${name} (--bypass private)`,
    })),
  );

/** The rules in force: the user's first, then the bypass rules, so a user rule can override them. */
export function effectiveRules(userRules: readonly RouteRule[], bypass: BypassMode): RouteRule[] {
  return bypass === "private" ? [...userRules, ...PRIVATE_RULES] : [...userRules];
}

/** The first rule matching `destination`, or undefined when none does (the route is then edge). */
export function matchRule(destination: Destination, rules: readonly RouteRule[]): RouteRule | undefined {
  const host = normalizeHost(destination.host);
  const ipBytes = destination.type === AddressType.Domain ? undefined : ipToBytes(host);
  return rules.find((rule) => {
    if (rule.port && (destination.port < rule.port.from || destination.port > rule.port.to)) return false;
    if (rule.host !== undefined && rule.host !== host) return false;
    if (rule.domainSuffix !== undefined) {
      if (destination.type !== AddressType.Domain) return false;
      if (host !== rule.domainSuffix && !host.endsWith(`.${rule.domainSuffix}`)) return false;
    }
    if (rule.cidr && !(ipBytes && cidrContains(rule.cidr, ipBytes))) return false;
    return true;
  });
}

/** The route for `destination`: the first matching rule's, else edge. */
export function routeFor(destination: Destination, rules: readonly RouteRule[]): Route {
  return matchRule(destination, rules)?.route ?? Route.Edge;
}

/**
 * Parses the command-line form `ROUTE:MATCHER[,MATCHER...]`, a matcher being `suffix=NAME`,
 * `host=NAME|IP`, `cidr=ADDR/BITS` or `port=N|N-M`: `direct:suffix=corp.example`,
 * `block:port=25`, `edge:host=example.com,port=443`.
 */
export function parseRuleText(text: string): RouteRule {
  const colon = text.indexOf(":");
  if (colon < 0) throw new RuleError(`rule "${text}" is not ROUTE:MATCHER (for example direct:suffix=corp.example)`);
  const route = text.slice(0, colon);
  // No prototype: "constructor" or "__proto__" must read as unknown matchers, not inherited keys.
  const matchers: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const part of text.slice(colon + 1).split(",")) {
    const equals = part.indexOf("=");
    if (equals < 0) throw new RuleError(`rule "${text}": "${part}" is not KIND=VALUE (suffix, host, cidr or port)`);
    const kind = part.slice(0, equals).trim();
    if (kind in matchers) throw new RuleError(`rule "${text}" names ${kind} twice`);
    matchers[kind] = part.slice(equals + 1).trim();
  }
  return buildRule(route, matchers, text);
}

/**
 * Builds a rule from a route name and matcher values keyed `suffix`, `host`, `cidr`, `port`
 * (the config file's field names map onto these). Throws RuleError naming the bad part.
 */
export function buildRule(route: string, matchers: Record<string, string | number>, text: string): RouteRule {
  if (!(ROUTES as readonly string[]).includes(route)) throw new RuleError(`rule "${text}": route must be one of ${ROUTES.join(", ")}, not "${route}"`);
  const rule: RouteRule = { route: route as Route, text };
  for (const [kind, value] of Object.entries(matchers)) {
    const valueText = String(value);
    switch (kind) {
      case "suffix": {
        const name = normalizeHost(valueText.replace(/^\*?\./, ""));
        if (!isDomainLike(name)) throw new RuleError(`rule "${text}": suffix "${valueText}" is not a domain name`);
        rule.domainSuffix = name;
        break;
      }
      case "host": {
        const name = normalizeHost(valueText);
        // parseIPv6, not isIP: a zone id (fe80::1%eth0) is refused, since no destination carries one.
        const ipv6 = parseIPv6(name);
        if (!isDomainLike(name) && !parseIPv4(name) && !ipv6) throw new RuleError(`rule "${text}": host "${valueText}" is not a host name or IP address`);
        // The form formatIPv6 gives every IPv6 destination, so a rule written as ::0:1 matches ::1.
        rule.host = ipv6 ? formatIPv6(Uint8Array.from(ipv6)) : name;
        break;
      }
      case "cidr":
        try {
          rule.cidr = parseCidr(valueText);
        } catch (error) {
          throw new RuleError(`rule "${text}": ${(error as Error).message}`);
        }
        break;
      case "port":
        rule.port = parsePortRange(valueText, text);
        break;
      default:
        throw new RuleError(`rule "${text}": unknown matcher "${kind}" (use suffix, host, cidr or port)`);
    }
  }
  return rule;
}

function parsePortRange(value: string, text: string): PortRange {
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(value);
  const from = Number(match?.[1]);
  const to = match?.[2] === undefined ? from : Number(match[2]);
  if (!match || from < 1 || to > 65535 || from > to) throw new RuleError(`rule "${text}": port "${value}" is not N or N-M within 1..65535`);
  return { from, to };
}

function normalizeHost(host: string): string {
  return host.toLowerCase().replace(/\.$/, "").replace(/^\[(.*)\]$/, "$1");
}

function isDomainLike(name: string): boolean {
  return /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name);
}
