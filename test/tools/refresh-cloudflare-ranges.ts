// Refreshes worker/dial/cloudflare-ranges.ts from Cloudflare's published lists
// (https://www.cloudflare.com/ips-v4 and https://www.cloudflare.com/ips-v6). Run by a developer
// with `npm run ranges:refresh`, never by the tests: it needs the network.
//
// It validates every line before writing anything, refuses an empty list, and rewrites only
// the two arrays and the "last checked" date; the rest of the module stays as written.
// renderRanges is the pure part, unit-tested in test/unit/refresh-cloudflare-ranges.test.ts.

import { readFile, writeFile } from "node:fs/promises";
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { CidrError, parseCidr } from "../../worker/dial/cidr.ts";

export const IPV4_LIST_URL = "https://www.cloudflare.com/ips-v4";
export const IPV6_LIST_URL = "https://www.cloudflare.com/ips-v6";
/** How long each list may take to arrive. */
const FETCH_TIMEOUT_MS = 15_000;
const MODULE_PATH = fileURLToPath(new URL("../../worker/dial/cloudflare-ranges.ts", import.meta.url));

/** A list or module text the tool will not write from; the message says which line and why. */
export class RangesRefreshError extends Error {
  override readonly name = "RangesRefreshError";
}

const V4_ARRAY = /(export const CLOUDFLARE_IPV4_RANGES: readonly string\[\] = \[)[^\]]*(\];)/g;
const V6_ARRAY = /(export const CLOUDFLARE_IPV6_RANGES: readonly string\[\] = \[)[^\]]*(\];)/g;
const DATE_CONSTANT = /(export const CLOUDFLARE_RANGES_CHECKED_ON = ")\d{4}-\d{2}-\d{2}(";)/g;
/** The header comment's date, and how the list was obtained (the first copy was not fetched). */
const DATE_COMMENT = /list last checked \d{4}-\d{2}-\d{2}(?: from the copy in this file's history| from those two URLs)/g;

/** The non-empty lines of a published list, trimmed (the lists end with or without a newline, LF or CRLF). */
export function listLines(body: string): string[] {
  return body
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
}

/**
 * `moduleText` (the text of worker/dial/cloudflare-ranges.ts) with its IPv4 and IPv6 arrays
 * replaced by `v4Lines` and `v6Lines` and its date by `date` (YYYY-MM-DD). Throws
 * RangesRefreshError, so nothing is written, when a list is empty, a line is not ADDRESS/BITS
 * of its list's family (checked with parseCidr), the date is malformed, or the module does not
 * hold exactly one of each part it rewrites.
 */
export function renderRanges(moduleText: string, v4Lines: readonly string[], v6Lines: readonly string[], date: string): string {
  checkList(v4Lines, 4, IPV4_LIST_URL);
  checkList(v6Lines, 16, IPV6_LIST_URL);
  if (!/^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/.test(date)) throw new RangesRefreshError(`date "${date}" is not YYYY-MM-DD`);
  let text = moduleText;
  text = replaceOnce(text, V4_ARRAY, "CLOUDFLARE_IPV4_RANGES array", (_match, open: string, close: string) => `${open}${arrayBody(v4Lines)}${close}`);
  text = replaceOnce(text, V6_ARRAY, "CLOUDFLARE_IPV6_RANGES array", (_match, open: string, close: string) => `${open}${arrayBody(v6Lines)}${close}`);
  text = replaceOnce(text, DATE_CONSTANT, "CLOUDFLARE_RANGES_CHECKED_ON", (_match, open: string, close: string) => `${open}${date}${close}`);
  text = replaceOnce(text, DATE_COMMENT, `"list last checked" comment`, () => `list last checked ${date} from those two URLs`);
  return text;
}

function checkList(lines: readonly string[], addressBytes: 4 | 16, source: string): void {
  if (lines.length === 0) throw new RangesRefreshError(`${source} gave no ranges; refusing to write an empty list`);
  const family = addressBytes === 4 ? "IPv4" : "IPv6";
  lines.forEach((line, index) => {
    const where = `${source} line ${index + 1} "${line}"`;
    if (!line.includes("/")) throw new RangesRefreshError(`${where} has no /BITS`);
    let bytes: number[];
    try {
      bytes = parseCidr(line).bytes;
    } catch (error) {
      if (error instanceof CidrError) throw new RangesRefreshError(`${where}: ${error.message}`);
      throw error;
    }
    // An IPv4-mapped block parses to 4 bytes but is written as IPv6: neither list has one.
    if (bytes.length !== addressBytes || (addressBytes === 4) === line.includes(":")) throw new RangesRefreshError(`${where} is not an ${family} block`);
  });
}

function arrayBody(lines: readonly string[]): string {
  return `\n${lines.map((line) => `  ${JSON.stringify(line)},\n`).join("")}`;
}

function replaceOnce(text: string, pattern: RegExp, what: string, replacement: (match: string, ...groups: string[]) => string): string {
  const count = [...text.matchAll(pattern)].length;
  if (count !== 1) throw new RangesRefreshError(`the module holds ${count} ${what}s; expected exactly one to rewrite`);
  return text.replace(pattern, replacement);
}

async function fetchList(url: string): Promise<string[]> {
  const response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!response.ok) throw new RangesRefreshError(`${url} answered ${response.status}`);
  return listLines(await response.text());
}

async function main(): Promise<void> {
  const [v4Lines, v6Lines] = await Promise.all([fetchList(IPV4_LIST_URL), fetchList(IPV6_LIST_URL)]);
  const before = await readFile(MODULE_PATH, "utf8");
  const date = new Date().toISOString().slice(0, 10);
  const after = renderRanges(before, v4Lines, v6Lines, date);
  await writeFile(MODULE_PATH, after);
  console.log(`${MODULE_PATH}: ${v4Lines.length} IPv4 and ${v6Lines.length} IPv6 ranges, checked on ${date}`);
  console.log("Review the change with git diff before committing it.");
}

// Run only as a script: the unit test imports renderRanges and must not reach the network.
function runAsScript(): boolean {
  const invokedPath = process.argv[1];
  if (invokedPath === undefined) return false;
  try {
    return realpathSync(invokedPath) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}
if (runAsScript()) {
  main().catch((error: unknown) => {
    console.error(error instanceof RangesRefreshError ? `refresh-cloudflare-ranges: ${error.message}` : error);
    process.exitCode = 1;
  });
}
