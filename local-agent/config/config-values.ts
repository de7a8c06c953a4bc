// Parsers for single configuration values that both the command line (config.ts) and the config
// file (config-file.ts) accept. Each takes a label (`--listen`, `/etc/edgesocks.json: listen`)
// so its error names where the bad value came from.

import { isIP } from "node:net";
import { readFileSync } from "node:fs";
import { DEFAULT_MAX_WINDOW_BYTES } from "../../worker/protocol/flow-control.ts";
import { DEFAULT_WINDOW_BYTES, MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, TUNNEL_PATH } from "../../worker/protocol/index.ts";

/** A bad flag, value, file or environment: the CLI prints the message as one line and exits 2. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(message: string) {
    // Messages quote keys and values from files, which may hold line breaks and other control
    // characters: escaped, so the message stays the one line the CLI promises (found by test/unit/fuzz).
    super(message.replace(/[\x00-\x1f\x7f]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`));
  }
}

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;

/** What the agent does when the edge answers that a destination is on Cloudflare's network (protocol v3). */
export const ON_CLOUDFLARE_MODES = ["refuse", "direct"] as const;
export type OnCloudflareMode = (typeof ON_CLOUDFLARE_MODES)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The numeric limits, each settable by a flag and in the config file's `limits`. */
export const LIMITS = {
  windowBytes: { flag: "--window-bytes", min: MIN_WINDOW_BYTES, max: MAX_WINDOW_BYTES, fallback: DEFAULT_WINDOW_BYTES },
  // Auto-tuning (protocol v4) grows a busy stream's windows up to this while the path needs it.
  maxWindowBytes: { flag: "--max-window-bytes", min: MIN_WINDOW_BYTES, max: MAX_WINDOW_BYTES, fallback: DEFAULT_MAX_WINDOW_BYTES },
  // What every stream's grown windows may hold in all, on top of their initial windows: a few
  // long-link transfers at their full window, while a laptop's memory is not at stake.
  windowBudgetBytes: { flag: "--window-budget-bytes", min: 1024 * 1024, max: 4 * 1024 * 1024 * 1024, fallback: 256 * 1024 * 1024 },
  handshakeTimeoutMs: { flag: "--handshake-timeout-ms", min: 100, max: 600_000, fallback: 10_000 },
  // Longer than the edge's own 10 s connect timeout, so a slow destination is reported by the
  // edge with its real cause rather than by this timer.
  openTimeoutMs: { flag: "--open-timeout-ms", min: 100, max: 600_000, fallback: 15_000 },
  pingIntervalMs: { flag: "--ping-interval-ms", min: 100, max: 600_000, fallback: 15_000 },
  maxConnections: { flag: "--max-connections", min: 1, max: 100_000, fallback: 1024 },
  // Warm tunnels kept open for the next connections: a browser opening a page asks for several
  // at once. Each spare is a Worker request, renewed every POOLED_MAX_IDLE_MS while unused
  // (4 spares: about 1,440 requests a day of the free plan's 100,000).
  poolSize: { flag: "--pool-size", min: 0, max: 64, fallback: 4 },
  // Streams one tunnel (one Worker invocation) carries one after another before it is retired.
  // The free plan's 10 ms of CPU per invocation decides it, not its 50 subrequests: one stream
  // costs the Worker ~1.6 ms of JavaScript and a tunnel ~0.14 ms (npm run bench:cost), so 4
  // streams take ~6.5 ms and leave ~3.5 MB of download for their bytes; 16 would need ~25 ms.
  // Subrequests at 4: at most 7 per stream (connect(), two DoH queries for a refused name, an
  // upstream, a relay, two NAT64 addresses), 28 of 50. Paid plans raise it. 1 turns reuse off.
  maxStreamsPerTunnel: { flag: "--max-streams-per-tunnel", min: 1, max: 10_000, fallback: 4 },
  // How long a SIGTERM or SIGINT lets open transfers finish before the rest are reset: inside
  // `docker stop`'s 10 s grace (and systemd's 90 s), so the reset, not a SIGKILL's quiet close
  // of every socket, is what a client whose transfer was cut sees.
  drainTimeoutMs: { flag: "--drain-timeout-ms", min: 0, max: 600_000, fallback: 5_000 },
} as const;
export type LimitName = keyof typeof LIMITS;
export type Limits = Record<LimitName, number>;
export const LIMIT_NAMES = Object.keys(LIMITS) as LimitName[];

/** The tunnel URL for an edge given as http(s):// or ws(s)://, with /tunnel appended to its path. */
/** One edge: the tunnel URL the agent dials and the URL as the user gave it, for messages. */
export type EdgeTarget = { tunnelUrl: string; edgeLabel: string };

/** An edge URL checked and turned into its tunnel URL (https -> wss, base path + /tunnel). */
export function parseEdgeUrl(text: string, label = "--edge"): EdgeTarget {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${label} "${text}" is not a URL; expected https://NAME.workers.dev or http://127.0.0.1:8787`);
  }
  const schemes: Record<string, string> = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" };
  const wsScheme = schemes[url.protocol];
  if (!wsScheme) throw new ConfigError(`${label} must be an http, https, ws or wss URL, not ${url.protocol}//`);
  if (url.username || url.password) throw new ConfigError(`${label} must not carry credentials; the token comes from EDGESOCKS_TOKEN or --token-file`);
  if (url.search || url.hash) throw new ConfigError(`${label} must not carry a query or fragment`);
  const edgeLabel = url.toString().replace(/\/$/, "");
  const basePath = url.pathname.replace(/\/+$/, "");
  const path = basePath.endsWith(TUNNEL_PATH) ? basePath : `${basePath}${TUNNEL_PATH}`;
  return { tunnelUrl: `${wsScheme}//${url.host}${path}`, edgeLabel };
}

/** The edges as given, refusing one named twice: two pools against one Worker would be one edge counted twice. */
export function distinctEdges(edges: EdgeTarget[], label: string): EdgeTarget[] {
  const seen = new Set<string>();
  for (const edge of edges) {
    if (seen.has(edge.tunnelUrl)) throw new ConfigError(`${label}: ${edge.edgeLabel} is named twice`);
    seen.add(edge.tunnelUrl);
  }
  return edges;
}

/**
 * HOST:PORT or [IPv6]:PORT. Any host parses; whether a non-loopback one may be used depends on
 * the users, so config.ts checks that with isLoopbackHost once they are known.
 */
export function parseListen(text: string, label = "--listen"): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!match) throw new ConfigError(`${label} "${text}" is not HOST:PORT (IPv6 as [::1]:1080)`);
  const host = match[1] ?? match[2] ?? "";
  const port = Number(match[3]);
  if (port > 65535) throw new ConfigError(`${label} port ${port} is outside 0..65535`);
  if (match[1] !== undefined && isIP(host) !== 6) throw new ConfigError(`${label} "${text}": only an IPv6 address goes in brackets`);
  return { host, port };
}

/** True for 127.0.0.0/8, ::1 (in any spelling) and localhost: hosts only this machine reaches. */
export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || /^(0{0,4}:){7}0{0,3}1$/.test(host);
  return false;
}

/** A limit's value from decimal text (a flag) or a JSON number, checked against its range. */
export function parseLimit(name: LimitName, value: string | number, label: string): number {
  const { min, max } = LIMITS[name];
  const number = Number(value);
  const wellFormed = typeof value === "number" || /^\d+$/.test(value);
  if (!wellFormed || !Number.isSafeInteger(number) || number < min || number > max) {
    throw new ConfigError(`${label} must be an integer from ${min} to ${max}, not ${typeof value === "number" ? value : `"${value}"`}`);
  }
  return number;
}

/** A file's text; a ConfigError naming `label` and the errno when it cannot be read. */
export function readText(path: string, label: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(`${label} cannot be read (${code})`);
  }
}
