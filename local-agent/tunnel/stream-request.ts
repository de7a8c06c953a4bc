// What every front door (SOCKS5, SOCKS4, HTTP) hands to a route once it knows the destination:
// the client connection, where it wants to go, and how to answer it in its own protocol.

import type { Duplex } from "node:stream";
import type { Destination, StreamStatus } from "../../worker/protocol/index.ts";

/**
 * The client side of a stream: a TCP socket from the listener, or one half of a duplexPair for
 * HTTP requests the agent forwards itself. Sockets can answer a mid-stream failure with a TCP
 * reset; a pair half can only be destroyed with an error.
 */
export type ClientConnection = Duplex & { resetAndDestroy?: () => unknown };

/**
 * Ends `client` so that it cannot take a cut for an end: a TCP reset for a socket (Node's
 * destroy() sends FIN when nothing is left to write), an error for a pair half, which the HTTP
 * forward passes on to its own client as a reset.
 */
export function resetConnection(client: ClientConnection, reason: string): void {
  if (client.resetAndDestroy) client.resetAndDestroy();
  else client.destroy(new Error(reason));
}

/** How a front door answers its client once the outcome of the open is known. */
export type OpenAnswer = {
  /** Bytes to write when the destination is open (a SOCKS success reply, "200 Connection established"). */
  succeeded(): Uint8Array | undefined;
  /** Bytes to write before the connection is closed, for an open that failed with `status`. */
  failed(status: StreamStatus, reason: string): Uint8Array | undefined;
};

export type StreamRequest = {
  client: ClientConnection;
  /** "client-address:port" for log lines. */
  clientLabel: string;
  destination: Destination;
  /** Client bytes that arrived behind the request, to send once the destination is open. */
  earlyBytes: Buffer;
  answer: OpenAnswer;
  /** Runs once when the stream is over, however it ended. */
  onClosed: () => void;
};

/** Log name of each status: what the connection's log line says instead of a number. */
export const STATUS_NAMES: Readonly<Record<StreamStatus, string>> = {
  0: "ok",
  1: "general failure",
  2: "not allowed",
  3: "network unreachable",
  4: "host unreachable",
  5: "connection refused",
  6: "timed out",
  7: "on Cloudflare's network",
};
