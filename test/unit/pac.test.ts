// The generated PAC file (local-agent/front/pac.ts), evaluated in node:vm with the standard PAC helper
// functions implemented here. The DNS helpers throw, so a script that would resolve a name fails.

import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { generatePac, pacProxyAddress } from "../../local-agent/front/pac.ts";
import type { BypassMode } from "../../local-agent/config/routing.ts";

const PROXIES = "SOCKS5 127.0.0.1:1080; PROXY 127.0.0.1:1080";

function ipv4Number(text: string): number {
  const octets = text.split(".").map(Number);
  if (octets.length !== 4 || octets.some((octet) => !Number.isInteger(octet) || octet < 0 || octet > 255)) {
    throw new Error(`isInNet given "${text}", which is not an IPv4 literal: a browser would resolve it (DNS leak)`);
  }
  return octets.reduce((value, octet) => value * 256 + octet, 0);
}

/** The helpers browsers give PAC scripts, with their standard semantics (Netscape's spec). */
const PAC_HELPERS = {
  isPlainHostName: (host: string) => !host.includes("."),
  dnsDomainIs: (host: string, domain: string) => host.length >= domain.length && host.endsWith(domain),
  shExpMatch: (text: string, pattern: string) =>
    new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`).test(text),
  isInNet: (host: string, pattern: string, mask: string) => {
    const maskBits = ipv4Number(mask);
    // Bitwise AND on 32-bit values through unsigned arithmetic.
    return (((ipv4Number(host) & maskBits) >>> 0) === ((ipv4Number(pattern) & maskBits) >>> 0));
  },
  dnsResolve: (host: string) => {
    throw new Error(`dnsResolve(${host}) called: DNS leak`);
  },
  isResolvable: (host: string) => {
    throw new Error(`isResolvable(${host}) called: DNS leak`);
  },
  myIpAddress: () => {
    throw new Error("myIpAddress called");
  },
};

function findProxy(bypass: BypassMode, url: string, usersConfigured = false): string {
  const script = generatePac("127.0.0.1:1080", bypass, usersConfigured);
  const host = new URL(url).hostname.replace(/^\[(.*)\]$/, "$1");
  const context: Record<string, unknown> = { ...PAC_HELPERS };
  runInNewContext(script, context);
  const findProxyForURL = context.FindProxyForURL as (url: string, host: string) => string;
  return findProxyForURL(url, host);
}

describe("generatePac with --bypass private", () => {
  const direct: [string, string][] = [
    ["loopback IPv4", "http://127.0.0.1:8080/"],
    ["loopback IPv4 elsewhere in 127/8", "http://127.1.2.3/"],
    ["loopback IPv6", "http://[::1]:8080/"],
    ["unspecified IPv6", "http://[::]/"],
    ["10/8", "http://10.1.2.3/"],
    ["172.16/12 low end", "http://172.16.0.1/"],
    ["172.16/12 high end", "http://172.31.255.254/"],
    ["192.168/16", "https://192.168.1.1/"],
    ["169.254/16 link-local", "http://169.254.169.254/latest/"],
    ["100.64/10 shared", "http://100.127.0.1/"],
    ["0/8", "http://0.1.2.3/"],
    ["fc00::/7 unique local (fd)", "http://[fd12:3456::1]/"],
    ["fc00::/7 unique local (fc)", "http://[fc00::5]/"],
    ["fe80::/10 link-local", "http://[fe80::1]/"],
    ["fe80::/10 upper end", "http://[febf::1]/"],
    ["IPv4-mapped private", "http://[::ffff:192.168.0.1]/"],
    ["plain host name", "http://printer/"],
    ["localhost", "http://localhost:3000/"],
    ["a name under .localhost", "http://app.localhost/"],
    ["a name under .local", "http://nas.local/"],
    ["a name under .home.arpa", "http://router.home.arpa/"],
    ["home.arpa itself", "http://home.arpa/"],
    ["mixed case", "http://NAS.Local/"],
  ];
  it.each(direct)("sends %s DIRECT (%s)", (_what, url) => {
    expect(findProxy("private", url)).toBe("DIRECT");
  });

  const proxied: [string, string][] = [
    ["a public name", "https://example.com/"],
    ["a public IPv4 address", "http://93.184.215.14/"],
    ["172.32.0.1, just outside 172.16/12", "http://172.32.0.1/"],
    ["100.128.0.1, just outside 100.64/10", "http://100.128.0.1/"],
    ["11.0.0.1, just outside 10/8", "http://11.0.0.1/"],
    ["a public IPv6 address", "http://[2606:4700::1111]/"],
    ["fec0::1, just outside fe80::/10", "http://[fec0::1]/"],
    ["fe00::1, just outside fc00::/7", "http://[fe00::1]/"],
    ["IPv4-mapped public", "http://[::ffff:8.8.8.8]/"],
    ["::2 (not loopback)", "http://[::2]/"],
    ["a name merely ending in local", "http://notlocal.example/"],
    ["a name containing localhost", "http://localhost.example.com/"],
  ];
  it.each(proxied)("sends %s to the agent, SOCKS5 first (%s)", (_what, url) => {
    expect(findProxy("private", url)).toBe(PROXIES);
  });

  it("never resolves a name (the DNS helpers throw if called)", () => {
    for (const url of ["http://example.com/", "http://a.b.c.d.example/", "http://1.2.3.4.nip.example/"]) {
      expect(findProxy("private", url)).toBe(PROXIES);
    }
  });
});

describe("generatePac with --bypass none", () => {
  it.each(["http://127.0.0.1/", "http://[::1]/", "http://printer/", "http://nas.local/", "https://example.com/", "http://10.0.0.1/"])(
    "sends %s to the agent",
    (url) => {
      expect(findProxy("none", url)).toBe(PROXIES);
    },
  );
});

describe("generatePac with users configured", () => {
  it("offers the HTTP proxy first: browsers answer a 407 but cannot send a SOCKS5 password", () => {
    expect(findProxy("private", "https://example.com/", true)).toBe("PROXY 127.0.0.1:1080; SOCKS5 127.0.0.1:1080");
  });

  it("never offers SOCKS4, which would resolve names on this machine", () => {
    expect(generatePac("127.0.0.1:1080", "private", true)).not.toMatch(/SOCKS /);
    expect(generatePac("127.0.0.1:1080", "none")).not.toMatch(/SOCKS /);
  });
});

describe("pacProxyAddress", () => {
  it("brackets IPv6 and unwraps IPv4-mapped addresses", () => {
    expect(pacProxyAddress("127.0.0.1", 1080)).toBe("127.0.0.1:1080");
    expect(pacProxyAddress("::1", 1080)).toBe("[::1]:1080");
    expect(pacProxyAddress("::ffff:127.0.0.1", 1080)).toBe("127.0.0.1:1080");
  });
});
