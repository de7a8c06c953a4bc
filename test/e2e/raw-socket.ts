// Raw TCP conversations with the agent, for tests that write bytes no well-behaved client library
// would, or that must see exactly how a connection ended.

import { createConnection, type Socket } from "node:net";

/**
 * Connects to the agent at `port`, writes `bytes` (then FIN when `thenEnd`), and resolves with
 * everything it answers until the connection closes. The socket is half-open only until the
 * agent's FIN, then closes its side too, as a client would.
 */
export function exchange(port: number, bytes: number[], options: { thenEnd?: boolean } = {}): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port, allowHalfOpen: true }, () => {
      socket.write(Uint8Array.from(bytes));
      if (options.thenEnd) socket.end();
    });
    const answer: number[] = [];
    socket.on("data", (chunk: Buffer) => answer.push(...chunk));
    socket.on("end", () => socket.end());
    socket.on("close", () => resolve(answer));
    socket.on("error", reject);
  });
}

/**
 * Reads `socket` to its end, discarding what comes, and resolves with how it ended ("end" for a
 * FIN, else the error code such as ECONNRESET) and when (Date.now()).
 */
export function socketEnding(socket: Socket): Promise<{ how: string; atMs: number }> {
  return new Promise((resolve) => {
    socket.on("data", () => {});
    socket.once("error", (error: NodeJS.ErrnoException) => resolve({ how: error.code ?? error.message, atMs: Date.now() }));
    socket.once("end", () => resolve({ how: "end", atMs: Date.now() }));
    socket.resume();
  });
}
