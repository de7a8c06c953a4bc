// Debian's headless Chromium, driven by playwright-core, started the one way every browser test here needs.

import { chromium, type Browser } from "playwright-core";

/** Launches /usr/bin/chromium headless, quiet in the background, with the test's proxy flags appended. */
export function launchChromium(proxyArgs: string[]): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", ...proxyArgs],
  });
}
