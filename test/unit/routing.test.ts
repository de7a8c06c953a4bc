import { describe, expect, it } from "vitest";
import { PRIVATE_RULES, Route, RuleError, effectiveRules, matchRule, parseCidr, parseRuleText, routeFor } from "../../local-agent/routing.ts";
import { AddressType, type Destination } from "../../worker/protocol.ts";

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
