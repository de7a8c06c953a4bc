// The Worker's configuration, read once per request from its bindings into one typed object.

import { DEFAULT_WINDOW_BYTES, MAX_WINDOW_BYTES, MIN_TOKEN_LENGTH, MIN_WINDOW_BYTES } from "./protocol.ts";

/** Bindings the Worker reads. EDGESOCKS_TOKEN is a secret; the rest are plain vars. */
export type EdgeEnv = {
  /** Comma-separated bearer tokens; any one of them opens a tunnel. */
  EDGESOCKS_TOKEN?: string;
  /** Receive window per stream for the upload direction (bytes). */
  EDGESOCKS_WINDOW_BYTES?: string;
  /** The DNS-over-HTTPS resolver (RFC 8484 POST) that answers the agent's DNS queries. */
  EDGESOCKS_DOH_URL?: string;
};

export type EdgeConfig = {
  tokens: string[];
  /** What the edge may hold of the agent's unsent upload bytes, per stream. */
  windowBytes: number;
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
};

/**
 * Largest BYOB read from a destination (reads start at 16 KiB and grow while they come back
 * full: worker/edge-stream.ts). workerd's default reader yields ~4 KiB chunks (~45 MB/s as one
 * message each); reads into 256 KiB-1 MiB buffers measured 250-390 MB/s on this machine. Much of
 * workerd's download cost is per message: 512 KiB reads cost 0.69x the CPU per GB of 256 KiB
 * ones (npm run bench:ab), while two reads still fit in the default 1 MiB window.
 */
export const DEFAULT_READ_BYTES = 512 * 1024;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_OPEN_TIMEOUT_MS = 10_000;
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
  let windowBytes = DEFAULT_WINDOW_BYTES;
  if (env.EDGESOCKS_WINDOW_BYTES !== undefined && env.EDGESOCKS_WINDOW_BYTES !== "") {
    windowBytes = Number(env.EDGESOCKS_WINDOW_BYTES);
    if (!Number.isInteger(windowBytes) || windowBytes < MIN_WINDOW_BYTES || windowBytes > MAX_WINDOW_BYTES) {
      throw new EdgeConfigError(`EDGESOCKS_WINDOW_BYTES must be an integer from ${MIN_WINDOW_BYTES} to ${MAX_WINDOW_BYTES}`);
    }
  }
  const dohUrl = env.EDGESOCKS_DOH_URL === undefined || env.EDGESOCKS_DOH_URL === "" ? DEFAULT_DOH_URL : env.EDGESOCKS_DOH_URL;
  if (!isHttpUrl(dohUrl)) throw new EdgeConfigError("EDGESOCKS_DOH_URL must be an http:// or https:// URL");
  return {
    tokens,
    windowBytes,
    connectTimeoutMs: DEFAULT_CONNECT_TIMEOUT_MS,
    openTimeoutMs: DEFAULT_OPEN_TIMEOUT_MS,
    readBytes: DEFAULT_READ_BYTES,
    dohUrl,
    dohTimeoutMs: DEFAULT_DOH_TIMEOUT_MS,
  };
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === "https:" || url.protocol === "http:") && url.hostname !== "";
  } catch {
    return false;
  }
}
