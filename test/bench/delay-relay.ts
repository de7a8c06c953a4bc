// A TCP relay that delays every chunk by a fixed one-way time in each direction: a stand-in for
// `tc netem`, which this machine's kernel lacks (no sch_netem module). Bandwidth is not limited;
// the relay adds round-trip time, which is what a flow-control window has to cover.

import { connect, createServer, type Server, type Socket } from "node:net";

export type DelayRelay = { port: number; close(): Promise<void> };

/** Listens on loopback and relays to targetPort, adding rttMs / 2 each way. */
export async function startDelayRelay(targetPort: number, rttMs: number): Promise<DelayRelay> {
  const oneWayMs = rttMs / 2;
  const sockets = new Set<Socket>();
  const forward = (from: Socket, to: Socket) => {
    from.on("data", (chunk: Buffer) => {
      if (oneWayMs === 0) to.write(chunk);
      else setTimeout(() => to.write(chunk), oneWayMs); // equal delays fire in order
    });
    from.on("end", () => setTimeout(() => to.end(), oneWayMs));
    from.on("error", () => to.destroy());
    from.on("close", () => setTimeout(() => to.destroy(), oneWayMs + 1));
  };
  const server: Server = createServer({ noDelay: true }, (inbound) => {
    const outbound = connect({ port: targetPort, host: "127.0.0.1", noDelay: true });
    sockets.add(inbound).add(outbound);
    forward(inbound, outbound);
    forward(outbound, inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
