// The agent's listening socket: accepts clients, bounds how many are served, and closes them all.

import { createServer, type AddressInfo, type Socket } from "node:net";
import type { AgentConfig } from "./config.ts";
import { startTunnelPool } from "./dialer.ts";
import type { Logger } from "./log.ts";
import { serveClient } from "./front-door.ts";
import { createHttpFront } from "./http-front.ts";

export type RunningAgent = {
  address: AddressInfo;
  /** Stops accepting, resets every open connection, and resolves when the listener is closed. */
  close(): Promise<void>;
};

/** Listens on config.listenHost:listenPort; rejects with a one-line Error if it cannot. */
export async function startAgent(config: AgentConfig, log: Logger): Promise<RunningAgent> {
  const clients = new Set<Socket>();
  const http = createHttpFront(config, log);
  // allowHalfOpen: a client's FIN ends only its direction; the answer still flows back.
  const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false }, (client) => {
    clients.add(client);
    serveClient(client, config, log, http, () => clients.delete(client));
  });
  server.maxConnections = config.maxConnections;
  server.on("drop", (info) => log.warn(`refused ${info?.remoteAddress ?? "?"}: --max-connections ${config.maxConnections} reached`));
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) => {
      const why = error.code === "EADDRINUSE" ? "the address is in use" : (error.code ?? error.message);
      reject(new Error(`cannot listen on ${config.listenHost}:${config.listenPort}: ${why}`));
    });
    server.listen({ host: config.listenHost, port: config.listenPort }, () => resolve());
  });
  server.on("error", (error) => log.error(`listener: ${error.message}`));
  const pool = startTunnelPool(config, log);
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        pool.close();
        http.close();
        for (const client of clients) client.destroy();
      }),
  };
}
