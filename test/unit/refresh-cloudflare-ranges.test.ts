// test/tools/refresh-cloudflare-ranges.ts: the pure part of `npm run ranges:refresh`. It must
// rewrite only the two arrays and the date of worker/dial/cloudflare-ranges.ts, and refuse to
// write anything from a list with a bad line or no lines. The network part is never run here.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it, vi } from "vitest";

// Any fetch would mean the tool ran its main on import; record it instead of reaching the network.
const fetchCalls: unknown[] = [];
vi.stubGlobal("fetch", (...args: unknown[]) => {
  fetchCalls.push(args);
  throw new Error("unit tests have no network");
});
const { IPV4_LIST_URL, IPV6_LIST_URL, RangesRefreshError, listLines, renderRanges } = await import("../tools/refresh-cloudflare-ranges.ts");
vi.unstubAllGlobals();

const FIXTURE = `// Cloudflare ranges fixture; list last checked 2020-01-01 from the copy in this file's history.
import { parseCidr } from "./cidr.ts";

export const CLOUDFLARE_RANGES_CHECKED_ON = "2020-01-01";

/** v4 */
export const CLOUDFLARE_IPV4_RANGES: readonly string[] = [
  "198.51.100.0/24",
];

/** v6 */
export const CLOUDFLARE_IPV6_RANGES: readonly string[] = [
  "2001:db8::/32",
  "2001:db9::/32",
];

const parsed = [...CLOUDFLARE_IPV4_RANGES, ...CLOUDFLARE_IPV6_RANGES].map((block) => parseCidr(block));
`;

const V4 = ["173.245.48.0/20", "104.16.0.0/13"];
const V6 = ["2400:cb00::/32"];

/** The strings of the array named `name` in module text, read back the way a reader would. */
function arrayEntries(text: string, name: string): string[] {
  const match = new RegExp(`export const ${name}: readonly string\\[\\] = \\[([^\\]]*)\\];`).exec(text);
  if (!match) throw new Error(`${name} not found`);
  return [...(match[1] ?? "").matchAll(/"([^"]*)"/g)].map((entry) => entry[1] ?? "");
}

describe("renderRanges", () => {
  it("replaces both arrays and the date, one quoted block a line", () => {
    const text = renderRanges(FIXTURE, V4, V6, "2027-03-04");
    expect(arrayEntries(text, "CLOUDFLARE_IPV4_RANGES")).toEqual(V4);
    expect(arrayEntries(text, "CLOUDFLARE_IPV6_RANGES")).toEqual(V6);
    expect(text).toContain('export const CLOUDFLARE_RANGES_CHECKED_ON = "2027-03-04";');
    expect(text).toContain('export const CLOUDFLARE_IPV4_RANGES: readonly string[] = [\n  "173.245.48.0/20",\n  "104.16.0.0/13",\n];');
  });

  it("leaves every other line as it was, and updates the comment's date", () => {
    const text = renderRanges(FIXTURE, V4, V6, "2027-03-04");
    const untouched = (source: string): string =>
      source
        .replace(/\[[^\]]*\];/g, "[ARRAY];")
        .replace(/"\d{4}-\d{2}-\d{2}"/, '"DATE"')
        .replace(/list last checked [^.]*\./, "COMMENT.");
    expect(untouched(text)).toBe(untouched(FIXTURE));
    expect(text.split("\n")[0]).toBe("// Cloudflare ranges fixture; list last checked 2027-03-04 from those two URLs.");
  });

  it("gives the same text when run again on its own output", () => {
    const once = renderRanges(FIXTURE, V4, V6, "2027-03-04");
    expect(renderRanges(once, V4, V6, "2027-03-04")).toBe(once);
  });

  it("can rewrite the real worker/dial/cloudflare-ranges.ts, changing only the date line when the lists are the same", async () => {
    const path = fileURLToPath(new URL("../../worker/dial/cloudflare-ranges.ts", import.meta.url));
    const real = readFileSync(path, "utf8");
    const { CLOUDFLARE_IPV4_RANGES, CLOUDFLARE_IPV6_RANGES, CLOUDFLARE_RANGES_CHECKED_ON } = await import("../../worker/dial/cloudflare-ranges.ts");
    const rendered = renderRanges(real, CLOUDFLARE_IPV4_RANGES, CLOUDFLARE_IPV6_RANGES, CLOUDFLARE_RANGES_CHECKED_ON);
    const changed = rendered.split("\n").filter((line, index) => line !== real.split("\n")[index]);
    expect(rendered.split("\n")).toHaveLength(real.split("\n").length);
    expect(changed).toHaveLength(1);
    expect(changed[0]).toContain(`list last checked ${CLOUDFLARE_RANGES_CHECKED_ON} from those two URLs`);
  });

  it("refuses an empty list, naming its URL", () => {
    expect(() => renderRanges(FIXTURE, [], V6, "2027-03-04")).toThrow(RangesRefreshError);
    expect(() => renderRanges(FIXTURE, [], V6, "2027-03-04")).toThrow(`${IPV4_LIST_URL} gave no ranges`);
    expect(() => renderRanges(FIXTURE, V4, [], "2027-03-04")).toThrow(`${IPV6_LIST_URL} gave no ranges`);
  });

  it.each([
    [["173.245.48.0/20", "<html>"], V6, `${IPV4_LIST_URL} line 2 "<html>" has no /BITS`],
    [["173.245.48.0/33"], V6, `${IPV4_LIST_URL} line 1 "173.245.48.0/33": "173.245.48.0/33": prefix length must be 0..32`],
    [["999.1.1.1/8"], V6, `${IPV4_LIST_URL} line 1 "999.1.1.1/8": "999.1.1.1" is not an IPv4 or IPv6 address`],
    [["173.245.48.0"], V6, `${IPV4_LIST_URL} line 1 "173.245.48.0" has no /BITS`],
    [["2400:cb00::/32"], V6, `${IPV4_LIST_URL} line 1 "2400:cb00::/32" is not an IPv4 block`],
    [["::ffff:104.16.0.0/109"], V6, `${IPV4_LIST_URL} line 1 "::ffff:104.16.0.0/109" is not an IPv4 block`],
    [V4, ["2400:cb00::/32", "104.16.0.0/13"], `${IPV6_LIST_URL} line 2 "104.16.0.0/13" is not an IPv6 block`],
    [V4, ["::ffff:104.16.0.0/109"], `${IPV6_LIST_URL} line 1 "::ffff:104.16.0.0/109" is not an IPv6 block`],
  ])("refuses the lists %j and %j: %s", (v4, v6, message) => {
    expect(() => renderRanges(FIXTURE, v4, v6, "2027-03-04")).toThrow(RangesRefreshError);
    expect(() => renderRanges(FIXTURE, v4, v6, "2027-03-04")).toThrow(message);
  });

  it.each(["2027-3-4", "2027-13-01", "yesterday", ""])("refuses the date %j", (date) => {
    expect(() => renderRanges(FIXTURE, V4, V6, date)).toThrow(/is not YYYY-MM-DD/);
  });

  it("refuses module text without exactly one of each part it rewrites", () => {
    expect(() => renderRanges(FIXTURE.replace("CLOUDFLARE_IPV6_RANGES:", "OTHER:"), V4, V6, "2027-03-04")).toThrow("the module holds 0 CLOUDFLARE_IPV6_RANGES arrays");
    const twoDates = `${FIXTURE}export const CLOUDFLARE_RANGES_CHECKED_ON = "2020-01-02";\n`;
    expect(() => renderRanges(twoDates, V4, V6, "2027-03-04")).toThrow("the module holds 2 CLOUDFLARE_RANGES_CHECKED_ONs");
    expect(() => renderRanges(FIXTURE.replace("list last checked", "checked"), V4, V6, "2027-03-04")).toThrow(`holds 0 "list last checked" comments`);
  });
});

describe("listLines", () => {
  it("reads a published list with or without a final newline, LF or CRLF, skipping blank lines", () => {
    expect(listLines("173.245.48.0/20\n103.21.244.0/22")).toEqual(["173.245.48.0/20", "103.21.244.0/22"]);
    expect(listLines("173.245.48.0/20\r\n103.21.244.0/22\r\n\r\n")).toEqual(["173.245.48.0/20", "103.21.244.0/22"]);
    expect(listLines(" \n")).toEqual([]);
  });
});

describe("the refresh tool as a module", () => {
  it("fetches nothing when imported", () => {
    expect(fetchCalls).toEqual([]);
  });
});
