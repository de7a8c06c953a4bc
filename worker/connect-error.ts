// Maps a failure of connect() from cloudflare:sockets to the stream status the agent reports.

import { StreamStatus } from "./protocol/index.ts";

/** Ports a Worker may never dial: Cloudflare blocks outbound SMTP (port 25) from Workers. */
export const BLOCKED_PORTS: ReadonlySet<number> = new Set([25]);

/**
 * The status for an error thrown by connect() or rejected by `socket.opened`.
 *
 * workerd reports most failures with one message, "proxy request failed, cannot connect to the
 * specified address", for a refused port and for a name that does not resolve alike (measured
 * under wrangler dev), so that message is reported as a refusal; blocked ports are refused as
 * NotAllowed before dialing. Messages naming DNS, timeouts or blocks map to their own
 * statuses; anything unknown is a general failure, never a guess.
 */
export function statusForConnectError(error: unknown): StreamStatus {
  const message = error instanceof Error ? error.message.toLowerCase() : String(error).toLowerCase();
  if (/prohibited|not allowed|blocked|loop detected/.test(message)) return StreamStatus.NotAllowed;
  if (/timed out|timeout/.test(message)) return StreamStatus.Timeout;
  if (/dns|resolve|no such host|name not found|enotfound/.test(message)) return StreamStatus.HostUnreachable;
  if (/network is unreachable|enetunreach/.test(message)) return StreamStatus.NetworkUnreachable;
  if (/host is unreachable|no route|ehostunreach/.test(message)) return StreamStatus.HostUnreachable;
  if (/refused|econnrefused|cannot connect to the specified address/.test(message)) return StreamStatus.ConnectionRefused;
  return StreamStatus.GeneralFailure;
}

/** The message of an unknown thrown value, for a reason string. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
