// Property-based fuzzing of the HTTP proxy's pure parsers (local-agent/front/http-proxy.ts): CONNECT
// authorities, absolute-form targets, Basic proxy credentials, the hop-by-hop filter and the
// closing responses. (The request head itself is parsed by Node's llhttp inside node:http; what
// the agent parses out of it is here.) Random and mutated text gets a value or an HttpProxyError
// with status 400; every valid target parses to what it names, including the CONNECT request
// the Worker's upstream client writes (worker/dial/upstream-codec.ts).

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { HttpProxyError, encodeClosingResponse, endToEndHeaders, oneLine, parseAuthority, parseBasicCredentials, parseProxyTarget } from "../../../local-agent/front/http-proxy.ts";
import { Route, effectiveRules, parseRuleText, routeFor } from "../../../local-agent/config/routing.ts";
import { encodeHttpConnect } from "../../../worker/dial/upstream-codec.ts";
import { AddressType, formatDestination, type Destination } from "../../../worker/protocol/index.ts";
import { accepted, destination, fuzzIt, hostileText, ipv4Host, ipv6Spelling, isIpLiteral, outcomeOf, port, utf8Bytes, wellFormedText } from "./fuzz-support.ts";

/** The destination parseAuthority gives for `value` written as host:port: names lower-cased. */
function normalized(value: Destination): Destination {
  return value.type === AddressType.Domain ? { ...value, host: value.host.toLowerCase() } : value;
}

/** A host:port as a client may write it, and the destination it names. */
const authority: fc.Arbitrary<{ text: string; expected: Destination }> = fc.oneof(
  destination.map((value) => ({ text: formatDestination(value), expected: normalized(value) })),
  // A root dot names the same host: an address stays an address, a name loses the dot.
  fc.tuple(destination.filter((value) => value.type !== AddressType.IPv6), port).map(([value, destinationPort]) => ({
    text: `${value.host}.:${destinationPort}`,
    expected: normalized({ ...value, port: destinationPort }),
  })),
  fc.tuple(ipv6Spelling, port).map(([{ canonical, text }, destinationPort]) => ({ text: `[${text}]:${destinationPort}`, expected: { type: AddressType.IPv6, host: canonical, port: destinationPort } })),
);

function expectSound(value: Destination): void {
  expect(Number.isInteger(value.port) && value.port >= 1 && value.port <= 65535).toBe(true);
  if (value.type !== AddressType.Domain) return;
  expect(isIpLiteral(value.host.replace(/\.$/, "")), `name "${value.host}" is an IP literal`).toBe(false);
  expect(utf8Bytes(value.host).byteLength).toBeLessThanOrEqual(255);
}

/** Origin-form path and query (no fragment): what follows the authority in an absolute-form target. */
const pathAndQuery = fc.oneof(
  fc.constant(""),
  fc.webPath().map((path) => (path.startsWith("/") ? path : `/${path}`)),
  fc.tuple(fc.webPath(), fc.webQueryParameters()).map(([path, query]) => `${path.startsWith("/") ? path : `/${path}`}?${query}`),
  fc.webQueryParameters().map((query) => `?${query}`),
);

describe("CONNECT authority (fuzz)", () => {
  fuzzIt("gives a destination or HttpProxyError 400 for random and mutated authorities", fc.tuple(hostileText(authority.map(({ text }) => text)), fc.option(port)), ([text, defaultPort]) => {
    const parsed = outcomeOf(HttpProxyError, () => parseAuthority(text, defaultPort ?? undefined));
    if (parsed.ok) expectSound(parsed.value);
    else expect(parsed.error.statusCode).toBe(400);
  });

  fuzzIt("parses every host:port to the destination it names", authority, ({ text, expected }) => {
    expect(parseAuthority(text)).toEqual(expected);
  });

  fuzzIt("parses the Worker's upstream CONNECT request line, Host and credentials to what it was given", fc.tuple(destination, fc.option(fc.tuple(wellFormedText(20).map((name) => name.replace(/:/g, "")), wellFormedText(20)))), ([value, credentials]) => {
    const proxy = credentials
      ? { scheme: "http" as const, host: "proxy.test", port: 8080, username: credentials[0], password: credentials[1], label: "http://proxy.test:8080" }
      : { scheme: "http" as const, host: "proxy.test", port: 8080, label: "http://proxy.test:8080" };
    const head = new TextDecoder().decode(encodeHttpConnect(proxy, value));
    const lines = head.split("\r\n");
    const requestLine = /^CONNECT (\S+) HTTP\/1\.1$/.exec(lines[0] ?? "");
    expect(requestLine).not.toBeNull();
    expect(parseAuthority(requestLine?.[1] ?? "")).toEqual(normalized(value));
    expect(lines[1]).toBe(`Host: ${requestLine?.[1]}`);
    const authorization = lines.find((line) => line.startsWith("Proxy-Authorization: "))?.slice("Proxy-Authorization: ".length);
    expect(parseBasicCredentials(authorization)).toEqual(credentials ? { name: credentials[0], password: credentials[1] } : undefined);
    expect(head.endsWith("\r\n\r\n")).toBe(true);
  });

  it("reads an IPv4 address with a root dot as that address, so a cidr rule matches it (found by fuzzing)", () => {
    const parsed = parseAuthority("10.0.0.1.:80");
    expect(parsed).toEqual({ type: AddressType.IPv4, host: "10.0.0.1", port: 80 });
    expect(routeFor(parsed, effectiveRules([parseRuleText("block:cidr=10.0.0.0/8")], "none"))).toBe(Route.Block);
    expect(parseProxyTarget("http://10.0.0.1./").destination).toEqual({ type: AddressType.IPv4, host: "10.0.0.1", port: 80 });
  });

  it("refuses a host ending in an empty label, which would leave an address with a root dot as a name (found by fuzzing)", () => {
    expect(outcomeOf(HttpProxyError, () => parseProxyTarget("http://10.100.100.100..:1000/?aa#")).ok).toBe(false);
    expect(outcomeOf(HttpProxyError, () => parseAuthority("example.com..:443")).ok).toBe(false);
  });
});

describe("absolute-form request target (fuzz)", () => {
  const target = fc.tuple(fc.constantFrom("http", "HTTP", "Http"), authority, pathAndQuery, fc.option(fc.webFragments()));
  const targetText = target.map(([scheme, { text }, path, fragment]) => `${scheme}://${text}${path}${fragment === null ? "" : `#${fragment}`}`);

  fuzzIt("gives a target or HttpProxyError 400 for random and mutated targets", hostileText(targetText), (text) => {
    const parsed = outcomeOf(HttpProxyError, () => parseProxyTarget(text));
    if (!parsed.ok) {
      expect(parsed.error.statusCode).toBe(400);
      return;
    }
    expectSound(parsed.value.destination);
    expect(parsed.value.path.startsWith("/")).toBe(true);
    expect(parsed.value.path).not.toContain("#");
    expect(parsed.value.hostHeader).not.toContain("@");
  });

  fuzzIt("parses every http:// URL to its destination, origin-form path and Host", target, ([scheme, { text, expected }, path, fragment]) => {
    const parsed = parseProxyTarget(`${scheme}://${text}${path}${fragment === null ? "" : `#${fragment}`}`);
    expect(parsed).toEqual({ destination: expected, path: path === "" ? "/" : path.startsWith("?") ? `/${path}` : path, hostHeader: text });
  });

  fuzzIt("uses port 80 when the URL names none", destination.filter((value) => value.type !== AddressType.IPv6), (value) => {
    expect(parseProxyTarget(`http://${value.host}/`).destination).toEqual(normalized({ ...value, port: 80 }));
  });
});

describe("Basic proxy credentials (fuzz)", () => {
  const basic = (name: string, password: string) => `Basic ${Buffer.from(`${name}:${password}`, "utf8").toString("base64")}`;
  const name = wellFormedText(30).map((text) => text.replace(/:/g, ""));

  fuzzIt("never throws on random and mutated header values", hostileText(fc.tuple(name, wellFormedText(30)).map(([user, password]) => basic(user, password))), (header) => {
    const credentials = accepted(() => parseBasicCredentials(header));
    if (credentials) expect(credentials.name).not.toContain(":");
  });

  fuzzIt(
    "reads back every user name and password sent, whatever the scheme's case and the spacing",
    fc.tuple(name, wellFormedText(30), fc.constantFrom("Basic", "basic", "BASIC"), fc.constantFrom(" ", "  ", "\t"), fc.constantFrom("", " ", "\t ")),
    ([user, password, scheme, gap, after]) => {
      const token = Buffer.from(`${user}:${password}`, "utf8").toString("base64");
      expect(parseBasicCredentials(`${scheme}${gap}${token}${after}`)).toEqual({ name: user, password });
    },
  );
});

describe("hop-by-hop filter and closing responses (fuzz)", () => {
  const HOP_BY_HOP = ["connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];
  const headerName = fc.oneof(fc.constantFrom(...HOP_BY_HOP, "Connection", "TE", "x-custom", "host", "content-length"), fc.stringMatching(/^[a-z][a-z0-9-]{0,12}$/));
  const headers = fc.dictionary(headerName, fc.array(wellFormedText(20), { minLength: 1, maxLength: 3 }), { maxKeys: 8 });
  const connection = fc.array(fc.oneof(headerName, fc.constantFrom(" X-Custom ", "", " , ")), { maxLength: 4 }).map((tokens) => tokens.join(","));

  fuzzIt("keeps every end-to-end header as it was, and none that is hop-by-hop or named by Connection", fc.tuple(headers, fc.option(connection)), ([given, connectionValue]) => {
    const input: Record<string, string[]> = { ...given };
    if (connectionValue !== null) input.connection = [connectionValue];
    const named = new Set((input.connection ?? []).flatMap((value) => value.split(",")).map((token) => token.trim().toLowerCase()));
    const kept = endToEndHeaders(input);
    for (const [key, values] of Object.entries(input)) {
      const lower = key.toLowerCase();
      const dropped = HOP_BY_HOP.includes(lower) || named.has(lower);
      if (dropped) expect(kept[lower], key).toBeUndefined();
      // Two spellings of one name (Host, host): one of them is kept.
      else if (Object.keys(input).filter((other) => other.toLowerCase() === lower).length === 1) expect(kept[lower]).toEqual(values);
    }
    for (const key of Object.keys(kept)) expect(key).toBe(key.toLowerCase());
  });

  fuzzIt("writes one status line, headers, and a body of one line that Content-Length counts, whatever the message", fc.tuple(fc.constantFrom(400, 403, 407, 408, 431, 502, 504, 599), hostileText(wellFormedText(40))), ([statusCode, message]) => {
    const response = encodeClosingResponse(statusCode, message).toString("utf8");
    const split = response.indexOf("\r\n\r\n");
    expect(split).toBeGreaterThan(0);
    const [statusLine, ...headerLines] = response.slice(0, split).split("\r\n");
    expect(statusLine).toMatch(new RegExp(`^HTTP/1\\.1 ${statusCode} [A-Za-z ]+$`));
    for (const line of headerLines) expect(line).toMatch(/^[A-Za-z-]+: [^\r\n]*$/);
    const body = response.slice(split + 4);
    // A lone surrogate goes out as U+FFFD, as any string written as UTF-8 does.
    expect(body).toBe(Buffer.from(`${oneLine(message)}\n`, "utf8").toString("utf8"));
    expect(body.indexOf("\n")).toBe(body.length - 1);
    expect(headerLines).toContain(`Content-Length: ${Buffer.byteLength(body)}`);
  });
});
