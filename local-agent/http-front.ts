// HTTP on the agent's port: placeholder until the HTTP proxy lands.

import type { Socket } from "node:net";
import type { AgentConfig } from "./config.ts";
import type { Logger } from "./log.ts";

export type HttpFront = {
  /** Serves one client whose first bytes (`firstChunk`) look like HTTP, until it closes. */
  serve(client: Socket, firstChunk: Buffer, label: string, onClosed: () => void): void;
  /** Stops serving: closes idle keep-alive connections. */
  close(): void;
};

/** The HTTP proxy and PAC server on the agent's port. */
export function createHttpFront(_config: AgentConfig, log: Logger): HttpFront {
  return {
    serve(client, _firstChunk, label, onClosed) {
      log.info(`${label} HTTP is not served yet`);
      client.end("HTTP/1.1 501 Not Implemented\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      onClosed();
    },
    close() {},
  };
}
