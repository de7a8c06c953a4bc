// The agent's command line, config file and environment, parsed and validated once into one AgentConfig.

import { statSync } from "node:fs";
import { parseArgs } from "node:util";
import { argvProblem } from "./argv-errors.ts";
import { parseConfigFile, type FileSettings } from "./config-file.ts";
import { defaultConfigPath, existingDefaultConfig } from "./default-path.ts";
import { ConfigError, LIMITS, LIMIT_NAMES, LOG_LEVELS, ON_CLOUDFLARE_MODES, distinctEdges, isLoopbackHost, parseEdgeUrl, parseLimit, parseListen, readText, type EdgeTarget, type Limits, type LogLevel, type OnCloudflareMode } from "./config-values.ts";
import { BYPASS_MODES, RuleError, effectiveRules, parseRuleText, type BypassMode, type RouteRule } from "./routing.ts";
import { parseUserFlag, readUsersFile, resolveUsers } from "./users-config.ts";
import type { Users } from "./users.ts";
import { MAX_WINDOW_BYTES, MIN_TOKEN_LENGTH, MIN_WINDOW_BYTES } from "../../worker/protocol/index.ts";

export { ConfigError, LOG_LEVELS, parseEdgeUrl, parseListen, type EdgeTarget, type LogLevel };

export type AgentConfig = {
  listenHost: string;
  listenPort: number;
  /** Every configured edge, in the order given (--edge repeated, or the config file's list). */
  edges: readonly EdgeTarget[];
  /** ws:// or wss:// URL of the first edge's tunnel endpoint. */
  tunnelUrl: string;
  /** The first edge as the user gave it, for messages (never carries the token). */
  edgeLabel: string;
  token: string;
  /** What the agent may hold of the edge's unsent download bytes, per stream, before auto-tuning grows it. */
  windowBytes: number;
  /** The most auto-tuning grows a stream direction's window to (v4 edges). */
  maxWindowBytes: number;
  /** What grown windows may claim in all, over every stream of this agent. */
  windowBudgetBytes: number;
  /** Time a client has to finish the SOCKS greeting and request. */
  handshakeTimeoutMs: number;
  /** Time the edge has to answer an OPEN before the client hears 0x06. */
  openTimeoutMs: number;
  /** Interval of WebSocket pings; a tunnel that misses one pong is reset. */
  pingIntervalMs: number;
  /** Client connections served at once; more are refused at accept. */
  maxConnections: number;
  /** Time open transfers have to finish after a SIGTERM or SIGINT before the rest are reset. */
  drainTimeoutMs: number;
  logLevel: LogLevel;
  /** Which destinations go direct by default; kept to describe the routing (PAC file, logs). */
  bypass: BypassMode;
  /** Routing rules in force, in order: --rule flags, the config file's rules, then those `bypass` adds. */
  rules: RouteRule[];
  /** Users clients must authenticate as; empty: no authentication, and loopback only. */
  users: Users;
  /** Tunnels opened ahead of need and kept ready; 0 opens every tunnel when its client asks. */
  poolSize: number;
  /** Streams a tunnel carries one after another before it is closed; 1: one stream per tunnel. */
  maxStreamsPerTunnel: number;
  /**
   * Answer the client's request at once and send its first bytes with the destination, rather
   * than after the edge has reached it; a failed open then resets the client.
   */
  zeroRtt: boolean;
  /**
   * What to do when the edge answers that a destination is on Cloudflare's network and no
   * fallback at the edge applies: refuse (SOCKS5 0x02), or open it directly from this machine.
   */
  onCloudflare: OnCloudflareMode;
};

/** `warnings`: one line each for what works but should be fixed (a token file others can read). */
export type AgentCommand = { kind: "run"; config: AgentConfig; warnings: string[] } | { kind: "help" } | { kind: "version" };

export const DEFAULT_LISTEN = "127.0.0.1:1080";
export const DEFAULTS = {
  handshakeTimeoutMs: LIMITS.handshakeTimeoutMs.fallback,
  openTimeoutMs: LIMITS.openTimeoutMs.fallback,
  pingIntervalMs: LIMITS.pingIntervalMs.fallback,
  maxConnections: LIMITS.maxConnections.fallback,
  poolSize: LIMITS.poolSize.fallback,
  maxStreamsPerTunnel: LIMITS.maxStreamsPerTunnel.fallback,
  drainTimeoutMs: LIMITS.drainTimeoutMs.fallback,
  logLevel: "info" as LogLevel,
  bypass: "private" as BypassMode,
};

export const USAGE = `Usage: edgesocks --edge URL [options]

Runs a SOCKS5, SOCKS4 and HTTP proxy on this machine whose connections leave from a Cloudflare
Worker. The token is read from --token-file, the config file's tokenFile, or the environment
variable EDGESOCKS_TOKEN, in that order; it is never written in a flag or the config file.
Before it reports ready the agent checks the edge and the token (GET /check): a token the edge
refuses exits with status 1; an edge that does not answer is a warning.

Options:
  --edge URL                 the Worker: https://NAME.workers.dev, or http://127.0.0.1:8787 for
                             a local edge; ws:// and wss:// are accepted too (required, here or
                             in --config); repeatable: several edges share the connections
  --listen HOST:PORT         where to serve (default ${DEFAULT_LISTEN}); a host other than
                             loopback (0.0.0.0, [::], a LAN address) needs users
  --config PATH              read settings from a JSON file (docs/edgesocks.example.json);
                             flags override its values; its relative paths are relative to it.
                             With neither --config nor --edge: ~/.config/edgesocks/config.json
                             ($XDG_CONFIG_HOME/edgesocks), if it exists (edgesocks deploy writes it)
  --user NAME:PASS           a user clients must authenticate as (SOCKS5 username/password,
                             HTTP Proxy-Authorization); repeatable. --user NAME alone reads the
                             password from EDGESOCKS_PASSWORD_NAME (upper-cased, other
                             characters as _), which keeps it out of the process list.
                             With users, every client must authenticate
  --users-file PATH          users from a file of name:password lines (# comments); added to
                             --user and the config file's users; a name given twice is an error
  --token-file PATH          read the token from PATH instead of EDGESOCKS_TOKEN
  --window-bytes N           receive window per stream to start with, ${MIN_WINDOW_BYTES}..${MAX_WINDOW_BYTES} (default ${LIMITS.windowBytes.fallback})
  --max-window-bytes N       the most a busy stream's windows grow to on a long link (edges of
                             protocol v4), ${MIN_WINDOW_BYTES}..${MAX_WINDOW_BYTES} (default ${LIMITS.maxWindowBytes.fallback})
  --window-budget-bytes N    what grown windows may hold in all, over every stream
                             (default ${LIMITS.windowBudgetBytes.fallback})
  --handshake-timeout-ms N   time from accept a client has to finish its handshake: SOCKS,
                             or its first HTTP request head (default ${DEFAULTS.handshakeTimeoutMs})
  --open-timeout-ms N        time the edge has to open a connection (default ${DEFAULTS.openTimeoutMs})
  --ping-interval-ms N       WebSocket keepalive interval (default ${DEFAULTS.pingIntervalMs})
  --max-connections N        client connections served at once (default ${DEFAULTS.maxConnections})
  --pool-size N              tunnels kept open and ready for the next connections, so a new
                             connection skips the TCP, TLS and WebSocket handshakes to the
                             edge; 0 turns the pool off (default ${DEFAULTS.poolSize})
  --max-streams-per-tunnel N streams one tunnel (one Worker request) carries one after another
                             before it is retired, inside the free plan's per-request limits;
                             1 gives every connection a tunnel of its own (default ${DEFAULTS.maxStreamsPerTunnel})
  --drain-timeout-ms N       on SIGTERM or SIGINT (Ctrl-C), stop accepting and give open
                             transfers this long to finish, then reset the rest; a second
                             signal resets them at once. Exit status 0 when every transfer
                             finished, 3 when some were reset (default ${DEFAULTS.drainTimeoutMs})
  --zero-rtt                 answer each client at once and send its first bytes along with
                             the destination: saves one edge round trip per connection, but a
                             destination that cannot be reached resets the connection instead
                             of getting its proper SOCKS or HTTP error (default off)
  --on-cloudflare MODE       what to do with a site hosted on Cloudflare, which a Worker cannot
                             reach, when the Worker has no fallback for it (README: "Sites
                             hosted on Cloudflare"): refuse (default: SOCKS5 0x02, HTTP 502
                             naming the options) or direct (open it from this machine, so the
                             site sees this machine's address)
  --log-level LEVEL          error, warn, info or debug (default ${DEFAULTS.logLevel})
  --rule ROUTE:MATCHER       route edge, direct or block for destinations matching suffix=NAME,
                             host=NAME|IP, cidr=ADDR/BITS, port=N|N-M (comma-joined, all must
                             match); repeatable; e.g. direct:suffix=corp.example. Rules are
                             tried in order, first match wins: --rule flags, then the config
                             file's rules, then those --bypass adds; no match: edge
  --bypass MODE              private (default): loopback, link-local and private networks go
                             direct; none: every destination goes through the edge
  -h, --help                 show this help
  -v, --version              show the version
`;

/** Every option the command line takes (`--help` documents each one; a test holds it to that). */
export const AGENT_OPTIONS = {
  edge: { type: "string", multiple: true },
  listen: { type: "string" },
  config: { type: "string" },
  user: { type: "string", multiple: true },
  "users-file": { type: "string" },
  "token-file": { type: "string" },
  "window-bytes": { type: "string" },
  "max-window-bytes": { type: "string" },
  "window-budget-bytes": { type: "string" },
  "handshake-timeout-ms": { type: "string" },
  "open-timeout-ms": { type: "string" },
  "ping-interval-ms": { type: "string" },
  "max-connections": { type: "string" },
  "pool-size": { type: "string" },
  "max-streams-per-tunnel": { type: "string" },
  "drain-timeout-ms": { type: "string" },
  "log-level": { type: "string" },
  rule: { type: "string", multiple: true },
  bypass: { type: "string" },
  "zero-rtt": { type: "boolean" },
  "on-cloudflare": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "v" },
} as const;

const NO_FILE: FileSettings = { users: [], rules: [], limits: {} };

/** Parses argv, the --config file and env into a command; throws ConfigError with a one-line message. */
export function parseAgentCommand(argv: string[], env: Record<string, string | undefined>): AgentCommand {
  // A stray argument is never quoted after --user: `--user alice hunter2` makes one of a password.
  const problem = argvProblem(argv, { options: AGENT_OPTIONS, usage: USAGE, helpCommand: "edgesocks --help", secretFollowers: ["user"] });
  if (problem !== undefined) throw new ConfigError(problem);
  let values;
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: AGENT_OPTIONS }));
  } catch (error) {
    throw new ConfigError(error instanceof Error ? error.message.split("\n")[0] ?? "bad arguments" : "bad arguments");
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };

  // The default file (what `edgesocks deploy` writes) only when the command line names no edge of its own.
  const configPath = values.config ?? (values.edge === undefined ? existingDefaultConfig(env) : undefined);
  const file = configPath === undefined ? NO_FILE : parseConfigFile(readText(configPath, `--config ${configPath}`), configPath);
  const edges = values.edge !== undefined ? distinctEdges(values.edge.map((text) => parseEdgeUrl(text)), "--edge") : file.edges;
  const edge = edges?.[0];
  if (edges === undefined || edge === undefined) throw new ConfigError(`--edge URL is required, or run \`edgesocks deploy\`, which deploys the Worker and writes ${defaultConfigPath(env)} (for a local edge: --edge http://127.0.0.1:8787)`);
  const listen = values.listen !== undefined ? parseListen(values.listen) : (file.listen ?? parseListen(DEFAULT_LISTEN));
  const logLevel = values["log-level"] !== undefined ? oneOf("--log-level", values["log-level"], LOG_LEVELS) : (file.logLevel ?? DEFAULTS.logLevel);
  const bypass = values.bypass !== undefined ? oneOf("--bypass", values.bypass, BYPASS_MODES) : (file.bypass ?? DEFAULTS.bypass);
  let flagRules: RouteRule[];
  try {
    flagRules = (values.rule ?? []).map(parseRuleText);
  } catch (error) {
    if (error instanceof RuleError) throw new ConfigError(`--rule ${error.message.replace(/^rule /, "")}`);
    throw error;
  }
  const flagUsers = (values.user ?? []).map(parseUserFlag);
  if (values["users-file"] !== undefined) flagUsers.push(...readUsersFile(values["users-file"]));
  const users = resolveUsers([...flagUsers, ...file.users], env);
  if (users.size === 0 && !isLoopbackHost(listen.host)) {
    throw new ConfigError(
      `refusing to listen on ${listen.host}: no users are configured, so anyone who can reach it could use the proxy; add users (--user NAME:PASS, --users-file PATH or "users" in --config) or serve loopback only (127.0.0.1, ::1, localhost)`,
    );
  }
  const limits = {} as Limits;
  for (const name of LIMIT_NAMES) {
    const text = values[LIMITS[name].flag.slice(2) as keyof typeof values];
    limits[name] = typeof text === "string" ? parseLimit(name, text, LIMITS[name].flag) : (file.limits[name] ?? LIMITS[name].fallback);
  }
  if (limits.maxWindowBytes < limits.windowBytes) {
    // The default ceiling follows a larger starting window; one the user set must not be below it.
    if (values["max-window-bytes"] !== undefined || file.limits.maxWindowBytes !== undefined) {
      throw new ConfigError(`--max-window-bytes (${limits.maxWindowBytes}) must not be smaller than --window-bytes (${limits.windowBytes})`);
    }
    limits.maxWindowBytes = limits.windowBytes;
  }
  const tokenSource =
    values["token-file"] !== undefined
      ? { path: values["token-file"], label: `--token-file ${values["token-file"]}` }
      : file.tokenFile !== undefined
        ? { path: file.tokenFile, label: `${configPath}: tokenFile ${file.tokenFile}` }
        : undefined;
  const warnings: string[] = [];
  return {
    kind: "run",
    warnings,
    config: {
      listenHost: listen.host,
      listenPort: listen.port,
      edges,
      tunnelUrl: edge.tunnelUrl,
      edgeLabel: edge.edgeLabel,
      token: readToken(tokenSource, env, warnings),
      ...limits,
      logLevel,
      bypass,
      rules: effectiveRules([...flagRules, ...file.rules], bypass),
      users,
      zeroRtt: values["zero-rtt"] ?? file.zeroRtt ?? false,
      onCloudflare: values["on-cloudflare"] !== undefined ? oneOf("--on-cloudflare", values["on-cloudflare"], ON_CLOUDFLARE_MODES) : (file.onCloudflare ?? "refuse"),
    },
  };
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) throw new ConfigError(`${flag} must be one of ${allowed.join(", ")}, not "${value}"`);
  return value as T;
}

function readToken(source: { path: string; label: string } | undefined, env: Record<string, string | undefined>, warnings: string[]): string {
  let token: string;
  if (source !== undefined) {
    token = readText(source.path, source.label).trim();
    if (token === "") throw new ConfigError(`${source.label} is empty`);
    const openWarning = openToOthers(source.path, source.label);
    if (openWarning !== undefined) warnings.push(openWarning);
  } else {
    token = (env.EDGESOCKS_TOKEN ?? "").trim();
    if (token === "") throw new ConfigError("no token: set EDGESOCKS_TOKEN in the environment or pass --token-file PATH");
  }
  if (/\s|,/.test(token)) throw new ConfigError("the token must not contain white space or commas");
  if (token.length < MIN_TOKEN_LENGTH) throw new ConfigError(`the token is shorter than ${MIN_TOKEN_LENGTH} characters; the edge would refuse it`);
  return token;
}

/** A warning when the file at `path` is open to users other than its owner (POSIX modes only). */
function openToOthers(path: string, label: string): string | undefined {
  if (process.platform === "win32") return undefined;
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return undefined;
  }
  if ((mode & 0o077) === 0) return undefined;
  const quoted = /^[\w@%+=:,./-]+$/.test(path) ? path : `'${path.replaceAll("'", "'\\''")}'`;
  return `${label} is open to other users (mode ${mode.toString(8).padStart(4, "0")}): chmod 600 ${quoted}`;
}
