// A stream routed `direct`: the agent connects from this machine (loopback, the home network)
// and relays with stream backpressure, half-close included. Names are resolved here, which is
// the point of a direct route.

import { connect, type Socket } from "node:net";
import type { AgentConfig } from "../config/config.ts";
import { formatBytes, type Logger } from "../log.ts";
import { STATUS_NAMES, resetConnection, type StreamRequest } from "./stream-request.ts";
import { StreamStatus, formatDestination } from "../../worker/protocol/index.ts";

/** The stream status for a failed connect(), by Node's error code. */
export function statusForConnectError(code: string | undefined): StreamStatus {
  switch (code) {
    case "ECONNREFUSED":
      return StreamStatus.ConnectionRefused;
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EHOSTUNREACH":
    case "EHOSTDOWN":
      return StreamStatus.HostUnreachable;
    case "ENETUNREACH":
    case "ENETDOWN":
      return StreamStatus.NetworkUnreachable;
    case "ETIMEDOUT":
      return StreamStatus.Timeout;
    case "EACCES":
    case "EPERM":
      return StreamStatus.NotAllowed;
    default:
      return StreamStatus.GeneralFailure;
  }
}

/** How a stream that began on the edge route comes to go direct (--on-cloudflare direct). */
export type DirectHandoff = {
  /** Why it goes direct, for its log line. */
  why: string;
  /** The client already has its success reply (--zero-rtt): a failure now can only reset it. */
  answered: boolean;
  /** The client has already sent FIN: the destination gets it after the early bytes. */
  clientEnded: boolean;
};

/** Connects to the destination from this machine and relays until both sides are done. */
export function startDirectStream(request: StreamRequest, config: AgentConfig, log: Logger, handoff?: DirectHandoff): void {
  const { client, destination, answer } = request;
  const label = `${request.clientLabel} -> ${formatDestination(destination)} direct${handoff ? ` (${handoff.why})` : ""}`;
  const startedAtMs = Date.now();
  let opened = false;
  let finished = false;
  let uploadedBytes = 0;
  let downloadedBytes = 0;
  client.pause();

  const upstream: Socket = connect({ host: destination.host, port: destination.port, allowHalfOpen: true, noDelay: true });
  const finish = (result: string, level: "info" | "warn" = "info") => {
    if (finished) return;
    finished = true;
    clearTimeout(openTimer);
    const seconds = ((Date.now() - startedAtMs) / 1000).toFixed(2);
    log[level](`${label} up=${formatBytes(uploadedBytes)} down=${formatBytes(downloadedBytes)} ${seconds}s ${result}`);
    request.onClosed();
  };
  const failOpen = (status: StreamStatus, reason: string) => {
    upstream.destroy();
    if (handoff?.answered) {
      // Told "connected" already: a reset is the only honest answer left.
      resetConnection(client, reason);
      finish(`${STATUS_NAMES[status]} after a 0-RTT answer, client reset: ${reason}`);
      return;
    }
    const reply = answer.failed(status, reason);
    if (reply) client.end(reply);
    else client.end();
    finish(`${STATUS_NAMES[status]}: ${reason}`);
  };
  const openTimer = setTimeout(() => failOpen(StreamStatus.Timeout, `no connection within ${config.openTimeoutMs} ms`), config.openTimeoutMs);

  upstream.once("connect", () => {
    opened = true;
    clearTimeout(openTimer);
    const reply = handoff?.answered ? undefined : answer.succeeded();
    if (reply) client.write(reply);
    uploadedBytes += request.earlyBytes.byteLength;
    if (request.earlyBytes.byteLength > 0) upstream.write(request.earlyBytes);
    // A client whose FIN came before the handoff will not emit 'end' again for pipe() to pass on.
    if (handoff?.clientEnded) upstream.end();
    client.on("data", (chunk: Buffer) => {
      uploadedBytes += chunk.byteLength;
    });
    upstream.on("data", (chunk: Buffer) => {
      downloadedBytes += chunk.byteLength;
    });
    // pipe() carries backpressure both ways and turns each side's FIN into the other's end().
    if (!handoff?.clientEnded) client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  });
  upstream.on("error", (error: NodeJS.ErrnoException) => {
    if (!opened) {
      failOpen(statusForConnectError(error.code), error.code ?? error.message);
      return;
    }
    // A break after the open: reset the client so it cannot mistake a cut for an end.
    resetConnection(client, `destination ${error.code ?? error.message}`);
    finish(`reset: destination ${error.code ?? error.message}`);
  });
  client.on("error", (error: NodeJS.ErrnoException) => log.debug(`${label} client socket: ${error.code ?? error.message}`));
  client.on("close", () => {
    if (!opened) {
      upstream.destroy();
      finish("client closed the connection");
      return;
    }
    // An orderly end has both FINs exchanged; anything else aborts the destination too.
    const orderly = upstream.readableEnded && upstream.writableFinished;
    if (!orderly && !upstream.destroyed) upstream.resetAndDestroy();
    finish(orderly ? "ok" : "client closed the connection");
  });
}
