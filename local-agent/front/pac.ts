// The proxy auto-config (PAC) file the agent serves at /proxy.pac. Pure: an address and the
// bypass mode in, the script's text out. The script is ES3 (no let, no arrow functions) because
// some PAC engines (WinHTTP's JScript) are that old, and it never calls dnsResolve or
// isResolvable: deciding must not leak the names the browser visits to the local resolver.

import { PRIVATE_RULES, type BypassMode } from "../config/routing.ts";

export const PAC_PATH = "/proxy.pac";
export const PAC_CONTENT_TYPE = "application/x-ns-proxy-autoconfig";

/**
 * The PAC script sending every URL to the agent at `proxyAddress` (host:port, IPv6 in brackets):
 * SOCKS5 first, then the HTTP proxy. Never "SOCKS": browsers read it as SOCKS4, which resolves
 * names locally (a DNS leak), and fall back to it whenever SOCKS5 is refused. With users
 * configured the HTTP proxy comes first, since browsers cannot send a SOCKS5 password but do
 * answer an HTTP 407. With bypass "private" the
 * destinations PRIVATE_RULES sends direct go DIRECT, and so do plain host names (intranet
 * names the edge could not resolve); with "none" nothing does.
 */
export function generatePac(proxyAddress: string, bypass: BypassMode, usersConfigured = false): string {
  const socks = `SOCKS5 ${proxyAddress}`;
  const http = `PROXY ${proxyAddress}`;
  const proxies = usersConfigured ? `${http}; ${socks}` : `${socks}; ${http}`;
  const header = `// edgesocks proxy auto-config (--bypass ${bypass}).\n`;
  if (bypass === "none") {
    return `${header}function FindProxyForURL(url, host) {\n  return ${JSON.stringify(proxies)};\n}\n`;
  }
  return `${header}function FindProxyForURL(url, host) {
  if (edgesocksIsPrivate(host)) return "DIRECT";
  return ${JSON.stringify(proxies)};
}

${privateTest()}
`;
}

/** The bypass test as PAC JavaScript, generated from PRIVATE_RULES so the two cannot drift. */
function privateTest(): string {
  const ipv4Checks: string[] = [];
  const ipv6Blocks: string[] = [];
  const suffixChecks: string[] = [];
  for (const rule of PRIVATE_RULES) {
    if (rule.cidr && rule.cidr.bytes.length === 4) {
      ipv4Checks.push(`isInNet(ipv4, ${JSON.stringify(rule.cidr.bytes.join("."))}, ${JSON.stringify(ipv4Mask(rule.cidr.prefixBits))})`);
    } else if (rule.cidr) {
      ipv6Blocks.push(`[[${ipv6Words(rule.cidr.bytes).join(", ")}], ${rule.cidr.prefixBits}]`);
    } else if (rule.domainSuffix !== undefined) {
      const suffix = JSON.stringify(rule.domainSuffix);
      suffixChecks.push(`name === ${suffix} || dnsDomainIs(name, ${JSON.stringify(`.${rule.domainSuffix}`)})`);
    }
  }
  return `// Loopback, link-local and private destinations (the agent's --bypass private rules), and
// plain host names. Only IP literals are matched against address blocks; names never resolved.
function edgesocksIsPrivate(host) {
  var name = host.toLowerCase();
  if (name.charAt(0) === "[") name = name.substring(1, name.length - 1);
  if (name.charAt(name.length - 1) === ".") name = name.substring(0, name.length - 1);
  if (name.indexOf(":") >= 0) {
    var words = edgesocksIPv6Words(name);
    if (!words) return false;
    if (words[0] === 0 && words[1] === 0 && words[2] === 0 && words[3] === 0 && words[4] === 0 && words[5] === 65535) {
      return edgesocksIPv4IsPrivate((words[6] >> 8) + "." + (words[6] & 255) + "." + (words[7] >> 8) + "." + (words[7] & 255));
    }
    var blocks = [${ipv6Blocks.join(", ")}];
    for (var i = 0; i < blocks.length; i++) {
      if (edgesocksInIPv6Block(words, blocks[i][0], blocks[i][1])) return true;
    }
    return false;
  }
  if (/^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$/.test(name)) return edgesocksIPv4IsPrivate(name);
  if (isPlainHostName(name)) return true;
  return ${suffixChecks.join(" ||\n    ")};
}

function edgesocksIPv4IsPrivate(ipv4) {
  return ${ipv4Checks.join(" ||\n    ")};
}

// Eight 16-bit words of an IPv6 literal (an embedded IPv4 tail included), or null.
function edgesocksIPv6Words(text) {
  var halves = text.split("::");
  if (halves.length > 2) return null;
  var head = halves[0] === "" ? [] : halves[0].split(":");
  var tail = halves.length === 1 || halves[1] === "" ? [] : halves[1].split(":");
  var last = halves.length === 1 ? head : tail;
  if (last.length > 0 && last[last.length - 1].indexOf(".") >= 0) {
    var octets = last.pop().split(".");
    if (octets.length !== 4) return null;
    for (var k = 0; k < 4; k++) {
      if (!/^[0-9]{1,3}$/.test(octets[k]) || parseInt(octets[k], 10) > 255) return null;
    }
    last.push(((parseInt(octets[0], 10) << 8) | parseInt(octets[1], 10)).toString(16));
    last.push(((parseInt(octets[2], 10) << 8) | parseInt(octets[3], 10)).toString(16));
  }
  var missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  var groups = head.slice(0);
  for (var m = 0; m < missing && halves.length === 2; m++) groups.push("0");
  groups = groups.concat(tail);
  var words = [];
  for (var j = 0; j < groups.length; j++) {
    if (!/^[0-9a-f]{1,4}$/.test(groups[j])) return null;
    words.push(parseInt(groups[j], 16));
  }
  return words;
}

function edgesocksInIPv6Block(words, block, prefixBits) {
  for (var i = 0; prefixBits > 0; i++, prefixBits -= 16) {
    var mask = prefixBits >= 16 ? 65535 : (65535 << (16 - prefixBits)) & 65535;
    if ((words[i] & mask) !== (block[i] & mask)) return false;
  }
  return true;
}`;
}

function ipv4Mask(prefixBits: number): string {
  const mask = prefixBits === 0 ? 0 : (0xffffffff << (32 - prefixBits)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (mask >>> shift) & 0xff).join(".");
}

function ipv6Words(bytes: readonly number[]): number[] {
  const words: number[] = [];
  for (let index = 0; index < 16; index += 2) words.push(((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0));
  return words;
}

/** host:port for a PAC proxy entry: IPv6 bracketed, an IPv4-mapped IPv6 address as plain IPv4. */
export function pacProxyAddress(localAddress: string, localPort: number): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(localAddress);
  if (mapped) return `${mapped[1]}:${localPort}`;
  return localAddress.includes(":") ? `[${localAddress}]:${localPort}` : `${localAddress}:${localPort}`;
}
