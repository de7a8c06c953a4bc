// A TCP relay that delays every chunk by a fixed one-way time in each direction: a stand-in for
// `tc netem`, which this machine's kernel lacks (no sch_netem module). Bandwidth is not limited;
// the relay adds round-trip time, which is what a flow-control window has to cover.

import { connect, createServer, type Server, type Socket } from "node:net";

export type DelayRelay = { port: number; close(): Promise<void> };

export type DelayRelayOptions = {
  /**
   * Also charge each new connection the round trip of a TCP handshake over the slow link. The
   * relay accepts at once on loopback, so without this a client's first bytes leave one RTT
   * earlier than they could; with it they are held until one RTT after the accept, and so
   * reach the target 1.5 RTT after the connect began, as over a real link.
   */
  chargeTcpHandshake?: boolean;
};

/** Listens on loopback and relays to targetPort, adding rttMs / 2 each way. */
export async function startDelayRelay(targetPort: number, rttMs: number, options: DelayRelayOptions = {}): Promise<DelayRelay> {
  const oneWayMs = rttMs / 2;
  const sockets = new Set<Socket>();
  const forward = (from: Socket, to: Socket, holdUntilMs: number) => {
    // Equal delays fire in order; what arrives during the handshake hold waits in `held` and
    // joins the delayed stream, in order, when the hold ends.
    const held: (() => void)[] = [];
    let holding = holdUntilMs > performance.now();
    const later = (action: () => void) => (oneWayMs === 0 ? action() : setTimeout(action, oneWayMs));
    const send = (action: () => void) => (holding ? held.push(action) : later(action));
    if (holding) {
      setTimeout(() => {
        holding = false;
        for (const action of held.splice(0)) later(action);
      }, holdUntilMs - performance.now());
    }
    from.on("data", (chunk: Buffer) => send(() => to.write(chunk)));
    from.on("end", () => send(() => to.end()));
    from.on("error", () => to.destroy());
    from.on("close", () => setTimeout(() => to.destroy(), Math.max(0, holdUntilMs - performance.now()) + oneWayMs + 1));
  };
  const server: Server = createServer({ noDelay: true }, (inbound) => {
    const outbound = connect({ port: targetPort, host: "127.0.0.1", noDelay: true });
    sockets.add(inbound).add(outbound);
    inbound.on("close", () => sockets.delete(inbound));
    outbound.on("close", () => sockets.delete(outbound));
    forward(inbound, outbound, options.chargeTcpHandshake ? performance.now() + rttMs : 0);
    forward(outbound, inbound, 0);
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
