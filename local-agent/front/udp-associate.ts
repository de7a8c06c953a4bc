// UDP ASSOCIATE (RFC 1928 section 7) for DNS: a UDP relay socket per association, whose
// datagrams to port 53 are answered through the edge's /dns endpoint. A Worker cannot send
// UDP, so other datagrams cannot leave from the edge and are dropped. DNS always goes to the
// edge, whatever the routing rules say: a lookup from this machine would leak the names.

import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { isIP, type Socket } from "node:net";
import type { AgentConfig } from "../config/config.ts";
import { edgeSetOf } from "../tunnel/dialer.ts";
import { dnsUrl, queryDnsOverEdge, type DnsOutcome } from "../tunnel/edge-dns.ts";
import type { Logger } from "../log.ts";
import { Reply, encodeBoundReply, encodeReply } from "./socks5.ts";
import { STANDALONE_FRAGMENT, UdpHeaderError, encodeUdpDatagram, parseUdpDatagram } from "./socks5-udp.ts";
import { AddressType, DNS_HEADER_BYTES, formatDestination, type Destination } from "../../worker/protocol/index.ts";

export type UdpAssociationRequest = {
  /** The TCP connection that asked; the association lives exactly as long as it does. */
  control: Socket;
  clientLabel: string;
  /** DST.ADDR/DST.PORT of the request: where the client says it will send from (zeros: unknown). */
  requested: Destination;
};

/** The one UDP port a client's datagrams may go to through the edge. */
export const DNS_PORT = 53;
/**
 * Queries one association may have at the edge at once; more are dropped, as a busy resolver
 * would. A stub resolver sends a handful at a time; 32 leaves room for a browser's burst.
 */
export const MAX_DNS_QUERIES_IN_FLIGHT = 32;

/** Answers a UDP ASSOCIATE request and relays the client's DNS datagrams until `control` closes. */
export function startUdpAssociation(request: UdpAssociationRequest, config: AgentConfig, log: Logger, onClosed: () => void): void {
  new UdpAssociation(request, config, log, onClosed).start();
}

type Counts = { fromClient: number; answered: number; dropped: number; overLimit: number; failed: number; foreign: number };

class UdpAssociation {
  readonly #control: Socket;
  readonly #label: string;
  readonly #clientAddress: string;
  /** The client's source port: fixed by the request, or by the first datagram accepted. */
  #clientPort: number | undefined;
  readonly #relay: UdpSocket;
  readonly #bindHost: string;
  readonly #dnsUrl: string;
  readonly #queries = new AbortController();
  readonly #startedAt = Date.now();
  readonly #counts: Counts = { fromClient: 0, answered: 0, dropped: 0, overLimit: 0, failed: 0, foreign: 0 };
  /** Destinations and failure reasons already logged: one line each per association, not per datagram. */
  readonly #logged = new Set<string>();
  #inFlight = 0;
  #relayBound = false;
  #closed = false;

  readonly #config: AgentConfig;
  readonly #log: Logger;
  readonly #onClosed: () => void;

  constructor(request: UdpAssociationRequest, config: AgentConfig, log: Logger, onClosed: () => void) {
    this.#config = config;
    this.#log = log;
    this.#onClosed = onClosed;
    this.#control = request.control;
    this.#label = `${request.clientLabel} UDP`;
    this.#clientAddress = unmapped(request.control.remoteAddress ?? "");
    this.#clientPort = request.requested.port === 0 ? undefined : request.requested.port;
    this.#dnsUrl = dnsUrl(config.tunnelUrl);
    // The relay listens where the client reached the agent: that address is one the client can
    // send to, which a wildcard or "localhost" --listen would not name.
    const bindHost = unmapped(request.control.localAddress ?? config.listenHost);
    this.#relay = createSocket(isIP(bindHost) === 6 ? "udp6" : "udp4");
    this.#bindHost = bindHost;
  }

  start(): void {
    this.#control.on("data", () => {
      // RFC 1928 gives the control connection nothing more to carry; what a client sends is ignored.
    });
    this.#control.on("end", () => this.#close("client closed the control connection"));
    this.#control.on("close", () => this.#close("control connection closed"));
    this.#control.on("error", (error: NodeJS.ErrnoException) => this.#close(`control connection failed: ${error.code ?? error.message}`));
    if (this.#control.destroyed) {
      this.#close("control connection closed before the relay was bound");
      return;
    }
    this.#relay.on("message", (message, remote) => this.#onDatagram(message, remote));
    this.#relay.on("error", (error: NodeJS.ErrnoException) => this.#close(`relay socket failed: ${error.code ?? error.message}`));
    this.#relay.bind(0, this.#bindHost, () => {
      if (this.#closed) return;
      this.#relayBound = true;
      const { address, port } = this.#relay.address();
      const bound: Destination = isIP(address) === 6 ? { type: AddressType.IPv6, host: address, port } : { type: AddressType.IPv4, host: address, port };
      this.#log.debug(`${this.#label} relay on ${formatDestination(bound)} for ${this.#clientAddress}`);
      this.#control.write(encodeBoundReply(bound));
    });
  }

  #onDatagram(message: Buffer, remote: RemoteInfo): void {
    if (this.#closed) return;
    if (unmapped(remote.address) !== this.#clientAddress || (this.#clientPort !== undefined && remote.port !== this.#clientPort)) {
      // RFC 1928 section 7: datagrams from anyone but the client are dropped, never answered.
      this.#counts.foreign++;
      return;
    }
    this.#clientPort ??= remote.port;
    this.#counts.fromClient++;
    let datagram;
    try {
      datagram = parseUdpDatagram(message);
    } catch (error) {
      if (!(error instanceof UdpHeaderError)) throw error;
      this.#drop(`malformed header: ${error.message}`);
      return;
    }
    const { destination, payload } = datagram;
    const target = formatDestination(destination);
    if (datagram.fragment !== STANDALONE_FRAGMENT) {
      this.#drop(`fragment ${datagram.fragment} to ${target}: fragmented datagrams are not reassembled`);
      return;
    }
    if (destination.port !== DNS_PORT) {
      this.#drop(`-> ${target} dropped: only DNS (port ${DNS_PORT}) can leave through the edge, which cannot send UDP`);
      return;
    }
    if (payload.byteLength < DNS_HEADER_BYTES) {
      this.#drop(`-> ${target} dropped: ${payload.byteLength} bytes is not a DNS message`);
      return;
    }
    if (this.#inFlight >= MAX_DNS_QUERIES_IN_FLIGHT) {
      this.#counts.overLimit++;
      this.#drop(`-> ${target} dropped: ${MAX_DNS_QUERIES_IN_FLIGHT} queries already at the edge`);
      return;
    }
    this.#inFlight++;
    void this.#askEdges(payload).then((outcome) => {
      this.#inFlight--;
      if (this.#closed) return;
      if ("failure" in outcome) {
        this.#counts.failed++;
        this.#logOnce(`failure ${outcome.failure}`, `${this.#label} -> ${target} DNS query failed: ${outcome.failure}`);
        return;
      }
      this.#relay.send(encodeUdpDatagram(destination, outcome.answer), remote.port, remote.address, (error) => {
        if (error) this.#drop(`answer from ${target} not sent: ${(error as NodeJS.ErrnoException).code ?? error.message}`);
        else this.#counts.answered++;
      });
    });
  }

  /**
   * Asks the edges for `query`, best first (EdgeSet.inOrder: healthy, least loaded), until one
   * answers: a query is idempotent, so one edge's failure costs only a request to the next. An
   * edge nothing answers at counts as failing (its pool's backoff). A query out of time, or an
   * association closed, goes no further.
   */
  async #askEdges(query: Uint8Array): Promise<DnsOutcome> {
    const edges = edgeSetOf(this.#config)?.inOrder();
    if (!edges) return queryDnsOverEdge(this.#dnsUrl, this.#config.token, query, this.#queries.signal);
    let outcome: DnsOutcome = { failure: "no edge", kind: "unreachable" };
    for (const edge of edges) {
      outcome = await queryDnsOverEdge(dnsUrl(edge.tunnelUrl), this.#config.token, query, this.#queries.signal);
      if ("answer" in outcome) return outcome;
      if (outcome.kind === "unreachable") edge.pool.noteFailure(outcome.failure, "unreachable", "a DNS query failed");
      if (outcome.kind === "timeout" || outcome.kind === "aborted") return outcome;
    }
    return outcome;
  }

  /** Counts a dropped datagram and logs its reason the first time it occurs. */
  #drop(reason: string): void {
    this.#counts.dropped++;
    this.#logOnce(reason, `${this.#label} ${reason}`);
  }

  #logOnce(key: string, line: string): void {
    if (this.#logged.has(key)) return;
    this.#logged.add(key);
    this.#log.info(line);
  }

  /** Ends the association: every path out comes here, once. */
  #close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queries.abort();
    try {
      this.#relay.close();
    } catch {
      // already closed by a failed bind
    }
    if (!this.#relayBound && this.#control.writable) {
      // The bind failed: the client still waits for its reply.
      this.#control.end(encodeReply(Reply.GeneralFailure));
    } else if (!this.#control.destroyed) {
      this.#control.destroy();
    }
    const { fromClient, answered, dropped, overLimit, failed, foreign } = this.#counts;
    this.#log.info(
      `${this.#label} association ended (${reason}): ${fromClient} datagrams from the client, ${answered} DNS answers, ` +
        `${failed} failed at the edge, ${dropped} dropped${overLimit > 0 ? ` (${overLimit} over the in-flight limit)` : ""}, ` +
        `${foreign} from other sources ignored, ${Date.now() - this.#startedAt} ms`,
    );
    this.#onClosed();
  }
}

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d, from a dual-stack socket) as the IPv4 it is. */
function unmapped(address: string): string {
  return address.startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}
