import { describe, expect, it } from "vitest";
import { PRIVATE_RULES, Route, RuleError, buildRule, effectiveRules, matchRule, parseCidr, parseRuleText, routeFor } from "../../local-agent/config/routing.ts";
import { AddressType, type Destination } from "../../worker/protocol/index.ts";

function destination(host: string, port = 443): Destination {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) return { type: AddressType.IPv4, host, port };
  if (host.includes(":")) return { type: AddressType.IPv6, host, port };
  return { type: AddressType.Domain, host, port };
}

describe("parseRuleText", () => {
  it("parses each matcher and combines them", () => {
    expect(parseRuleText("edge:host=Example.COM,port=443")).toEqual({ route: "edge", host: "example.com", port: { from: 443, to: 443 }, text: "edge:host=Example.COM,port=443" });
    expect(parseRuleText("direct:suffix=*.corp.example")).toMatchObject({ route: "direct", domainSuffix: "corp.example" });
    expect(parseRuleText("block:port=8000-8999")).toMatchObject({ route: "block", port: { from: 8000, to: 8999 } });
    expect(parseRuleText("direct:cidr=10.0.0.0/8")).toMatchObject({ cidr: { bytes: [10, 0, 0, 0], prefixBits: 8 } });
    expect(parseRuleText("direct:host=::0:1")).toMatchObject({ host: "::1" });
  });

  it.each([
    ["direct", /is not ROUTE:MATCHER/],
    ["proxy:port=1", /route must be one of edge, direct, block/],
    ["block:port", /"port" is not KIND=VALUE/],
    ["block:port=1,port=2", /names port twice/],
    ["block:colour=red", /unknown matcher "colour"/],
    ["block:port=0", /port "0" is not N or N-M within 1..65535/],
    ["block:port=9-1", /not N or N-M/],
    ["block:port=65536", /not N or N-M/],
    ["direct:suffix=bad..name", /is not a domain name/],
    ["direct:host=white space", /is not a host name or IP address/],
    ["direct:cidr=10.0.0.0/33", /prefix length must be 0..32/],
    ["direct:cidr=fe80::/129", /prefix length must be 0..128/],
    ["direct:cidr=example.com/8", /is not an IPv4 or IPv6 address/],
    ["direct:cidr=1.2.3.4/8/8", /is not ADDRESS\/BITS/],
    ["direct:", /"" is not KIND=VALUE/],
    ["direct:port=80,", /"" is not KIND=VALUE/],
    ["EDGE:port=1", /route must be one of edge, direct, block, not "EDGE"/],
    [":port=1", /route must be one of/],
    ["block:constructor=1", /unknown matcher "constructor"/],
    ["block:__proto__=1", /unknown matcher "__proto__"/],
    ["block:port=", /port "" is not N or N-M/],
    ["block:port=80-", /port "80-" is not N or N-M/],
    ["block:port=http", /port "http" is not N or N-M/],
    ["block:port=-1", /port "-1" is not N or N-M/],
    ["direct:suffix=", /suffix "" is not a domain name/],
    ["direct:suffix=-bad.example", /is not a domain name/],
    ["direct:host=", /host "" is not a host name or IP address/],
    ["direct:host=fe80::1%eth0", /is not a host name or IP address/],
    ["direct:cidr=", /"" is not an IPv4 or IPv6 address/],
    ["direct:cidr=10.0.0.0/", /prefix length must be 0..32/],
    ["direct:cidr=10.0.0.0/-1", /prefix length must be 0..32/],
    ["direct:cidr=10.0.0.0/8.5", /prefix length must be 0..32/],
    ["direct:cidr=256.0.0.0/8", /is not an IPv4 or IPv6 address/],
    ["direct:cidr=::ffff:10.0.0.0/95", /prefix length must be 96..128/],
    ["direct:cidr=::ffff:10.0.0.0/129", /prefix length must be 96..128/],
  ])("refuses %s", (text, message) => {
    expect(() => parseRuleText(text)).toThrow(RuleError);
    expect(() => parseRuleText(text)).toThrow(message);
  });
});

describe("matchRule", () => {
  it("matches a suffix on a label boundary only, and never an IP destination", () => {
    const rules = [parseRuleText("direct:suffix=example.com")];
    expect(routeFor(destination("example.com"), rules)).toBe(Route.Direct);
    expect(routeFor(destination("a.b.EXAMPLE.com."), rules)).toBe(Route.Direct);
    expect(routeFor(destination("badexample.com"), rules)).toBe(Route.Edge);
    expect(routeFor(destination("example.com.evil.test"), rules)).toBe(Route.Edge);
  });

  it("matches CIDR blocks at non-byte prefixes, /0 and full length", () => {
    const rule = (text: string) => [parseRuleText(`direct:cidr=${text}`)];
    expect(routeFor(destination("172.31.255.255"), rule("172.16.0.0/12"))).toBe(Route.Direct);
    expect(routeFor(destination("172.32.0.0"), rule("172.16.0.0/12"))).toBe(Route.Edge);
    expect(routeFor(destination("100.127.0.1"), rule("100.64.0.0/10"))).toBe(Route.Direct);
    expect(routeFor(destination("100.128.0.1"), rule("100.64.0.0/10"))).toBe(Route.Edge);
    expect(routeFor(destination("198.51.100.7"), rule("0.0.0.0/0"))).toBe(Route.Direct);
    expect(routeFor(destination("198.51.100.7"), rule("198.51.100.7/32"))).toBe(Route.Direct);
    expect(routeFor(destination("198.51.100.8"), rule("198.51.100.7"))).toBe(Route.Edge);
    expect(routeFor(destination("2001:db8::1"), rule("2001:db8::1/128"))).toBe(Route.Direct);
    expect(routeFor(destination("2001:db8::2"), rule("2001:db8::1/128"))).toBe(Route.Edge);
    expect(routeFor(destination("fe80::1"), rule("10.0.0.0/8"))).toBe(Route.Edge);
    expect(routeFor(destination("example.com"), rule("0.0.0.0/0"))).toBe(Route.Edge);
  });

  it("treats an IPv4-mapped IPv6 address as the IPv4 it is", () => {
    expect(routeFor(destination("::ffff:10.1.2.3"), [parseRuleText("direct:cidr=10.0.0.0/8")])).toBe(Route.Direct);
  });

  it("needs every matcher of a rule, and takes the first rule that matches", () => {
    const rules = [parseRuleText("block:host=example.com,port=25"), parseRuleText("direct:suffix=example.com"), parseRuleText("block:port=1-65535")];
    expect(matchRule(destination("example.com", 25), rules)?.text).toBe("block:host=example.com,port=25");
    expect(matchRule(destination("example.com", 443), rules)?.text).toBe("direct:suffix=example.com");
    expect(matchRule(destination("example.org", 443), rules)?.text).toBe("block:port=1-65535");
    expect(matchRule(destination("example.org"), [])).toBeUndefined();
  });
});

describe("--bypass", () => {
  it.each(["10.1.2.3", "172.16.0.1", "172.31.0.1", "192.168.1.1", "127.0.0.1", "127.255.0.9", "169.254.1.1", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "fd12::1", "localhost", "printer.local", "nas.home.arpa", "a.localhost"])(
    "private sends %s direct",
    (host) => {
      expect(routeFor(destination(host), effectiveRules([], "private"))).toBe(Route.Direct);
    },
  );

  it.each(["192.0.2.1", "172.32.0.1", "2001:db8::1", "example.com", "local.example.com"])("private keeps %s on the edge", (host) => {
    expect(routeFor(destination(host), effectiveRules([], "private"))).toBe(Route.Edge);
  });

  it("none sends every destination through the edge", () => {
    expect(effectiveRules([], "none")).toEqual([]);
    expect(routeFor(destination("127.0.0.1"), effectiveRules([], "none"))).toBe(Route.Edge);
  });

  it("puts the user's rules before the private ones, so they can override them", () => {
    const userRule = parseRuleText("edge:cidr=127.0.0.0/8");
    const rules = effectiveRules([userRule], "private");
    expect(rules[0]).toBe(userRule);
    expect(rules.slice(1)).toEqual(PRIVATE_RULES);
    expect(routeFor(destination("127.0.0.1"), rules)).toBe(Route.Edge);
  });
});

describe("parseCidr", () => {
  it("reads a bare address as a single host", () => {
    expect(parseCidr("10.0.0.1")).toEqual({ bytes: [10, 0, 0, 1], prefixBits: 32 });
    expect(parseCidr("::1").prefixBits).toBe(128);
  });
});

describe("host matcher", () => {
  it("matches a name exactly, whatever its case or trailing dot, and nothing below it", () => {
    const rules = [parseRuleText("block:host=Example.com.")];
    expect(routeFor(destination("EXAMPLE.COM"), rules)).toBe(Route.Block);
    expect(routeFor(destination("example.com."), rules)).toBe(Route.Block);
    expect(routeFor(destination("www.example.com"), rules)).toBe(Route.Edge);
    expect(routeFor(destination("example.co"), rules)).toBe(Route.Edge);
  });

  it.each(["::1", "0:0:0:0:0:0:0:1", "::0:1", "[::1]", "0000::0001"])("reads the IPv6 rule %s in its canonical form", (written) => {
    const rules = [parseRuleText(`block:host=${written}`)];
    expect(rules[0]?.host).toBe("::1");
    expect(routeFor(destination("::1"), rules)).toBe(Route.Block);
    expect(routeFor(destination("::2"), rules)).toBe(Route.Edge);
  });

  it("matches an upper-case, zero-padded IPv6 rule against the canonical destination", () => {
    const rules = [parseRuleText("block:host=2001:0DB8:0000:0000:0000:0000:0000:0001")];
    expect(routeFor(destination("2001:db8::1"), rules)).toBe(Route.Block);
  });

  it("matches an IPv4 literal exactly", () => {
    const rules = [parseRuleText("block:host=127.0.0.1")];
    expect(routeFor(destination("127.0.0.1"), rules)).toBe(Route.Block);
    expect(routeFor(destination("127.0.0.2"), rules)).toBe(Route.Edge);
  });
});

describe("port matcher", () => {
  it("includes both ends of a range and nothing outside it", () => {
    const rules = [parseRuleText("block:port=8000-8999")];
    expect(routeFor(destination("example.com", 7999), rules)).toBe(Route.Edge);
    expect(routeFor(destination("example.com", 8000), rules)).toBe(Route.Block);
    expect(routeFor(destination("example.com", 8500), rules)).toBe(Route.Block);
    expect(routeFor(destination("example.com", 8999), rules)).toBe(Route.Block);
    expect(routeFor(destination("example.com", 9000), rules)).toBe(Route.Edge);
  });

  it("accepts the whole range, a one-port range, and leading zeros", () => {
    expect(parseRuleText("block:port=1-65535").port).toEqual({ from: 1, to: 65535 });
    expect(parseRuleText("block:port=443-443").port).toEqual({ from: 443, to: 443 });
    expect(parseRuleText("block:port=0080").port).toEqual({ from: 80, to: 80 });
  });

  it("combined with a suffix, needs both", () => {
    const rules = [parseRuleText("direct:suffix=corp.example,port=443")];
    expect(routeFor(destination("git.corp.example", 443), rules)).toBe(Route.Direct);
    expect(routeFor(destination("git.corp.example", 22), rules)).toBe(Route.Edge);
    expect(routeFor(destination("git.other.example", 443), rules)).toBe(Route.Edge);
  });
});

describe("CIDR edges", () => {
  const routeIn = (block: string, host: string) => routeFor(destination(host), [parseRuleText(`direct:cidr=${block}`)]);

  it("/0 matches every address of its own family only", () => {
    expect(routeIn("0.0.0.0/0", "255.255.255.255")).toBe(Route.Direct);
    expect(routeIn("0.0.0.0/0", "::1")).toBe(Route.Edge);
    expect(routeIn("::/0", "2001:db8::1")).toBe(Route.Direct);
    expect(routeIn("::/0", "192.0.2.1")).toBe(Route.Edge);
  });

  it("ignores host bits past the prefix in the rule", () => {
    expect(routeIn("10.9.8.7/8", "10.0.0.1")).toBe(Route.Direct);
    expect(routeIn("10.9.8.7/8", "11.0.0.1")).toBe(Route.Edge);
  });

  it("splits inside a byte at /12, /10, /7, and /31", () => {
    expect(routeIn("172.16.0.0/12", "172.15.255.255")).toBe(Route.Edge);
    expect(routeIn("172.16.0.0/12", "172.16.0.0")).toBe(Route.Direct);
    expect(routeIn("100.64.0.0/10", "100.63.255.255")).toBe(Route.Edge);
    expect(routeIn("100.64.0.0/10", "100.64.0.0")).toBe(Route.Direct);
    expect(routeIn("fe80::/10", "febf:ffff::1")).toBe(Route.Direct);
    expect(routeIn("fe80::/10", "fec0::1")).toBe(Route.Edge);
    expect(routeIn("fc00::/7", "fdff::1")).toBe(Route.Direct);
    expect(routeIn("fc00::/7", "fbff::1")).toBe(Route.Edge);
    expect(routeIn("fc00::/7", "fe00::1")).toBe(Route.Edge);
    expect(routeIn("192.0.2.6/31", "192.0.2.7")).toBe(Route.Direct);
    expect(routeIn("192.0.2.6/31", "192.0.2.8")).toBe(Route.Edge);
  });

  it("/128 and a bare IPv6 address match that one address", () => {
    expect(routeIn("2001:db8::ff", "2001:db8::ff")).toBe(Route.Direct);
    expect(routeIn("2001:db8::ff/128", "2001:db8::fe")).toBe(Route.Edge);
    expect(routeIn("2001:db8::ff/127", "2001:db8::fe")).toBe(Route.Direct);
  });

  it("reads an IPv4-mapped block as the IPv4 block, matching plain and mapped destinations", () => {
    expect(parseCidr("::ffff:10.0.0.0/104")).toEqual({ bytes: [10, 0, 0, 0], prefixBits: 8 });
    expect(parseCidr("::ffff:0:0/96")).toEqual({ bytes: [0, 0, 0, 0], prefixBits: 0 });
    expect(parseCidr("::ffff:10.0.0.1")).toEqual({ bytes: [10, 0, 0, 1], prefixBits: 32 });
    expect(routeIn("::ffff:10.0.0.0/104", "10.200.0.1")).toBe(Route.Direct);
    expect(routeIn("::ffff:10.0.0.0/104", "::ffff:10.200.0.1")).toBe(Route.Direct);
    expect(routeIn("::ffff:10.0.0.0/104", "11.0.0.1")).toBe(Route.Edge);
  });

  it("never matches a domain name, even one that looks like an address", () => {
    expect(routeFor({ type: AddressType.Domain, host: "10.0.0.1.example", port: 80 }, [parseRuleText("direct:cidr=0.0.0.0/0")])).toBe(Route.Edge);
  });
});

describe("buildRule (the config file's form)", () => {
  it("takes a numeric port and the same matcher names as the flag", () => {
    expect(buildRule("block", { port: 25 }, "rules[0]")).toEqual({ route: "block", port: { from: 25, to: 25 }, text: "rules[0]" });
    expect(buildRule("direct", { suffix: "corp.example", port: "443" }, "rules[1]")).toMatchObject({ domainSuffix: "corp.example", port: { from: 443, to: 443 } });
  });

  it("matches everything when it has no matcher", () => {
    expect(routeFor(destination("example.com"), [buildRule("block", {}, "rules[0]")])).toBe(Route.Block);
  });

  it("names the bad part", () => {
    expect(() => buildRule("direct", { port: 0 }, "rules[2]")).toThrow('rule "rules[2]": port "0"');
    expect(() => buildRule("tunnel", {}, "rules[3]")).toThrow('route must be one of edge, direct, block, not "tunnel"');
  });
});

describe("PRIVATE_RULES", () => {
  const privateRoute = (host: string) => routeFor(destination(host), PRIVATE_RULES);

  it.each(["10.0.0.0", "10.255.255.255", "172.16.0.0", "172.31.255.255", "192.168.0.0", "192.168.255.255", "127.0.0.1", "169.254.0.1", "::", "::1", "::ffff:127.0.0.1", "::ffff:192.168.0.1", "fe80::1", "febf::1", "fc00::", "fdff:ffff::1"])(
    "sends %s direct",
    (host) => {
      expect(privateRoute(host)).toBe(Route.Direct);
    },
  );

  // Documentation and public addresses: parsed here, never contacted.
  it.each(["192.0.2.1", "198.51.100.1", "203.0.113.1", "8.8.8.8", "11.0.0.1", "172.15.255.255", "172.32.0.0", "192.167.255.255", "192.169.0.0", "128.0.0.1", "169.255.0.1", "::2", "2001:db8::1", "fec0::1", "fbff::1", "fe00::1", "::ffff:192.0.2.1"])(
    "keeps %s on the edge",
    (host) => {
      expect(privateRoute(host)).toBe(Route.Edge);
    },
  );

  it("sends localhost, *.localhost, *.local and *.home.arpa direct by name, on label boundaries", () => {
    for (const name of ["localhost", "LOCALHOST.", "app.localhost", "printer.local", "local", "nas.home.arpa"]) expect(privateRoute(name)).toBe(Route.Direct);
    for (const name of ["notlocalhost", "localhost.example.com", "mylocal", "local.example", "home.arpa.example", "myhome.arpa"]) expect(privateRoute(name)).toBe(Route.Edge);
  });

  it("are all direct rules that name --bypass private in their log text", () => {
    for (const rule of PRIVATE_RULES) {
      expect(rule.route).toBe(Route.Direct);
      expect(rule.text).toContain("(--bypass private)");
    }
  });
});
