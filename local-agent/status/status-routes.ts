// The status on the agent's own port, beside /proxy.pac: /status (the page), /status.json (the
// same figures) and /metrics (Prometheus). Every answer, refusals included, is no-store and
// carries the page's Content-Security-Policy; who may read it is status-access.ts's call.

import type { IncomingMessage, ServerResponse } from "node:http";
import type { AgentConfig } from "../config/config.ts";
import type { Logger } from "../log.ts";
import { statusFor } from "./agent-status.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./metrics.ts";
import { checkStatusAccess } from "./status-access.ts";
import { STATUS_PAGE_CSP, STATUS_PAGE_HTML } from "./status-page.ts";

export const STATUS_PATH = "/status";
export const STATUS_JSON_PATH = "/status.json";
export const METRICS_PATH = "/metrics";
const STATUS_PATHS: ReadonlySet<string> = new Set([STATUS_PATH, STATUS_JSON_PATH, METRICS_PATH]);

const COMMON_HEADERS = {
  "Cache-Control": "no-store",
  "Content-Security-Policy": STATUS_PAGE_CSP,
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
};

/** True when an origin-form request target (`/status?x`) names one of the status routes. */
export function isStatusPath(target: string): boolean {
  return STATUS_PATHS.has(target.split("?")[0] ?? "");
}

/** Answers a request for one of the status routes: the figures, or 401, 403 or 405 saying why not. */
export function serveStatus(request: IncomingMessage, response: ServerResponse, config: AgentConfig, log: Logger, label: string): void {
  const method = request.method ?? "?";
  const path = request.url?.split("?")[0] ?? "";
  const answer = (statusCode: number, contentType: string, body: string, headers: Record<string, string> = {}) => {
    response.writeHead(statusCode, { ...COMMON_HEADERS, "Content-Type": contentType, "Content-Length": Buffer.byteLength(body), ...headers });
    response.end(method === "HEAD" ? undefined : body);
  };
  const socket = request.socket;
  const access = checkStatusAccess(
    {
      host: request.headers.host,
      authorization: request.headers.authorization,
      proxyAuthorization: request.headers["proxy-authorization"],
      remoteAddress: socket.remoteAddress ?? "",
      localAddress: socket.localAddress ?? "",
      localPort: socket.localPort ?? 0,
    },
    config,
  );
  if (!access.allowed) {
    log.info(`${label} HTTP ${method} ${path} refused ${access.statusCode}: ${access.message}`);
    answer(access.statusCode, "text/plain; charset=utf-8", `${access.message}\n`, access.headers);
    return;
  }
  if (method !== "GET" && method !== "HEAD") {
    log.info(`${label} HTTP ${method} ${path} refused 405`);
    answer(405, "text/plain; charset=utf-8", `${path} answers GET and HEAD only\n`, { Allow: "GET, HEAD" });
    return;
  }
  const snapshot = () => statusFor(config).snapshot(socket.localPort);
  if (path === STATUS_PATH) answer(200, "text/html; charset=utf-8", STATUS_PAGE_HTML);
  else if (path === STATUS_JSON_PATH) answer(200, "application/json; charset=utf-8", `${JSON.stringify(snapshot())}\n`);
  else answer(200, METRICS_CONTENT_TYPE, renderMetrics(snapshot()));
  // The page asks every second: one line per request would drown the connections' lines.
  log.debug(`${label} HTTP ${method} ${path} 200`);
}
