// What the Worker's endpoints share before their own checks: a plain-text refusal, and the
// configuration checks every endpoint makes first (500 misconfigured, 503 no token).

import { EdgeConfigError, loadEdgeConfig, type EdgeConfig, type EdgeEnv } from "./config.ts";

/** A refusal: `status`, the one-line `message` as text/plain, and any headers the status calls for. */
export function refuse(status: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(`${message}\n`, { status, headers: { "Content-Type": "text/plain; charset=utf-8", ...headers } });
}

/**
 * The edge's configuration, or the refusal every endpoint gives without one: 500 when the vars
 * do not parse, 503 when no token is set (never an open relay). `serves` completes "so it ... for
 * no one" in the 503 message.
 */
export function configOrRefusal(env: EdgeEnv, serves: string): EdgeConfig | Response {
  let config: EdgeConfig;
  try {
    config = loadEdgeConfig(env);
  } catch (error) {
    if (error instanceof EdgeConfigError) return refuse(500, `edgesocks is misconfigured: ${error.message}`);
    throw error;
  }
  if (config.tokens.length === 0) {
    return refuse(503, `edgesocks has no EDGESOCKS_TOKEN configured, so it ${serves} for no one; set it with \`wrangler secret put EDGESOCKS_TOKEN\``);
  }
  return config;
}
