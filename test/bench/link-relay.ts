// A TCP relay that behaves like a bottleneck link, each direction on its own: bytes leave a
// bounded queue at a fixed rate (serialization time per segment), then arrive a fixed one-way
// delay later. When the queue is full the relay stops reading its source, so the sender's TCP
// sees backpressure as at a real bottleneck. delay-relay.ts only delays; this machine's kernel
// has no sch_netem or tbf to do either, so the link is emulated in userspace, on loopback.
//
// The relay ends TCP on both sides (a split connection, like a performance-enhancing proxy): the
// sender's congestion control never sees the emulated RTT. What a path's RTT and rate do to a
// protocol's own flow control (a window, credits sent back) is what this measures.
//
// By default each connection gets a link of its own. With `shared`, every connection through the
// relay shares one link each way (one rate, one queue), as the agent's tunnels (one TCP connection
// each) or a client's many connections to Dante share a real access link.

import { connect, createServer, type Server, type Socket } from "node:net";

/** What the link does to each direction. */
export type LinkShape = {
  /** Round-trip time: each direction delays by half of it. */
  rttMs: number;
  /** The bottleneck's rate, each way, in bytes per second. */
  rateBytesPerSecond: number;
  /**
   * Bytes a direction's queue holds, waiting to be serialized, before the relay stops reading
   * its source. Default: one bandwidth-delay product (rate × RTT, the classic router buffer)
   * plus DEFAULT_EXTRA_QUEUE_BYTES. What is already serialized and on the wire (rate × RTT / 2)
   * is not in the queue.
   */
  queueBytes?: number;
  /**
   * Charge each new connection the round trip of a TCP handshake over the link: the relay
   * accepts at once on loopback, so without this a client's first bytes leave one RTT early.
   */
  chargeTcpHandshake?: boolean;
  /** One link each way for every connection through the relay, rather than one per connection. */
  shared?: boolean;
};

export type LinkRelay = { port: number; queueBytes: number; close(): Promise<void> };

/** Above a BDP by default, so the queue never runs dry between a resume and the next read. */
export const DEFAULT_EXTRA_QUEUE_BYTES = 64 * 1024;
/** A smaller queue than this could empty while the relay waits for the source's next read (Node reads 64 KiB at a time). */
export const MIN_QUEUE_BYTES = 128 * 1024;
/** What a resumed Node socket reads at once: a shared link resumes only as many waiting sources as its room takes this much from each. */
const SOURCE_READ_BYTES = 64 * 1024;
/**
 * Reads are cut into segments of at most this many bytes, each serialized and delivered on its
 * own: a 64 KiB read takes 5 ms to serialize at 12.5 MB/s, and would otherwise arrive in one lump.
 */
const SEGMENT_BYTES = 16 * 1024;

/** The queue a link shape gets: the given one, or one BDP and DEFAULT_EXTRA_QUEUE_BYTES. */
export function linkQueueBytes(shape: LinkShape): number {
  const bdpBytes = Math.ceil((shape.rateBytesPerSecond * shape.rttMs) / 1000);
  return Math.max(MIN_QUEUE_BYTES, shape.queueBytes ?? bdpBytes + DEFAULT_EXTRA_QUEUE_BYTES);
}

/** What arrives at the far end, and when: bytes, the source's FIN, or its reset. */
type Delivery = { atMs: number; bytes: Buffer | "end" | "reset" };

/**
 * One direction's bottleneck: its rate and queue, for one connection or, shared, for all of a
 * relay's. Times are computed on a virtual clock, the moment the link is next free, not taken
 * from when timers fire: a timer that fires late delays a batch, but the rate holds, because the
 * next segment's departure follows the previous one's, not the timer.
 */
class Bottleneck {
  readonly #bytesPerMs: number;
  readonly #queueBytes: number;
  /** When the link finishes serializing what it has been given (performance.now() time). */
  #freeAtMs = 0;
  /** Sources paused on a full queue, in the order they filled it: resumed first come, first served. */
  readonly #waiting = new Set<LinkDirection>();
  #wakeTimer: NodeJS.Timeout | undefined;

  constructor(bytesPerSecond: number, queueBytes: number) {
    this.#bytesPerMs = bytesPerSecond / 1000;
    this.#queueBytes = queueBytes;
  }

  /** Queues `byteCount` bytes behind what the link already has; returns when they are serialized. */
  depart(byteCount: number): number {
    this.#freeAtMs = Math.max(performance.now(), this.#freeAtMs) + byteCount / this.#bytesPerMs;
    return this.#freeAtMs;
  }

  /** Bytes given to the link and not yet serialized, at this moment. */
  queuedBytes(): number {
    return Math.max(0, this.#freeAtMs - performance.now()) * this.#bytesPerMs;
  }

  hasRoom(): boolean {
    return this.queuedBytes() < this.#queueBytes;
  }

  /** Resumes `source` (its resumeIfRoom()) once the queue has room for its next read. */
  wait(source: LinkDirection): void {
    this.#waiting.add(source);
    this.#scheduleWake();
  }

  forget(source: LinkDirection): void {
    this.#waiting.delete(source);
    if (this.#waiting.size === 0) this.stop();
  }

  stop(): void {
    clearTimeout(this.#wakeTimer);
    this.#wakeTimer = undefined;
    this.#waiting.clear();
  }

  #scheduleWake(): void {
    if (this.#wakeTimer !== undefined) return;
    // The moment the queue is down to its bound again.
    const roomAtMs = this.#freeAtMs - this.#queueBytes / this.#bytesPerMs;
    this.#wakeTimer = setTimeout(() => this.#wake(), Math.max(1, Math.ceil(roomAtMs - performance.now())));
  }

  /**
   * Resumes as many waiting sources as the room takes one read from each: resuming all of a
   * shared link's sixty would let sixty reads (3.75 MiB) into a queue of one BDP.
   */
  #wake(): void {
    this.#wakeTimer = undefined;
    let roomBytes = this.#queueBytes - this.queuedBytes();
    for (const source of this.#waiting) {
      if (roomBytes <= 0) break;
      this.#waiting.delete(source);
      source.resumeIfRoom();
      roomBytes -= SOURCE_READ_BYTES;
    }
    if (this.#waiting.size > 0) this.#scheduleWake();
  }
}

/** One direction of one connection through the link: what it reads goes through `link`, then arrives one way later. */
class LinkDirection {
  readonly #from: Socket;
  readonly #to: Socket;
  readonly #link: Bottleneck;
  readonly #oneWayMs: number;
  readonly #queueBytes: number;
  /** In order of atMs: departures are in order and the delay is the same for all. */
  readonly #deliveries: Delivery[] = [];
  #deliveryTimer: NodeJS.Timeout | undefined;
  #holdTimer: NodeJS.Timeout | undefined;
  #sourceEnded = false;
  #stopped = false;

  constructor(from: Socket, to: Socket, link: Bottleneck, shape: LinkShape, queueBytes: number, holdUntilMs: number) {
    this.#from = from;
    this.#to = to;
    this.#link = link;
    this.#oneWayMs = shape.rttMs / 2;
    this.#queueBytes = queueBytes;
    from.on("data", (chunk: Buffer) => this.#take(chunk));
    // The handshake's charge: nothing is read before it is paid, so the first bytes leave then.
    const holdMs = holdUntilMs - performance.now();
    if (holdMs > 0) {
      from.pause();
      this.#holdTimer = setTimeout(() => this.resumeIfRoom(), Math.ceil(holdMs));
    }
    from.on("end", () => {
      this.#sourceEnded = true;
      this.#send("end");
    });
    // A source gone without its FIN lost bytes on the way: the far end gets a reset, never an end.
    from.on("close", () => {
      if (!this.#sourceEnded) this.#send("reset");
    });
    to.on("drain", () => this.resumeIfRoom());
  }

  /** Stops every timer and drops what is undelivered: both sockets are closed, or the relay is closing them. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#deliveryTimer);
    clearTimeout(this.#holdTimer);
    this.#link.forget(this);
    this.#deliveries.length = 0;
  }

  /** Resumes a paused source if the link's queue and the destination have room; else waits for the one that has none. */
  resumeIfRoom(): void {
    if (this.#stopped || !this.#from.isPaused() || this.#from.destroyed) return;
    if (!this.#link.hasRoom()) this.#link.wait(this);
    else if (this.#to.writableLength < this.#queueBytes) this.#from.resume();
    // else the destination is full: its 'drain' calls this again.
  }

  #take(chunk: Buffer): void {
    for (let offset = 0; offset < chunk.byteLength; offset += SEGMENT_BYTES) this.#send(chunk.subarray(offset, offset + SEGMENT_BYTES));
    // Room to read on: the queue below its bound, and the destination taking what arrives (else
    // its unsent bytes would pile up here unbounded). One reading of the clock: with two, the
    // queue could be full at the first and have room at the second, and the source would stay
    // paused with nothing to resume it.
    const linkFull = !this.#link.hasRoom();
    if (!linkFull && this.#to.writableLength < this.#queueBytes) return;
    this.#from.pause();
    if (linkFull) this.#link.wait(this);
    // else the destination is full: its 'drain' resumes this.
  }

  /** Queues `bytes` behind what the link already has: it departs once serialized, and arrives one way later. */
  #send(bytes: Buffer | "end" | "reset"): void {
    if (this.#stopped) return;
    const departsAtMs = this.#link.depart(typeof bytes === "string" ? 0 : bytes.byteLength);
    this.#deliveries.push({ atMs: departsAtMs + this.#oneWayMs, bytes });
    if (this.#deliveries.length === 1) this.#scheduleDelivery();
  }

  #scheduleDelivery(): void {
    const next = this.#deliveries[0];
    if (next === undefined) return;
    this.#deliveryTimer = setTimeout(() => this.#deliverDue(), Math.max(1, Math.ceil(next.atMs - performance.now())));
  }

  #deliverDue(): void {
    const nowMs = performance.now();
    let due = 0;
    while (due < this.#deliveries.length && (this.#deliveries[due]?.atMs ?? Infinity) <= nowMs) due++;
    const batch = this.#deliveries.splice(0, due);
    const to = this.#to;
    if (!to.destroyed) {
      to.cork();
      for (const { bytes } of batch) {
        if (bytes === "end") to.end();
        else if (bytes === "reset") to.resetAndDestroy();
        else to.write(bytes);
        if (to.destroyed) break;
      }
      if (!to.destroyed) to.uncork();
    }
    this.#scheduleDelivery();
  }
}

/** Listens on loopback and relays to 127.0.0.1:targetPort through a link of `shape`, each way. */
export async function startLinkRelay(targetPort: number, shape: LinkShape): Promise<LinkRelay> {
  if (!(shape.rateBytesPerSecond > 0) || !(shape.rttMs >= 0)) throw new RangeError(`link: rate ${shape.rateBytesPerSecond} B/s and RTT ${shape.rttMs} ms must be above 0 and at least 0`);
  const queueBytes = linkQueueBytes(shape);
  const sockets = new Set<Socket>();
  const directions = new Set<LinkDirection>();
  const newLinks = () => [new Bottleneck(shape.rateBytesPerSecond, queueBytes), new Bottleneck(shape.rateBytesPerSecond, queueBytes)] as const;
  const sharedLinks = shape.shared ? newLinks() : undefined;
  const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (inbound) => {
    const outbound = connect({ port: targetPort, host: "127.0.0.1", noDelay: true, allowHalfOpen: true });
    const holdUntilMs = shape.chargeTcpHandshake ? performance.now() + shape.rttMs : 0;
    const [up, down] = sharedLinks ?? newLinks();
    const pair = [new LinkDirection(inbound, outbound, up, shape, queueBytes, holdUntilMs), new LinkDirection(outbound, inbound, down, shape, queueBytes, 0)];
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      // Errors end in 'close' without an 'end', which the other direction passes on as a reset.
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    }
    for (const direction of pair) directions.add(direction);
    // Both closed: nothing more will arrive to deliver, and every delivery has been made or dropped.
    let open = 2;
    const onClosed = () => {
      if (--open > 0) return;
      for (const direction of pair) {
        direction.stop();
        directions.delete(direction);
      }
    };
    inbound.on("close", onClosed);
    outbound.on("close", onClosed);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    queueBytes,
    close: () =>
      new Promise<void>((resolve) => {
        for (const direction of directions) direction.stop();
        for (const link of sharedLinks ?? []) link.stop();
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
