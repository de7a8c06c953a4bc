// The Worker's configuration, read once per request from its bindings into one typed object.

import { CidrError, parseCidrList, type Cidr } from "./dial/cidr.ts";
import { Nat64Error, parseNat64Prefix, type Nat64Prefix } from "./dial/nat64.ts";
import { RelayConfigError, parseRelayList, type CloudflareRelay } from "./dial/relay.ts";
import { UpstreamConfigError, parseUpstreamUrl, type UpstreamProxy } from "./dial/upstream-url.ts";
import { DEFAULT_MAX_WINDOW_BYTES } from "./protocol/flow-control.ts";
import { DEFAULT_WINDOW_BYTES, MAX_WINDOW_BYTES, MIN_TOKEN_LENGTH, MIN_WINDOW_BYTES, NEXT_OPEN_TIMEOUT_MS } from "./protocol/index.ts";

/** Bindings the Worker reads. EDGESOCKS_TOKEN is a secret; the rest are plain vars. */
export type EdgeEnv = {
  /** Comma-separated bearer tokens; any one of them opens a tunnel. */
  EDGESOCKS_TOKEN?: string;
  /** Receive window per stream for the upload direction (bytes): where auto-tuning starts. */
  EDGESOCKS_WINDOW_BYTES?: string;
  /** Largest window auto-tuning grows one stream direction to (bytes; protocol v4). */
  EDGESOCKS_MAX_WINDOW_BYTES?: string;
  /** What the windows of every stream an isolate serves may hold in all (bytes), inside the isolate's 128 MB. */
  EDGESOCKS_WINDOW_BUDGET_BYTES?: string;
  /** The DNS-over-HTTPS resolver (RFC 8484 POST) that answers the agent's DNS queries. */
  EDGESOCKS_DOH_URL?: string;
  /** Secret: socks5://[user:pass@]host:port or http://[user:pass@]host:port, the upstream proxy for Cloudflare-hosted destinations. */
  EDGESOCKS_UPSTREAM?: string;
  /** "cloudflare" (default): the upstream carries Cloudflare-hosted destinations only; "all": every destination. */
  EDGESOCKS_UPSTREAM_FOR?: string;
  /** Comma-separated host[:port] of TCP relays outside Cloudflare that forward to Cloudflare's anycast. */
  EDGESOCKS_CLOUDFLARE_RELAY?: string;
  /** An IPv6 /96 NAT64 prefix: Cloudflare-hosted IPv4 destinations are dialed as prefix + address. */
  EDGESOCKS_NAT64_PREFIX?: string;
  /** Dev and tests only, no use in production: CIDRs the local edge treats as Cloudflare's (worker/dial/emulation.ts). */
  EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS?: string;
  /** Dev and tests only: "1" serves GET /dev/counters (token required), the isolate's held bytes (worker/dev-counters.ts). */
  EDGESOCKS_DEV_COUNTERS?: string;
};

/** Which destinations the upstream proxy carries. */
export const UPSTREAM_FOR = ["cloudflare", "all"] as const;
export type UpstreamFor = (typeof UPSTREAM_FOR)[number];

export type EdgeConfig = {
  tokens: string[];
  /** What the edge may hold of the agent's unsent upload bytes, per stream, before auto-tuning grows it. */
  windowBytes: number;
  /** The most auto-tuning grows a stream direction's window to (v4 tunnels). */
  maxWindowBytes: number;
  /** The isolate's window budget: upload windows and download bytes in flight, every stream together. */
  windowBudgetBytes: number;
  /** How long connect() may take before the agent hears Timeout. */
  connectTimeoutMs: number;
  /** How long a fresh or idle tunnel may wait for an OPEN before it is closed. */
  openTimeoutMs: number;
  /** Size of each BYOB read from the destination socket (capped by the agent's credit). */
  readBytes: number;
  /** Where POST /dns sends each query: an http(s) DNS-over-HTTPS URL. */
  dohUrl: string;
  /** How long the resolver has to answer before the agent hears 502. */
  dohTimeoutMs: number;
  /** The upstream proxy, when EDGESOCKS_UPSTREAM is set. */
  upstream: UpstreamProxy | undefined;
  upstreamFor: UpstreamFor;
  /** Relays for Cloudflare-hosted destinations, tried in order. */
  cloudflareRelays: CloudflareRelay[];
  nat64Prefix: Nat64Prefix | undefined;
  /** Extra ranges the local edge refuses as production refuses Cloudflare's (empty in production). */
  emulatedCloudflareCidrs: Cidr[];
};

/**
 * Largest BYOB read from a destination (reads start at 16 KiB and grow while they come back
 * full: worker/tunnel/edge-stream.ts). workerd's default reader yields ~4 KiB chunks (~45 MB/s as one
 * message each); reads into 256 KiB-1 MiB buffers measured 250-390 MB/s on this machine. Much of
 * workerd's download cost is per message: 512 KiB reads cost 0.69x the CPU per GB of 256 KiB
 * ones (npm run bench:ab), while two reads still fit in the default 1 MiB window.
 */
export const DEFAULT_READ_BYTES = 512 * 1024;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/**
 * The isolate's window budget by default: half of the 128 MB an isolate has for every request it
 * serves, so a full budget still leaves room for the runtime and the rest of the Worker.
 */
export const DEFAULT_EDGE_WINDOW_BUDGET_BYTES = 64 * 1024 * 1024;
/** A budget above this could not be held by one isolate at all. */
const MAX_WINDOW_BUDGET_BYTES = 1024 * 1024 * 1024;
/** No OPEN within this of the upgrade, or of the previous stream's end: 4408 (the agent relies on it, protocol/constants.ts). */
export const DEFAULT_OPEN_TIMEOUT_MS = NEXT_OPEN_TIMEOUT_MS;
/** Cloudflare's own resolver: reached from a Worker without leaving Cloudflare's network. */
export const DEFAULT_DOH_URL = "https://cloudflare-dns.com/dns-query";
/** Stub resolvers retry after 1-5 s; an answer later than this is one the client no longer waits for. */
export const DEFAULT_DOH_TIMEOUT_MS = 5_000;

/** A configuration the Worker cannot serve with; the message names the binding to fix. */
export class EdgeConfigError extends Error {
  override readonly name = "EdgeConfigError";
}

/** Reads and validates the bindings; throws EdgeConfigError naming the binding at fault. */
export function loadEdgeConfig(env: EdgeEnv): EdgeConfig {
  const tokens = (env.EDGESOCKS_TOKEN ?? "")
    .split(",")
    .map((token) => token.trim())
    .filter((token) => token.length > 0);
  for (const [index, token] of tokens.entries()) {
    if (token.length < MIN_TOKEN_LENGTH) {
      throw new EdgeConfigError(`EDGESOCKS_TOKEN entry ${index + 1} is shorter than ${MIN_TOKEN_LENGTH} characters`);
    }
  }
  const windowBytes = byteCount(env.EDGESOCKS_WINDOW_BYTES, "EDGESOCKS_WINDOW_BYTES", DEFAULT_WINDOW_BYTES, MIN_WINDOW_BYTES, MAX_WINDOW_BYTES);
  const maxWindowBytes = byteCount(env.EDGESOCKS_MAX_WINDOW_BYTES, "EDGESOCKS_MAX_WINDOW_BYTES", Math.max(DEFAULT_MAX_WINDOW_BYTES, windowBytes), windowBytes, MAX_WINDOW_BYTES);
  const windowBudgetBytes = byteCount(env.EDGESOCKS_WINDOW_BUDGET_BYTES, "EDGESOCKS_WINDOW_BUDGET_BYTES", DEFAULT_EDGE_WINDOW_BUDGET_BYTES, MIN_WINDOW_BYTES, MAX_WINDOW_BUDGET_BYTES);
  const dohUrl = env.EDGESOCKS_DOH_URL === undefined || env.EDGESOCKS_DOH_URL === "" ? DEFAULT_DOH_URL : env.EDGESOCKS_DOH_URL;
  if (!isHttpUrl(dohUrl)) throw new EdgeConfigError("EDGESOCKS_DOH_URL must be an http:// or https:// URL");
  const upstreamFor = (env.EDGESOCKS_UPSTREAM_FOR ?? "").trim() || "cloudflare";
  if (!(UPSTREAM_FOR as readonly string[]).includes(upstreamFor)) {
    throw new EdgeConfigError(`EDGESOCKS_UPSTREAM_FOR must be one of ${UPSTREAM_FOR.join(", ")}`);
  }
  if (upstreamFor === "all" && !present(env.EDGESOCKS_UPSTREAM)) throw new EdgeConfigError("EDGESOCKS_UPSTREAM_FOR=all needs EDGESOCKS_UPSTREAM");
  return {
    tokens,
    windowBytes,
    maxWindowBytes,
    windowBudgetBytes,
    connectTimeoutMs: DEFAULT_CONNECT_TIMEOUT_MS,
    openTimeoutMs: DEFAULT_OPEN_TIMEOUT_MS,
    readBytes: DEFAULT_READ_BYTES,
    dohUrl,
    dohTimeoutMs: DEFAULT_DOH_TIMEOUT_MS,
    upstream: present(env.EDGESOCKS_UPSTREAM) ? parsed(() => parseUpstreamUrl(env.EDGESOCKS_UPSTREAM ?? "")) : undefined,
    upstreamFor: upstreamFor as UpstreamFor,
    cloudflareRelays: parsed(() => parseRelayList(env.EDGESOCKS_CLOUDFLARE_RELAY ?? "")),
    nat64Prefix: present(env.EDGESOCKS_NAT64_PREFIX) ? parsed(() => parseNat64Prefix(env.EDGESOCKS_NAT64_PREFIX ?? ""), "EDGESOCKS_NAT64_PREFIX ") : undefined,
    emulatedCloudflareCidrs: parsed(() => parseCidrList(env.EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS ?? "", "EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS")),
  };
}

/** An integer byte count from `min` to `max`, or `fallback` when the binding is unset. */
function byteCount(value: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined || value.trim() === "") return fallback;
  const bytes = Number(value);
  if (!Number.isInteger(bytes) || bytes < min || bytes > max) throw new EdgeConfigError(`${name} must be an integer from ${min} to ${max}`);
  return bytes;
}

function present(value: string | undefined): boolean {
  return value !== undefined && value.trim() !== "";
}

/** The value `parse` returns; its typed error becomes an EdgeConfigError (`prefix` names the binding where the error does not). */
function parsed<T>(parse: () => T, prefix = ""): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof UpstreamConfigError || error instanceof CidrError || error instanceof Nat64Error || error instanceof RelayConfigError) {
      throw new EdgeConfigError(`${prefix}${error.message}`);
    }
    throw error;
  }
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === "https:" || url.protocol === "http:") && url.hostname !== "";
  } catch {
    return false;
  }
}
