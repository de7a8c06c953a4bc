// The agent's listening socket: accepts clients, bounds how many are served, and on shutdown
// drains them: open transfers get a deadline to finish, and whatever is left is reset.

import { createServer, type AddressInfo, type Socket } from "node:net";
import { OverCapacity } from "./front/capacity.ts";
import type { AgentConfig } from "./config/config.ts";
import { startEdgeSet } from "./tunnel/dialer.ts";
import type { EdgeSet } from "./tunnel/edge-set.ts";
import { statusFor } from "./status/agent-status.ts";
import type { Logger } from "./log.ts";
import { serveClient } from "./front/front-door.ts";
import { createHttpFront } from "./front/http-front.ts";

/** What a shutdown did: connections that ended by themselves during the drain, and those reset. */
export type DrainResult = { finished: number; reset: number };

export type RunningAgent = {
  address: AddressInfo;
  /**
   * Stops accepting, lets open connections finish for up to `deadlineMs`, then resets the rest
   * (a TCP reset, never a clean end: a client cut mid-transfer must not take it for complete).
   * Calling it again returns the same drain.
   */
  close(deadlineMs?: number): Promise<DrainResult>;
  /** Ends a drain now: resets every connection still open (a second signal). */
  abort(): void;
  /** Client connections open now. */
  readonly openConnections: number;
  /** The edges and their pools: EdgeSet.status() is each edge's health, load and spares. */
  readonly edges: EdgeSet;
};

/** How often a drain closes HTTP keep-alive connections that went idle after their last answer. */
const IDLE_SWEEP_MS = 100;

/** Listens on config.listenHost:listenPort; rejects with a one-line Error if it cannot. */
export async function startAgent(config: AgentConfig, log: Logger): Promise<RunningAgent> {
  const clients = new Set<Socket>();
  const http = createHttpFront(config, log);
  let onClientGone = () => {};
  const overCapacity = new OverCapacity(config, log);
  // allowHalfOpen: a client's FIN ends only its direction; the answer still flows back.
  const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false }, (client) => {
    // --max-connections: past it a client is refused in its own protocol (capacity.ts), never
    // dropped unanswered as server.maxConnections would; refusals are logged once per interval.
    if (clients.size >= config.maxConnections) {
      overCapacity.refuse(client);
      return;
    }
    clients.add(client);
    // 'close' as well as the session's own callback: a session that hands its socket on (a
    // stream's end, an HTTP keep-alive) may call back before the socket is really gone.
    const gone = () => {
      if (clients.delete(client)) onClientGone();
    };
    client.once("close", gone);
    serveClient(client, config, log, http, gone);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) => {
      const why = error.code === "EADDRINUSE" ? "the address is in use" : (error.code ?? error.message);
      reject(new Error(`cannot listen on ${config.listenHost}:${config.listenPort}: ${why}`));
    });
    server.listen({ host: config.listenHost, port: config.listenPort }, () => resolve());
  });
  server.on("error", (error) => log.error(`listener: ${error.message}`));
  const edges = startEdgeSet(config, log);
  statusFor(config).useSources({ edgeStatuses: () => edges.status() });

  let drain: Promise<DrainResult> | undefined;
  let resetRest = () => {};
  return {
    address: server.address() as AddressInfo,
    get openConnections() {
      return clients.size;
    },
    edges,
    close(deadlineMs = 0) {
      drain ??= new Promise<DrainResult>((resolve) => {
        const openAtStart = clients.size;
        server.close();
        // Refusals in progress end now (reset), and the count not yet logged is written.
        overCapacity.close();
        // No new spares: a stream that still opens during the drain takes a tunnel of its own.
        edges.close();
        http.close();
        const sweep = setInterval(() => http.closeIdle(), IDLE_SWEEP_MS);
        const finish = (reset: number) => {
          clearInterval(sweep);
          clearTimeout(deadline);
          onClientGone = () => {};
          resetRest = () => {};
          resolve({ finished: openAtStart - reset, reset });
        };
        resetRest = () => {
          const left = [...clients];
          clients.clear();
          for (const client of left) client.resetAndDestroy();
          finish(left.length);
        };
        const deadline = setTimeout(() => resetRest(), deadlineMs);
        onClientGone = () => {
          if (clients.size === 0) finish(0);
        };
        http.closeIdle();
        if (clients.size === 0) finish(0);
      });
      return drain;
    },
    abort() {
      resetRest();
    },
  };
}
