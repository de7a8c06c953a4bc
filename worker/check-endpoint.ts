// GET /check: proves a bearer token and opens nothing. The agent asks it at start, so a wrong
// token is one clear error then rather than a 401 on every connection. The checks and their
// statuses are GET /tunnel's (tunnel-endpoint.ts) where they apply.

import type { EdgeEnv } from "./config.ts";
import { configOrRefusal, refuse, tokenRefusal } from "./refusal.ts";

/** Answers a token check: 204 when the bearer token is one of the edge's, or the status that says why not. */
export async function handleCheckRequest(request: Request, env: EdgeEnv): Promise<Response> {
  const config = configOrRefusal(env, "checks tokens");
  if (config instanceof Response) return config;
  if (request.method !== "GET") return refuse(405, "the check endpoint takes GET with a bearer token", { Allow: "GET" });
  const unauthorized = await tokenRefusal(request, config);
  if (unauthorized) return unauthorized;
  return new Response(null, { status: 204, headers: { "Cache-Control": "no-store" } });
}
