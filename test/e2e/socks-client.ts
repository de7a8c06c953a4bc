// The npm `socks` client (a SOCKS5 implementation nobody here wrote), wrapped for the tests.

import type { Socket } from "node:net";
import { SocksClient } from "socks";

/** Opens a SOCKS5 CONNECT through the agent and resolves with the connected socket. */
export async function socksConnect(agentPort: number, host: string, port: number, timeoutMs = 20_000): Promise<Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: "127.0.0.1", port: agentPort, type: 5 },
    command: "connect",
    destination: { host, port },
    timeout: timeoutMs,
  });
  return socket;
}

/** Reads a socket to its end; resolves with everything it sent. */
export function readAll(socket: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("error", reject);
  });
}
