// What `edgesocks deploy` reads in wrangler's output. Pure: text in, a value out. The formats are
// wrangler's own (node_modules/wrangler/wrangler-dist/cli.js, 4.164.0): `whoami` logs "You are
// not authenticated. Please run `wrangler login`." and exits 0; `deploy` logs "Deployed NAME
// triggers (0.45 sec)" and then each target on a line of its own, indented, with https:// added
// to workers.dev targets only (custom domains and routes are printed without a scheme);
// wrangler 2 said "Published NAME (1.23 sec)" there. Errors are "✘ [ERROR] summary" with the
// details on the following indented lines.

/** Wrangler's worker names: lower-case letters, digits and dashes (a workers.dev host label). */
export const WORKER_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** Longest wrangler message carried into one of our lines. */
const MAX_MESSAGE_CHARS = 300;

/** `text` without terminal colour codes and carriage returns. */
export function plainText(text: string): string {
  return text.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, "").replace(/\r/g, "");
}

/** True when `wrangler whoami` printed that no one is logged in. */
export function saysNotLoggedIn(whoamiOutput: string): boolean {
  return /not authenticated|not logged in/i.test(plainText(whoamiOutput));
}

/**
 * The Worker's URL from `wrangler deploy`'s output: the first http(s) URL among the targets
 * under "Deployed NAME triggers" (a workers.dev one first), else any workers.dev URL in the output.
 */
export function deployedUrl(deployOutput: string): string | undefined {
  const lines = plainText(deployOutput).split("\n");
  const targets: string[] = [];
  for (let index = 0; index < lines.length; index++) {
    if (!/^\s*(?:Deployed|Published)\s+\S+/.test(lines[index] ?? "")) continue;
    for (let next = index + 1; next < lines.length; next++) {
      const line = lines[next] ?? "";
      if (!/^\s+\S/.test(line)) break;
      const url = /^\s+(https?:\/\/[^\s]+)/.exec(line)?.[1];
      if (url !== undefined) targets.push(url.replace(/\/$/, ""));
    }
  }
  const anywhere = /https:\/\/[a-z0-9.-]+\.workers\.dev\b/i.exec(lines.join("\n"))?.[0];
  return targets.find((url) => /\.workers\.dev$/i.test(url)) ?? targets[0] ?? anywhere;
}

/** The one line that says why a wrangler command failed: its [ERROR] line and first detail, else its last line. */
export function wranglerFailure(output: string): string {
  const lines = plainText(output).split("\n");
  const errorAt = lines.findIndex((line) => /\[ERROR\]/.test(line));
  let message: string;
  if (errorAt >= 0) {
    message = (lines[errorAt] ?? "").replace(/^.*?\[ERROR\]\s*/, "");
    const detail = lines.slice(errorAt + 1).find((line) => line.trim() !== "");
    if (detail !== undefined && /^\s/.test(detail) && !/\[\w+\]/.test(detail)) message = `${message.replace(/[.:]$/, "")}: ${detail.trim()}`;
  } else {
    message = lines.filter((line) => line.trim() !== "").at(-1) ?? "";
  }
  message = message.replace(/\s+/g, " ").trim();
  return message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message;
}

/** The top-level `name` of a wrangler.toml (before any [table]), or undefined. */
export function workerNameFromToml(text: string): string | undefined {
  for (const line of text.split("\n")) {
    if (/^\s*\[/.test(line)) return undefined;
    const match = /^\s*name\s*=\s*(?:"([^"]*)"|'([^']*)')/.exec(line);
    if (match) return match[1] ?? match[2];
  }
  return undefined;
}
