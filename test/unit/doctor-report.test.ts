// The doctor's output (local-agent/doctor/report.ts): the table of an edge, the summary line, and
// the exit rule (a warning does not fail), from rows made by hand.

import { describe, expect, it } from "vitest";
import { fail, pass, skip, warn } from "../../local-agent/doctor/check.ts";
import { allPassed, oneLine, renderEdgeTable, renderSummary, type EdgeReport } from "../../local-agent/doctor/report.ts";

const WORKING: EdgeReport = {
  edgeLabel: "https://edgesocks.example.workers.dev",
  results: [pass("name resolves", "edgesocks.example.workers.dev: 192.0.2.1"), skip("TLS handshake", "an http:// edge: no TLS to check"), warn("Cloudflare-hosted", "no fallback", "configure one")],
};
const BROKEN: EdgeReport = {
  edgeLabel: "http://127.0.0.1:8787",
  results: [pass("name resolves", "127.0.0.1 (an IP literal, nothing to resolve)"), fail("TCP connect", "127.0.0.1:8787 refused the connection", "start the edge"), skip("clock", "needs a TCP connection to the edge")],
};

describe("renderEdgeTable", () => {
  it("aligns check, result and detail in columns, a failure in capitals, and puts each fix under its detail", () => {
    expect(renderEdgeTable(BROKEN, { index: 0, count: 1 })).toBe(
      [
        "edge http://127.0.0.1:8787",
        "  CHECK          RESULT  DETAIL",
        "  name resolves  pass    127.0.0.1 (an IP literal, nothing to resolve)",
        "  TCP connect    FAIL    127.0.0.1:8787 refused the connection",
        "                         fix: start the edge",
        "  clock          skip    needs a TCP connection to the edge",
        "",
      ].join("\n"),
    );
  });

  it("gives a warning its fix too, and numbers the edges when there are several", () => {
    const table = renderEdgeTable(WORKING, { index: 1, count: 2 });
    expect(table.split("\n")[0]).toBe("edge 2 of 2: https://edgesocks.example.workers.dev");
    expect(table).toContain("  Cloudflare-hosted  warn    no fallback\n                             fix: configure one\n");
    // A skip has no fix line.
    expect(table).toContain("  TLS handshake      skip    an http:// edge: no TLS to check\n  Cloudflare-hosted");
  });

  it("keeps every row one line when a detail quotes an answer with line breaks and escapes", () => {
    const hostile: EdgeReport = { edgeLabel: "http://127.0.0.1:1", results: [fail("healthz/protocol", "edgesocks 1.0\n\x1b[2Jfake row", "fix\r\nit")] };
    const lines = renderEdgeTable(hostile, { index: 0, count: 1 }).trimEnd().split("\n");
    expect(lines).toHaveLength(4);
    expect(lines[2]).toBe("  healthz/protocol  FAIL    edgesocks 1.0\\u000a\\u001b[2Jfake row");
    expect(lines[3]).toMatch(/fix: fix\\u000d\\u000ait$/);
  });
});

describe("oneLine", () => {
  it("escapes C0 and C1 control characters and DEL, and leaves other text alone", () => {
    expect(oneLine("a\tb\x7fc\x9bd é ✓")).toBe("a\\u0009b\\u007fc\\u009bd é ✓");
  });
});

describe("renderSummary and allPassed", () => {
  it("says no check failed when there are only passes, warnings and skips, which exits 0", () => {
    expect(renderSummary([WORKING])).toBe("edgesocks doctor: no check failed on 1 edge (1 passed, 1 warning, 0 failed, 1 skipped)\n");
    expect(allPassed([WORKING])).toBe(true);
  });

  it("names the edges with failures and counts over every edge, which exits 1", () => {
    expect(renderSummary([BROKEN, WORKING])).toBe(
      "edgesocks doctor: checks failed on 1 of 2 edges: http://127.0.0.1:8787 (2 passed, 1 warning, 1 failed, 2 skipped); fix the first failure of each first\n",
    );
    expect(allPassed([BROKEN, WORKING])).toBe(false);
  });
});
