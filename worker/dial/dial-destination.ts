// How the edge reaches a destination: directly with connect(), and when that is refused, finds
// out why before answering (docs/protocol.md §10, "Destinations on Cloudflare's network"): a name
// that does not resolve is HostUnreachable; a destination on Cloudflare's network goes through
// the fallbacks configured at the edge (upstream proxy, relay, NAT64) or is answered
// OnCloudflare; anything else is a refusal. What it learns of a name is kept for the isolate.

import type { EdgeConfig } from "../config.ts";
import { BLOCKED_PORTS, errorMessage, statusForConnectError } from "../connect-error.ts";
import { AddressType, StreamStatus, formatDestination, parseIPv4, parseIPv6, type Destination } from "../protocol/index.ts";
import { ipToBytes } from "./cidr.ts";
import { isCloudflareAddress } from "./cloudflare-ranges.ts";
import { isDialRefusal, openTcp, type TcpTarget } from "./emulation.ts";
import { synthesizeNat64 } from "./nat64.ts";
import { MAX_NAME_TTL_SECONDS } from "./name-cache.ts";
import { relayTarget } from "./relay.ts";
import { isolateNames, resolveName } from "./resolver.ts";
import { UpstreamError, upstreamHandshake } from "./upstream-handshake.ts";

/** An open connection to the destination (or to a fallback that carries it). */
export type Dialed = {
  ok: true;
  socket: Socket;
  /** Bytes an upstream proxy sent past its reply: the destination's first bytes. */
  leftover: Uint8Array;
  /** How the connection was made, for the edge's log line: "direct", "via upstream socks5://h:p", ... */
  route: string;
};
/** A dial that failed, with the status the agent hears. */
export type DialFailure = {
  ok: false;
  status: StreamStatus;
  reason: string;
  /** For OnCloudflare: how many seconds the verdict holds (the DNS answer's TTL). */
  verdictSeconds: number;
};
export type DialOutcome = Dialed | DialFailure;

/** NAT64 is tried with this many of a name's IPv4 addresses at most: each try is a subrequest. */
const MAX_NAT64_ADDRESSES = 2;

/**
 * The sockets one dial has opened: abort() closes every one (a timeout or a reset while
 * dialing), which also ends an upstream handshake waiting on its reply.
 */
export class DialAttempt {
  readonly #config: EdgeConfig;
  readonly #sockets = new Set<Socket>();
  #aborted = false;

  constructor(config: EdgeConfig) {
    this.#config = config;
  }

  /** Opens `target` and waits until it is open; resolves with the socket or the error. */
  async open(target: TcpTarget): Promise<{ socket: Socket } | { error: unknown }> {
    let socket: Socket;
    try {
      socket = await openTcp(target, this.#config);
    } catch (error) {
      return { error };
    }
    this.#sockets.add(socket);
    socket.closed.catch(() => {}); // failures surface through opened, reads and writes
    if (this.#aborted) void socket.close().catch(() => {});
    try {
      await socket.opened;
      return { socket };
    } catch (error) {
      this.#sockets.delete(socket);
      void socket.close().catch(() => {});
      return { error };
    }
  }

  /** The dial's result is `kept`: every other socket it opened is closed. */
  keep(kept: Socket): void {
    for (const socket of this.#sockets) if (socket !== kept) void socket.close().catch(() => {});
    this.#sockets.clear();
  }

  /** Closes every socket the dial opened, and any it opens from now on. */
  abort(): void {
    this.#aborted = true;
    for (const socket of this.#sockets) void socket.close().catch(() => {});
    this.#sockets.clear();
  }
}

/** Reaches `destination` directly or through the edge's fallbacks; never throws. */
export async function dialDestination(destination: Destination, config: EdgeConfig, attempt: DialAttempt): Promise<DialOutcome> {
  if (BLOCKED_PORTS.has(destination.port)) return failure(StreamStatus.NotAllowed, `Cloudflare Workers may not connect to port ${destination.port}`);
  if (config.upstream && config.upstreamFor === "all") return viaUpstream(destination, config, attempt);
  const { host, port } = destination;
  const literal = destination.type === AddressType.Domain ? undefined : ipToBytes(host);
  const onCloudflare = (addresses: number[]) => isCloudflareAddress(addresses, config.emulatedCloudflareCidrs);
  // An IP literal inside Cloudflare's ranges, or a name already known to resolve there, goes to
  // the fallbacks without a dial production would refuse.
  if (literal && onCloudflare(literal)) return cloudflareFallbacks(destination, [host], MAX_NAME_TTL_SECONDS, config, attempt);
  if (!literal) {
    const known = isolateNames.get(host);
    if (known && known.addresses.some((address) => onCloudflare(ipToBytes(address) ?? []))) {
      return cloudflareFallbacks(destination, known.addresses, isolateNames.remainingSeconds(known), config, attempt);
    }
  }
  const direct = await attempt.open({ host, port });
  if ("socket" in direct) return opened(direct.socket, "direct", attempt);
  const message = errorMessage(direct.error);
  if (!isDialRefusal(direct.error) || literal) return failure(statusForConnectError(direct.error), message);
  // A refused name: it does not resolve, it is on Cloudflare, or its port is closed; production's
  // connect() says the same for all three, so the edge asks the resolver.
  const resolution = await resolveName(host, config);
  if (resolution.kind === "failed") return failure(StreamStatus.ConnectionRefused, `${message} (the edge could not tell why: ${resolution.reason})`);
  const { addresses } = resolution.entry;
  if (addresses.length === 0) return failure(StreamStatus.HostUnreachable, `${host} does not resolve (no A or AAAA record)`);
  if (addresses.some((address) => onCloudflare(ipToBytes(address) ?? []))) {
    return cloudflareFallbacks(destination, addresses, isolateNames.remainingSeconds(resolution.entry), config, attempt);
  }
  return failure(StreamStatus.ConnectionRefused, message);
}

/**
 * A destination on Cloudflare's network: the upstream proxy, then each relay, then NAT64, as
 * configured; the first that opens carries the stream. None configured: OnCloudflare. All failed:
 * the first failure's status (the user's preferred path), with every attempt in the reason.
 */
async function cloudflareFallbacks(destination: Destination, addresses: string[], verdictSeconds: number, config: EdgeConfig, attempt: DialAttempt): Promise<DialOutcome> {
  const failures: DialFailure[] = [];
  const shown = addresses[0] ?? destination.host;
  if (config.upstream) {
    // The upstream is given the address the edge classified, so it dials what was judged.
    const outcome = await viaUpstream(addressDestination(shown, destination), config, attempt);
    if (outcome.ok) return outcome;
    failures.push(outcome);
  }
  for (const relay of config.cloudflareRelays) {
    const target = relayTarget(relay, destination.port);
    if (!target) break; // a port Cloudflare's proxy does not serve: no relay can carry it
    const outcome = await viaTarget(target, `via relay ${relay.label}`, attempt);
    if (outcome.ok) return outcome;
    failures.push(outcome);
  }
  if (config.nat64Prefix) {
    const prefix = config.nat64Prefix;
    for (const ipv4 of addresses.filter((address) => parseIPv4(address)).slice(0, MAX_NAT64_ADDRESSES)) {
      const host = synthesizeNat64(prefix, ipv4);
      const outcome = await viaTarget({ host, port: destination.port }, `via NAT64 [${host}]`, attempt);
      if (outcome.ok) return outcome;
      failures.push(outcome);
    }
  }
  const where = `${formatDestination(destination)} is on Cloudflare's network (${shown})`;
  const first = failures[0];
  if (!first) return { ok: false, status: StreamStatus.OnCloudflare, reason: `${where}, which a Worker cannot connect to, and no fallback at the edge applies`, verdictSeconds };
  return failure(first.status, `${where}; ${failures.map((each) => each.reason).join("; ")}`);
}

async function viaTarget(target: TcpTarget, route: string, attempt: DialAttempt): Promise<DialOutcome> {
  const result = await attempt.open(target);
  if ("socket" in result) return opened(result.socket, route, attempt);
  return failure(statusForConnectError(result.error), `${route}: ${errorMessage(result.error)}`);
}

async function viaUpstream(destination: Destination, config: EdgeConfig, attempt: DialAttempt): Promise<DialOutcome> {
  const proxy = config.upstream;
  if (!proxy) return failure(StreamStatus.GeneralFailure, "no upstream proxy is configured");
  const route = `via upstream ${proxy.label}`;
  const result = await attempt.open({ host: proxy.host, port: proxy.port });
  if ("error" in result) return failure(StreamStatus.GeneralFailure, `upstream ${proxy.label} unreachable: ${errorMessage(result.error)}`);
  try {
    const { leftover } = await upstreamHandshake(result.socket, proxy, destination);
    attempt.keep(result.socket);
    return { ok: true, socket: result.socket, leftover, route };
  } catch (error) {
    void result.socket.close().catch(() => {});
    if (error instanceof UpstreamError) return failure(error.status, error.message);
    return failure(StreamStatus.GeneralFailure, `upstream ${proxy.label} failed: ${errorMessage(error)}`);
  }
}

function opened(socket: Socket, route: string, attempt: DialAttempt): Dialed {
  attempt.keep(socket);
  return { ok: true, socket, leftover: new Uint8Array(0), route };
}

function failure(status: StreamStatus, reason: string): DialFailure {
  return { ok: false, status, reason, verdictSeconds: 0 };
}

/** `address` (an IP literal) as a destination on `original`'s port. */
function addressDestination(address: string, original: Destination): Destination {
  if (parseIPv4(address)) return { type: AddressType.IPv4, host: address, port: original.port };
  if (parseIPv6(address)) return { type: AddressType.IPv6, host: address, port: original.port };
  return original;
}
