// The Worker's bindings for the Cloudflare fallbacks: a value that does not parse is an
// EdgeConfigError naming its variable (the endpoint answers 500 with it), and an upstream's
// password never appears in the message.

import { describe, expect, it } from "vitest";
import { EdgeConfigError, loadEdgeConfig, type EdgeEnv } from "../../worker/config.ts";

const TOKEN = "edge-config-test-token-0123456789";
const PASSWORD = "s3cret-upstream-pass";

function failure(env: EdgeEnv): string {
  try {
    loadEdgeConfig({ EDGESOCKS_TOKEN: TOKEN, ...env });
  } catch (error) {
    expect(error).toBeInstanceOf(EdgeConfigError);
    return (error as Error).message;
  }
  throw new Error("expected an EdgeConfigError");
}

describe("the Worker's fallback bindings", () => {
  it("reads each fallback when it parses", () => {
    const config = loadEdgeConfig({
      EDGESOCKS_TOKEN: TOKEN,
      EDGESOCKS_UPSTREAM: `socks5://user:${PASSWORD}@127.0.0.1:1081`,
      EDGESOCKS_UPSTREAM_FOR: "all",
      EDGESOCKS_CLOUDFLARE_RELAY: "127.0.0.1:8443, relay.example.net",
      EDGESOCKS_NAT64_PREFIX: "64:ff9b::/96",
      EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: "127.0.0.2/32,::1/128",
    });
    expect(config.upstreamFor).toBe("all");
    expect(config.upstream).toMatchObject({ host: "127.0.0.1", port: 1081 });
    expect(config.cloudflareRelays.map((relay) => [relay.host, relay.port])).toEqual([
      ["127.0.0.1", 8443],
      ["relay.example.net", undefined],
    ]);
    expect(config.nat64Prefix).toBeDefined();
    expect(config.emulatedCloudflareCidrs).toHaveLength(2);
  });

  it("defaults to no fallback, upstream for Cloudflare destinations only", () => {
    const config = loadEdgeConfig({ EDGESOCKS_TOKEN: TOKEN });
    expect(config.upstream).toBeUndefined();
    expect(config.upstreamFor).toBe("cloudflare");
    expect(config.cloudflareRelays).toEqual([]);
    expect(config.nat64Prefix).toBeUndefined();
    expect(config.emulatedCloudflareCidrs).toEqual([]);
  });

  it.each([
    [{ EDGESOCKS_UPSTREAM: `ftp://user:${PASSWORD}@127.0.0.1:21` }, /EDGESOCKS_UPSTREAM/],
    [{ EDGESOCKS_UPSTREAM: `socks5://user:${PASSWORD}@127.0.0.1` }, /EDGESOCKS_UPSTREAM/],
    [{ EDGESOCKS_UPSTREAM_FOR: "everything" }, /^EDGESOCKS_UPSTREAM_FOR must be one of cloudflare, all$/],
    [{ EDGESOCKS_UPSTREAM_FOR: "all" }, /^EDGESOCKS_UPSTREAM_FOR=all needs EDGESOCKS_UPSTREAM$/],
    [{ EDGESOCKS_CLOUDFLARE_RELAY: "127.0.0.1:99999" }, /EDGESOCKS_CLOUDFLARE_RELAY/],
    [{ EDGESOCKS_NAT64_PREFIX: "64:ff9b::/64" }, /^EDGESOCKS_NAT64_PREFIX /],
    [{ EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: "127.0.0.2/33" }, /EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS/],
  ] as [EdgeEnv, RegExp][])("refuses %j, naming the variable and never the password", (env, message) => {
    const text = failure(env);
    expect(text).toMatch(message);
    expect(text).not.toContain(PASSWORD);
  });
});
