// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) configured with the
// agent as its SOCKS5 proxy loads a page, its script and the script's fetch through the edge.

import type { Browser } from "playwright-core";
import { launchChromium } from "./chromium-launch.ts";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { startAgent, type RunningAgent } from "./processes.ts";

let agent: RunningAgent;
let origin: HttpOrigin;
let browser: Browser;

beforeAll(async () => {
  // Only the test origin may leave through the edge: Chromium's own background requests
  // (accounts, updates) are blocked, so nothing here ever reaches for a non-loopback address.
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), [
    "--rule",
    "edge:host=127.0.0.1",
    "--rule",
    "edge:host=localhost",
    "--rule",
    "block:port=1-65535",
  ]);
  origin = await startHttpOrigin();
  browser = await launchChromium([
    `--proxy-server=socks5://127.0.0.1:${agent.port}`,
    // Chromium bypasses proxies for loopback by default; "<-loopback>" removes that rule so
    // the local origin really goes through the agent and the edge.
    "--proxy-bypass-list=<-loopback>",
  ]);
});
afterAll(async () => {
  await browser?.close();
  await agent?.stop();
  await origin?.close();
});

describe("headless Chromium through the agent", () => {
  it("loads a page and its subresources through the edge", async () => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${origin.port}/`);
    await page.waitForFunction("document.title === 'loaded 42'", undefined, { timeout: 15_000 });
    expect(await page.textContent("#static")).toBe("served by the origin");
    await page.close();
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} .* ok$`), 20_000);
  });

  it("leaves name resolution to the edge (socks5 with a host name)", async () => {
    const page = await browser.newPage();
    await page.goto(`http://localhost:${origin.port}/`);
    await page.waitForFunction("document.title === 'loaded 42'", undefined, { timeout: 15_000 });
    await page.close();
    await agent.waitForLog(new RegExp(`-> localhost:${origin.port} `), 20_000);
  });
});
