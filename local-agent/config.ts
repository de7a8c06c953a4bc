// The agent's command line and environment, parsed and validated once into one AgentConfig.

import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { parseArgs } from "node:util";
import type { Users } from "./users.ts";
import { BYPASS_MODES, RuleError, effectiveRules, parseRuleText, type BypassMode, type RouteRule } from "./routing.ts";
import { DEFAULT_WINDOW_BYTES, MAX_WINDOW_BYTES, MIN_TOKEN_LENGTH, MIN_WINDOW_BYTES, TUNNEL_PATH } from "../worker/protocol.ts";

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type AgentConfig = {
  listenHost: string;
  listenPort: number;
  /** ws:// or wss:// URL of the edge's tunnel endpoint. */
  tunnelUrl: string;
  /** The edge as the user gave it, for messages (never carries the token). */
  edgeLabel: string;
  token: string;
  /** What the agent may hold of the edge's unsent download bytes, per stream. */
  windowBytes: number;
  /** Time a client has to finish the SOCKS greeting and request. */
  handshakeTimeoutMs: number;
  /** Time the edge has to answer an OPEN before the client hears 0x06. */
  openTimeoutMs: number;
  /** Interval of WebSocket pings; a tunnel that misses one pong is reset. */
  pingIntervalMs: number;
  /** Client connections served at once; more are refused at accept. */
  maxConnections: number;
  logLevel: LogLevel;
  /** Which destinations go direct by default; kept to describe the routing (PAC file, logs). */
  bypass: BypassMode;
  /** Routing rules in force, in order: the user's, then those `bypass` adds. */
  rules: RouteRule[];
  /** Users clients must authenticate as; empty: no authentication, and loopback only. */
  users: Users;
};

export type AgentCommand = { kind: "run"; config: AgentConfig } | { kind: "help" } | { kind: "version" };

/** A bad flag, value or environment: the CLI prints the message as one line and exits 2. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export const DEFAULT_LISTEN = "127.0.0.1:1080";
export const DEFAULTS = {
  handshakeTimeoutMs: 10_000,
  // Longer than the edge's own 10 s connect timeout, so a slow destination is reported by the
  // edge with its real cause rather than by this timer.
  openTimeoutMs: 15_000,
  pingIntervalMs: 15_000,
  maxConnections: 1024,
  logLevel: "info" as LogLevel,
  bypass: "private" as BypassMode,
};

export const USAGE = `Usage: edgesocks --edge URL [options]

Runs a SOCKS5 proxy on this machine whose connections leave from a Cloudflare Worker.
The token is read from the environment variable EDGESOCKS_TOKEN, or from --token-file.

Options:
  --edge URL                 the Worker: https://NAME.workers.dev, or http://127.0.0.1:8787 for
                             a local edge; ws:// and wss:// are accepted too (required)
  --listen HOST:PORT         where to serve SOCKS5 (default ${DEFAULT_LISTEN}); loopback only
  --token-file PATH          read the token from PATH instead of EDGESOCKS_TOKEN
  --window-bytes N           receive window per stream, ${MIN_WINDOW_BYTES}..${MAX_WINDOW_BYTES} (default ${DEFAULT_WINDOW_BYTES})
  --handshake-timeout-ms N   time a client has for the SOCKS handshake (default ${DEFAULTS.handshakeTimeoutMs})
  --open-timeout-ms N        time the edge has to open a connection (default ${DEFAULTS.openTimeoutMs})
  --ping-interval-ms N       WebSocket keepalive interval (default ${DEFAULTS.pingIntervalMs})
  --max-connections N        client connections served at once (default ${DEFAULTS.maxConnections})
  --log-level LEVEL          error, warn, info or debug (default ${DEFAULTS.logLevel})
  --rule ROUTE:MATCHER       route edge, direct or block for destinations matching suffix=NAME,
                             host=NAME|IP, cidr=ADDR/BITS, port=N|N-M (comma-joined, all must
                             match); repeatable, first match wins; e.g. direct:suffix=corp.example
  --bypass MODE              private (default): loopback, link-local and private networks go
                             direct; none: every destination goes through the edge
  -h, --help                 show this help
  -v, --version              show the version
`;

/** Parses argv and env into a command; throws ConfigError with a one-line message. */
export function parseAgentCommand(argv: string[], env: Record<string, string | undefined>): AgentCommand {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        edge: { type: "string" },
        listen: { type: "string" },
        "token-file": { type: "string" },
        "window-bytes": { type: "string" },
        "handshake-timeout-ms": { type: "string" },
        "open-timeout-ms": { type: "string" },
        "ping-interval-ms": { type: "string" },
        "max-connections": { type: "string" },
        "log-level": { type: "string" },
        rule: { type: "string", multiple: true },
        bypass: { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "v" },
      },
    }));
  } catch (error) {
    throw new ConfigError(error instanceof Error ? error.message.split("\n")[0] ?? "bad arguments" : "bad arguments");
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };

  if (values.edge === undefined) throw new ConfigError("--edge URL is required (for a local edge: --edge http://127.0.0.1:8787)");
  const { tunnelUrl, edgeLabel } = parseEdgeUrl(values.edge);
  const { host: listenHost, port: listenPort } = parseListen(values.listen ?? DEFAULT_LISTEN);
  const logLevel = values["log-level"] ?? DEFAULTS.logLevel;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, not "${logLevel}"`);
  }
  const bypass = values.bypass ?? DEFAULTS.bypass;
  if (!(BYPASS_MODES as readonly string[]).includes(bypass)) {
    throw new ConfigError(`--bypass must be one of ${BYPASS_MODES.join(", ")}, not "${bypass}"`);
  }
  let userRules: RouteRule[];
  try {
    userRules = (values.rule ?? []).map(parseRuleText);
  } catch (error) {
    if (error instanceof RuleError) throw new ConfigError(`--rule ${error.message.replace(/^rule /, "")}`);
    throw error;
  }
  return {
    kind: "run",
    config: {
      listenHost,
      listenPort,
      tunnelUrl,
      edgeLabel,
      token: readToken(values["token-file"], env),
      windowBytes: integerOption("--window-bytes", values["window-bytes"], DEFAULT_WINDOW_BYTES, MIN_WINDOW_BYTES, MAX_WINDOW_BYTES),
      handshakeTimeoutMs: integerOption("--handshake-timeout-ms", values["handshake-timeout-ms"], DEFAULTS.handshakeTimeoutMs, 100, 600_000),
      openTimeoutMs: integerOption("--open-timeout-ms", values["open-timeout-ms"], DEFAULTS.openTimeoutMs, 100, 600_000),
      pingIntervalMs: integerOption("--ping-interval-ms", values["ping-interval-ms"], DEFAULTS.pingIntervalMs, 100, 600_000),
      maxConnections: integerOption("--max-connections", values["max-connections"], DEFAULTS.maxConnections, 1, 100_000),
      logLevel: logLevel as LogLevel,
      bypass: bypass as BypassMode,
      rules: effectiveRules(userRules, bypass as BypassMode),
      users: new Map(),
    },
  };
}

/** The tunnel URL for an edge given as http(s):// or ws(s)://, with /tunnel appended to its path. */
export function parseEdgeUrl(text: string): { tunnelUrl: string; edgeLabel: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`--edge "${text}" is not a URL; expected https://NAME.workers.dev or http://127.0.0.1:8787`);
  }
  const schemes: Record<string, string> = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" };
  const wsScheme = schemes[url.protocol];
  if (!wsScheme) throw new ConfigError(`--edge must be an http, https, ws or wss URL, not ${url.protocol}//`);
  if (url.username || url.password) throw new ConfigError("--edge must not carry credentials; the token comes from EDGESOCKS_TOKEN or --token-file");
  if (url.search || url.hash) throw new ConfigError("--edge must not carry a query or fragment");
  const edgeLabel = url.toString().replace(/\/$/, "");
  const basePath = url.pathname.replace(/\/+$/, "");
  const path = basePath.endsWith(TUNNEL_PATH) ? basePath : `${basePath}${TUNNEL_PATH}`;
  return { tunnelUrl: `${wsScheme}//${url.host}${path}`, edgeLabel };
}

/** HOST:PORT or [IPv6]:PORT; only loopback hosts, since the agent has no client authentication yet. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!match) throw new ConfigError(`--listen "${text}" is not HOST:PORT (IPv6 as [::1]:1080)`);
  const host = match[1] ?? match[2] ?? "";
  const port = Number(match[3]);
  if (port > 65535) throw new ConfigError(`--listen port ${port} is outside 0..65535`);
  if (!isLoopbackHost(host)) {
    throw new ConfigError(
      `refusing to listen on ${host}: edgesocks has no client authentication yet, so it serves loopback only (127.0.0.0/8, ::1, localhost)`,
    );
  }
  return { host, port };
}

function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || /^(0{0,4}:){7}0{0,3}1$/.test(host);
  return false;
}

function readToken(tokenFile: string | undefined, env: Record<string, string | undefined>): string {
  let token: string;
  if (tokenFile !== undefined) {
    try {
      token = readFileSync(tokenFile, "utf8").trim();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
      throw new ConfigError(`--token-file ${tokenFile} cannot be read (${code})`);
    }
    if (token === "") throw new ConfigError(`--token-file ${tokenFile} is empty`);
  } else {
    token = (env.EDGESOCKS_TOKEN ?? "").trim();
    if (token === "") throw new ConfigError("no token: set EDGESOCKS_TOKEN in the environment or pass --token-file PATH");
  }
  if (/\s|,/.test(token)) throw new ConfigError("the token must not contain white space or commas");
  if (token.length < MIN_TOKEN_LENGTH) throw new ConfigError(`the token is shorter than ${MIN_TOKEN_LENGTH} characters; the edge would refuse it`);
  return token;
}

function integerOption(flag: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(`${flag} must be an integer from ${min} to ${max}, not "${text}"`);
  }
  return value;
}
