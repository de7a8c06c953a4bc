// A SOCKS5 gate in front of a benchmark's proxy: it passes a client's greeting on at once and its
// CONNECT only when the destination is an IPv4 loopback address, then relays bytes unchanged.
// Chromium asks its proxy for update.googleapis.com and accounts.google.com by name whatever its
// flags say (seen with Debian's Chromium 156 here); the agent's rules refuse those, but Dante
// would resolve the name to match its `to:` rule, a DNS query that leaves this machine. The gate
// refuses them (a reset) before any proxy sees them, the same way for every contender.

import { connect, createServer, type Server, type Socket } from "node:net";

const SOCKS_VERSION = 0x05;
const Command = { Connect: 0x01 } as const;
const AddressType = { IPv4: 0x01, DomainName: 0x03, IPv6: 0x04 } as const;
/** 127.0.0.0/8 as a dotted quad: the only names let through, as they resolve without DNS. */
const LOOPBACK_IPV4 = /^127\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)$/;
/** A client that sends more than this before its CONNECT is complete is not a SOCKS5 client. */
const MAX_PREFIX_BYTES = 600;

/** What the client's first bytes amount to: a greeting and a request, or not yet. */
export type GatePrefix =
  | { kind: "need-more" }
  | { kind: "greeting"; greetingBytes: number }
  | { kind: "allow"; requestBytes: number; destination: string }
  | { kind: "refuse"; reason: string };

/** Parses a SOCKS5 greeting (RFC 1928 §3) at the start of `bytes`. */
export function parseGreeting(bytes: Buffer): GatePrefix {
  if (bytes.byteLength < 2) return { kind: "need-more" };
  if (bytes[0] !== SOCKS_VERSION) return { kind: "refuse", reason: `version 0x${(bytes[0] ?? 0).toString(16)}, not SOCKS5` };
  const greetingBytes = 2 + (bytes[1] ?? 0);
  return bytes.byteLength < greetingBytes ? { kind: "need-more" } : { kind: "greeting", greetingBytes };
}

/** Parses a SOCKS5 request (RFC 1928 §4) at the start of `bytes`: a CONNECT to 127.0.0.0/8, as an address or a literal, is allowed; anything else refused. */
export function parseRequest(bytes: Buffer): GatePrefix {
  if (bytes.byteLength < 5) return { kind: "need-more" };
  if (bytes[0] !== SOCKS_VERSION) return { kind: "refuse", reason: `request version 0x${(bytes[0] ?? 0).toString(16)}` };
  if (bytes[1] !== Command.Connect) return { kind: "refuse", reason: `command 0x${(bytes[1] ?? 0).toString(16)}, not CONNECT` };
  const addressType = bytes[3];
  const addressBytes = addressType === AddressType.IPv4 ? 4 : addressType === AddressType.IPv6 ? 16 : addressType === AddressType.DomainName ? 1 + (bytes[4] ?? 0) : -1;
  if (addressBytes < 0) return { kind: "refuse", reason: `address type 0x${(addressType ?? 0).toString(16)}` };
  const requestBytes = 4 + addressBytes + 2;
  if (bytes.byteLength < requestBytes) return { kind: "need-more" };
  const port = bytes.readUInt16BE(4 + addressBytes);
  if (addressType === AddressType.IPv6) return { kind: "refuse", reason: "an IPv6 address" };
  // Chromium sends a URL's host as a name even when it is an IPv4 literal: a literal needs no lookup.
  const address = addressType === AddressType.IPv4 ? [...bytes.subarray(4, 8)].join(".") : bytes.subarray(5, 4 + addressBytes).toString("latin1");
  if (!LOOPBACK_IPV4.test(address)) return { kind: "refuse", reason: `${address}:${port}, not a loopback IPv4 address` };
  return { kind: "allow", requestBytes, destination: `${address}:${port}` };
}

export type SocksGate = {
  port: number;
  /** Requests refused so far, one line each ("<reason>"), for the report: Chromium's background requests land here. */
  refused: string[];
  /** CONNECTs passed on so far. */
  allowed(): number;
  close(): Promise<void>;
};

/** Listens on loopback and gates every connection to 127.0.0.1:`targetPort`. */
export async function startSocksGate(targetPort: number): Promise<SocksGate> {
  const sockets = new Set<Socket>();
  const refused: string[] = [];
  let allowed = 0;
  const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    // Upstream at once: the greeting goes on as soon as it is whole, so the gate adds no round trip.
    const upstream = connect({ port: targetPort, host: "127.0.0.1", noDelay: true, allowHalfOpen: true });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    }
    pipeEnds(upstream, client);
    let pending = Buffer.alloc(0);
    let stage: "greeting" | "request" | "relaying" = "greeting";
    const onData = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const parsed = stage === "greeting" ? parseGreeting(pending) : parseRequest(pending);
        if (parsed.kind === "need-more") {
          if (pending.byteLength > MAX_PREFIX_BYTES) refuse(`${pending.byteLength} bytes without a whole ${stage}`);
          return;
        }
        if (parsed.kind === "refuse") return refuse(parsed.reason);
        if (parsed.kind === "greeting") {
          upstream.write(pending.subarray(0, parsed.greetingBytes));
          pending = pending.subarray(parsed.greetingBytes);
          stage = "request";
          continue;
        }
        client.off("data", onData);
        allowed++;
        stage = "relaying";
        upstream.write(pending);
        pipeEnds(client, upstream);
        return;
      }
    };
    // A reset, not a SOCKS reply: upstream's method reply may still be on its way over the link,
    // and a reply written now could overtake it. The client (a background request) just fails.
    const refuse = (reason: string) => {
      client.off("data", onData);
      refused.push(reason);
      upstream.destroy();
      client.resetAndDestroy();
    };
    client.on("data", onData);
    client.on("end", () => {
      if (stage !== "relaying") upstream.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    refused,
    allowed: () => allowed,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Relays `from` to `to`: bytes, a FIN as a FIN, a close without FIN as a reset. */
function pipeEnds(from: Socket, to: Socket): void {
  let ended = false;
  from.on("data", (chunk: Buffer) => {
    if (!to.write(chunk)) {
      from.pause();
      to.once("drain", () => from.resume());
    }
  });
  from.on("end", () => {
    ended = true;
    to.end();
  });
  from.on("close", () => {
    if (!ended) to.resetAndDestroy();
  });
}
