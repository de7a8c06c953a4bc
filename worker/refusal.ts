// What the Worker's endpoints share before their own checks: a plain-text refusal, the
// configuration checks every endpoint makes first (500 misconfigured, 503 no token), and the
// bearer-token check (401).

import { bearerToken, tokenMatches } from "./auth.ts";
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

/** The 401 for a request without one of `config`'s tokens as its bearer token, or undefined when it has one. */
export async function tokenRefusal(request: Request, config: EdgeConfig): Promise<Response | undefined> {
  const presented = bearerToken(request.headers.get("Authorization"));
  if (presented !== undefined && (await tokenMatches(presented, config.tokens))) return undefined;
  return refuse(401, presented === undefined ? "missing bearer token" : "wrong token", { "WWW-Authenticate": 'Bearer realm="edgesocks"' });
}
