// Who may read the status: pure, so each refusal is unit-testable without a socket.
//
// - The Host header must name the agent itself (its listen host, the address the client reached,
//   127.0.0.1, [::1] or localhost, with its port): a web page whose name was rebound to 127.0.0.1
//   (DNS rebinding) sends its own name, and is refused before anything is read.
// - Without users, only loopback clients (the agent listens on loopback only then, so this is a
//   second lock). With users, every client must send Basic credentials of one, in Authorization
//   (a browser opening the page) or Proxy-Authorization (a client that has them for the proxy).

import { isIP } from "node:net";
import { isLoopbackHost } from "../config/config-values.ts";
import { parseBasicCredentials } from "../front/http-proxy.ts";
import { checkCredentials, type Users } from "../config/users.ts";

/** The realm a browser shows when it asks for the status page's credentials. */
export const STATUS_REALM = "edgesocks status";

export type StatusRequest = {
  /** The Host header, as sent; undefined when there is none. */
  host: string | undefined;
  authorization: string | undefined;
  proxyAuthorization: string | undefined;
  /** The client's address, and the agent's address and port it reached. */
  remoteAddress: string;
  localAddress: string;
  localPort: number;
};

export type StatusAgent = { listenHost: string; users: Users };

export type StatusAccess = { allowed: true } | { allowed: false; statusCode: 401 | 403; message: string; headers: Record<string, string> };

/** Whether `request` may read the status, and the precise refusal when it may not. */
export function checkStatusAccess(request: StatusRequest, agent: StatusAgent): StatusAccess {
  const ownHosts = agentHosts(agent.listenHost, request.localAddress);
  const host = parseHostHeader(request.host);
  if (host === undefined) return refuse403("a Host header naming the agent (127.0.0.1, [::1] or localhost, with its port) is required");
  const port = host.port ?? 80;
  if (!ownHosts.has(host.name) || port !== request.localPort) {
    return refuse403(`Host "${printable(request.host ?? "")}" is not this agent's address (refused: a page that rebinds its own name to this machine must not read the status); open it as http://127.0.0.1:${request.localPort}/status`);
  }
  if (agent.users.size === 0) {
    if (!isLoopbackHost(unmapped(request.remoteAddress))) return refuse403("the status is served to this machine only while no users are configured");
    return { allowed: true };
  }
  for (const header of [request.authorization, request.proxyAuthorization]) {
    const credentials = parseBasicCredentials(header);
    if (credentials && checkCredentials(agent.users, credentials.name, credentials.password)) return { allowed: true };
  }
  return {
    allowed: false,
    statusCode: 401,
    message: "credentials of a user are required (HTTP Basic, the proxy's user name and password)",
    headers: { "WWW-Authenticate": `Basic realm="${STATUS_REALM}", charset="UTF-8"` },
  };
}

/** Lower-case names the agent answers to, brackets around IPv6 as a Host header has them. */
function agentHosts(listenHost: string, localAddress: string): Set<string> {
  const hosts = new Set(["localhost", "127.0.0.1", "[::1]"]);
  for (const address of [listenHost, unmapped(localAddress)]) {
    // A wildcard listen address is no address a client can name; the one it reached is added instead.
    if (address === "" || address === "0.0.0.0" || address === "::") continue;
    hosts.add(isIP(address) === 6 ? `[${address.toLowerCase()}]` : address.toLowerCase());
  }
  return hosts;
}

/** HOST[:PORT] or [IPv6][:PORT] from a Host header (RFC 9110 section 7.2), or undefined if it is not one. */
export function parseHostHeader(header: string | undefined): { name: string; port: number | undefined } | undefined {
  if (header === undefined) return undefined;
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(header.trim());
  if (!match) return undefined;
  const port = match[2] === undefined ? undefined : Number(match[2]);
  if (port !== undefined && port > 65535) return undefined;
  return { name: (match[1] ?? "").toLowerCase(), port };
}

/** An IPv4 client of a dual-stack listener, as Node reports it (::ffff:127.0.0.1), in its IPv4 form. */
function unmapped(address: string): string {
  return address.toLowerCase().startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

function refuse403(message: string): StatusAccess {
  return { allowed: false, statusCode: 403, message, headers: {} };
}

function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, 100);
}
