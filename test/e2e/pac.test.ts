// The PAC file at /proxy.pac: what curl gets, and headless Chromium configured only with
// --proxy-pac-url sending a page's requests through the agent and the edge.
//
// What Chromium does with a PAC script and loopback (checked with Debian's Chromium here): it
// never proxies localhost names, 127.0.0.0/8, [::1] or the IPv4-mapped [::ffff:127.0.0.1], whatever
// the script says. Its "implicit bypass rules" apply before the script runs, and unlike with
// --proxy-server, --proxy-bypass-list=<-loopback> cannot lift them for PAC
// (https://chromium.googlesource.com/chromium/src/+/HEAD/net/docs/proxy.md). 0.0.0.0 is not in
// those rules, and on Linux a connection to 0.0.0.0 reaches this machine (the origin listening on
// 127.0.0.1), never the network. So the test loads the origin as http://0.0.0.0:PORT/ to see
// the script's SOCKS5 choice carry it through the agent and the edge, and loads
// http://127.0.0.1:PORT/ to show the implicit bypass: the agent blocks everything but the test
// origin, so that load succeeds only if Chromium went direct. The block rule also keeps
// Chromium's own background requests (accounts.google.com, ...) from leaving through the edge.

import { launchChromium } from "./chromium-launch.ts";
import { runCurl } from "./curl-run.ts";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { startAgent, type RunningAgent } from "./processes.ts";

let agent: RunningAgent;
let origin: HttpOrigin;

beforeAll(async () => {
  origin = await startHttpOrigin();
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--bypass", "none", "--rule", `edge:host=0.0.0.0,port=${origin.port}`, "--rule", "block:port=1-65535"]);
});
afterAll(async () => {
  await agent?.stop();
  await origin?.close();
});

describe("GET /proxy.pac", () => {
  it("serves a PAC script naming the agent's address, SOCKS5 first, with no DIRECT under --bypass none", async () => {
    const result = await runCurl(["-D", "-", `http://127.0.0.1:${agent.port}/proxy.pac`]);
    expect(result.exitCode).toBe(0);
    const [head = "", body = ""] = result.stdout.toString().split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(head).toMatch(/\r\nContent-Type: application\/x-ns-proxy-autoconfig\r\n/i);
    expect(body).toContain("function FindProxyForURL(url, host)");
    const address = `127.0.0.1:${agent.port}`;
    expect(body).toContain(`"SOCKS5 ${address}; PROXY ${address}"`);
    expect(body).not.toContain("DIRECT");
    expect(body).not.toMatch(/dnsResolve|isResolvable/);
  });
});

describe("headless Chromium with only --proxy-pac-url", () => {
  it("sends a page and its subresources through the agent and the edge, and loopback URLs direct", async () => {
    const browser = await launchChromium([`--proxy-pac-url=http://127.0.0.1:${agent.port}/proxy.pac`]);
    try {
      const page = await browser.newPage();
      await page.goto(`http://0.0.0.0:${origin.port}/`);
      await page.waitForFunction("document.title === 'loaded 42'", undefined, { timeout: 15_000 });
      expect(await page.textContent("#static")).toBe("served by the origin");
      // The implicit bypass: the agent would answer this load 403 (block:port=1-65535).
      await page.goto(`http://127.0.0.1:${origin.port}/`);
      await page.waitForFunction("document.title === 'loaded 42'", undefined, { timeout: 15_000 });
      await page.close();
    } finally {
      await browser.close();
    }
    await agent.waitForLog(/HTTP GET \/proxy\.pac 200/);
    // SOCKS5 (the script's first choice) carried the page through the edge; the agent logs each
    // connection when it closes, which the browser's exit ensures.
    await agent.waitForLog(new RegExp(`^\\S+ \\S+ \\S+ -> 0\\.0\\.0\\.0:${origin.port} via edge .* ok$`), 20_000);
    expect(agent.log()).not.toContain(`-> 127.0.0.1:${origin.port}`);
    expect(agent.log()).not.toMatch(/HTTP (GET|CONNECT) -> 0\.0\.0\.0/); // SOCKS5 sufficed: no fallback to PROXY
  });
});
