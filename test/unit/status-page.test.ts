// The status page (local-agent/status/status-page.ts) is self-contained: its inline style and
// script are the ones the Content-Security-Policy allows by hash, it names no URL anywhere, and
// it builds rows with textContent, never HTML strings.

import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { STATUS_PAGE_CSP, STATUS_PAGE_HTML } from "../../local-agent/status/status-page.ts";

const hashOf = (text: string) => `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;
const between = (open: string, close: string) => {
  const start = STATUS_PAGE_HTML.indexOf(open) + open.length;
  return STATUS_PAGE_HTML.slice(start, STATUS_PAGE_HTML.indexOf(close, start));
};

describe("the status page", () => {
  it("has one style and one script, each allowed by the policy's hash and nothing else inline", () => {
    expect(STATUS_PAGE_HTML.match(/<script/g)).toHaveLength(1);
    expect(STATUS_PAGE_HTML.match(/<style/g)).toHaveLength(1);
    expect(STATUS_PAGE_CSP).toContain(`script-src ${hashOf(between("<script>", "</script>"))}`);
    expect(STATUS_PAGE_CSP).toContain(`style-src ${hashOf(between("<style>", "</style>"))}`);
    expect(STATUS_PAGE_CSP).toMatch(/^default-src 'none'; /);
    expect(STATUS_PAGE_CSP).toContain("connect-src 'self'");
    expect(STATUS_PAGE_CSP).toContain("frame-ancestors 'none'");
    expect(STATUS_PAGE_HTML).not.toMatch(/ style="| on[a-z]+="/);
  });

  it("names no URL but its own paths: nothing to load from anywhere", () => {
    expect(STATUS_PAGE_HTML).not.toMatch(/https?:|\/\/[a-z]|wss?:/i);
    const references = [...STATUS_PAGE_HTML.matchAll(/(?:href|src)="([^"]*)"/g)].map((match) => match[1]);
    expect(references).toEqual(["data:,", "/status.json", "/metrics"]);
    expect(between("<script>", "</script>")).toContain('fetch("/status.json"');
  });

  it("writes what the agent reports as text, never as HTML", () => {
    expect(STATUS_PAGE_HTML).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });
});
