// A TCP relay between the agent and the edge that keeps the request head of each tunnel upgrade,
// so a test can see which tunnels the agent opened and what their upgrades carried. Other
// requests (the agent's /healthz probe at start) pass through unrecorded.

import { connect, createServer, type Server, type Socket } from "node:net";
import { TUNNEL_PATH } from "../../worker/protocol.ts";

/** Longest request head kept per connection: an OPEN in the upgrade is at most ~11 KB of base64. */
const MAX_HEAD_BYTES = 64 * 1024;

export type UpgradeRecorder = {
  port: number;
  /** The request head of every tunnel upgrade so far, in order of arrival. */
  heads(): string[];
  /** Resolves once `count` complete heads have arrived; rejects after `timeoutMs`. */
  waitForHeads(count: number, timeoutMs?: number): Promise<string[]>;
  close(): Promise<void>;
};

/** Listens on loopback and relays every connection to `targetPort`, recording request heads. */
export async function startUpgradeRecorder(targetPort: number): Promise<UpgradeRecorder> {
  const heads: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (inbound) => {
    const outbound = connect({ port: targetPort, host: "127.0.0.1", noDelay: true, allowHalfOpen: true });
    sockets.add(inbound).add(outbound);
    let head = "";
    let recording = true;
    inbound.on("data", (chunk: Buffer) => {
      if (recording) {
        head += chunk.toString("latin1");
        const end = head.indexOf("\r\n\r\n");
        if (end >= 0 || head.length > MAX_HEAD_BYTES) {
          recording = false;
          if (head.startsWith(`GET ${TUNNEL_PATH} `)) heads.push(head.slice(0, end >= 0 ? end : MAX_HEAD_BYTES));
        }
      }
      outbound.write(chunk);
    });
    inbound.on("end", () => outbound.end());
    outbound.pipe(inbound);
    for (const socket of [inbound, outbound]) {
      socket.on("error", () => {
        inbound.destroy();
        outbound.destroy();
      });
      socket.on("close", () => {
        sockets.delete(socket);
        inbound.destroy();
        outbound.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    heads: () => [...heads],
    waitForHeads: async (count, timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      while (heads.length < count) {
        if (Date.now() > deadline) throw new Error(`${heads.length} upgrade(s) within ${timeoutMs} ms; expected ${count}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return [...heads];
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The value of `name` in a request head, or undefined (header names match case-insensitively). */
export function headerValue(head: string, name: string): string | undefined {
  const prefix = `${name.toLowerCase()}:`;
  const line = head.split("\r\n").find((candidate) => candidate.toLowerCase().startsWith(prefix));
  return line?.slice(prefix.length).trim();
}
