// The warm pool: tunnels to the edge opened before any client asks for them, so a new
// connection's OPEN leaves at once instead of after the TCP, TLS and WebSocket handshakes.
//
// Bounded (config.poolSize spares, opened at most that many at a time), renewed before the
// edge's POOLED_OPEN_TIMEOUT_MS could close one, and refilled with exponential backoff while
// the edge cannot be reached, so a dead edge costs a few requests a minute, not a storm.
//
// Two caps: an edge that answered (refused, or accepted and dropped) costs a Worker request per
// attempt and is retried at most once a minute; one that never answered (connection refused, no
// route, DNS failure, handshake timeout) cost nothing but a local connect, and is retried at
// least every 5 s, so the pool is warm again within seconds of the edge's return however long
// it was gone.
//
// Tunnels also come back: a stream that is over from the agent's side returns its tunnel
// (giveBack), which waits for the next stream until REUSED_MAX_IDLE_MS, before the edge's
// NEXT_OPEN_TIMEOUT_MS, and is retired after config.maxStreamsPerTunnel streams, inside the
// per-invocation limits of the Worker's plan. A taken-back tunnel may still bring frames the edge
// sent its last stream before it heard that stream was over: those are dropped, never read as
// the next stream's. While no client has connected for IDLE_SHRINK_MS the pool lets its spares
// lapse instead of renewing them, and refills on the next connection.
//
// The pool is also its edge's health (edge-set.ts): failing from the first failed attempt (a
// spare's, or a connection's tunnel that failed before OPENED: noteFailure) until a spare has
// lived minHealthyLifetimeMs or the edge answers a connection's OPEN (noteAnswered). The retry
// wait is the edge's backoff; one of several edges, when its wait is over and no spare is missing
// (the pool is full, or --pool-size 0), gets one tunnel attempt anyway: its probe.

import WebSocket from "ws";
import type { AgentConfig } from "../config/config.ts";
import { openEdgeSocket, whenRefused } from "./edge-socket.ts";
import type { Logger } from "../log.ts";
import { pingIfDue, roundTripOf, tunnelVersion } from "./tunnel-link.ts";
import { CloseCode, FrameType, POOLED_HEADER, POOLED_MAX_IDLE_MS, ProtocolError, REUSED_MAX_IDLE_MS, decodeFrame, encodePong, type Frame } from "../../worker/protocol/index.ts";

/** First wait after a failed spare; it doubles with each failure in a row. */
const FIRST_RETRY_MS = 1_000;
/** Longest wait between attempts while the edge keeps answering with a failure. */
const MAX_RETRY_MS = 60_000;
/**
 * Longest wait between attempts while the edge does not answer at all: the bound on how long
 * the pool stays empty after an unreachable edge comes back (measured in
 * test/e2e/edge-failures.test.ts: full again ~1 s after /healthz answers).
 */
const MAX_UNREACHABLE_RETRY_MS = 5_000;
/**
 * A spare the edge closes sooner than this after opening it counts as a failure (an edge that
 * accepts and drops at once would otherwise be retried in a tight loop).
 */
const MIN_HEALTHY_LIFETIME_MS = 1_000;
/**
 * After this long with no client, spares are not renewed: an idle agent costs no Worker
 * requests (4 spares renewed every 4 minutes would cost ~1,440 a day), and its next connection
 * opens a tunnel of its own while the pool refills behind it.
 */
const IDLE_SHRINK_MS = 15 * 60_000;
/**
 * Taken-back tunnels kept beyond the pool size: enough for a page's burst of connections. Fewer
 * cost requests: with 8, bursts of 10 came back to a full pool and 2 of every 10 were closed,
 * then reopened as spares: 164 tunnels per 1,000 connections in test/e2e/tunnel-reuse.test.ts,
 * 73 with 16 (at --max-streams-per-tunnel 16).
 */
const MAX_EXTRA_TAKEN_BACK = 16;
/**
 * Wait between a take() and the refill it calls for. A spare's upgrade is a TCP (and TLS)
 * handshake on the agent's thread and a Worker request at the edge: started at once, it ran
 * beside the taking stream's dial and first exchange, and on loopback cost that stream ~2.3 ms
 * of CONNECT→reply and ~2.4 ms of its first exchange (npm run bench:first, issue 10). A burst
 * that empties the pool sooner opens tunnels of its own, as it would while an immediate refill
 * was still handshaking.
 */
const REFILL_DELAY_MS = 25;

/** Frames the edge may still send for a stream after the agent has seen it end; any other breaks the protocol. */
const STALE_FRAME_TYPES: ReadonlySet<number> = new Set([FrameType.Data, FrameType.Window, FrameType.Grow, FrameType.End, FrameType.Reset]);

/** Whether `frame`, arriving on a tunnel whose stream is over, may be a leftover of that stream. */
export function isStaleFrame(frame: Frame): boolean {
  return STALE_FRAME_TYPES.has(frame.type);
}

/**
 * What a message on a tunnel waiting in the pool breaks, or undefined when it may be dropped: a
 * message that does not decode is 4400 as on any tunnel; a frame is 4409 unless `leftoversExpected`
 * (the tunnel carried a stream) and it is one of that stream's leftovers.
 */
function idleTunnelFault(socket: WebSocket, data: Buffer, isBinary: boolean, leftoversExpected: boolean): ProtocolError | undefined {
  if (!isBinary) return new ProtocolError(CloseCode.MalformedFrame, "text messages are not part of the protocol");
  let frame: Frame;
  try {
    frame = decodeFrame(data, tunnelVersion(socket));
  } catch (error) {
    if (error instanceof ProtocolError) return error;
    throw error;
  }
  // Tunnel-wide (v4), idle or not: the edge PINGs a fresh spare for its round trip, and a PONG
  // (to the spare's own PING, or to one a finished stream sent) is a sample all the same.
  if (frame.type === FrameType.Ping) {
    socket.send(encodePong(frame.id));
    return undefined;
  }
  if (frame.type === FrameType.Pong) {
    roundTripOf(socket).pong(frame.id, performance.now());
    return undefined;
  }
  if (leftoversExpected && isStaleFrame(frame)) return undefined;
  return new ProtocolError(CloseCode.UnexpectedFrame, "edge sent a frame to an idle tunnel");
}

type Spare = {
  socket: WebSocket;
  openedAtMs: number;
  retireTimer: ReturnType<typeof setTimeout>;
  /** Fires once the spare has lived minHealthyLifetimeMs: only then does the backoff start over. */
  healthyTimer: ReturnType<typeof setTimeout> | undefined;
  /** Streams the tunnel has carried: 0 for a spare the pool opened, more for one taken back. */
  streamsCarried: number;
  detach: () => void;
};

/**
 * The pool's clock: the protocol's and this module's defaults, shortened by tests. The optional
 * ones, when absent, are their defaults; maxUnreachableRetryMs never beyond maxRetryMs.
 */
export type PoolTimings = {
  maxIdleMs: number;
  firstRetryMs: number;
  maxRetryMs: number;
  maxUnreachableRetryMs?: number;
  minHealthyLifetimeMs: number;
  reusedMaxIdleMs?: number;
  idleShrinkMs?: number;
  refillDelayMs?: number;
};

/** How a tunnel failed: the edge answered (each attempt a Worker request), or nothing answered. */
export type FailureKind = "answered" | "unreachable";

/** The edge a pool's tunnels go to, and how its log lines name it. */
export type PoolEdge = {
  tunnelUrl: string;
  edgeLabel: string;
  /** Other edges take new connections while this one fails (--edge given more than once): its lines name it and say so. */
  hasAlternatives: boolean;
};

/** What the pool knows of its edge's health. */
export type PoolHealth = {
  /** No failure since the last spare that lived minHealthyLifetimeMs or the last OPEN the edge answered. */
  healthy: boolean;
  /** Failed attempts in a row (spares, and connections' tunnels, that failed together count once). */
  consecutiveFailures: number;
  /** Date.now() of the next attempt, while the pool waits out its backoff. */
  nextRetryAtMs: number | undefined;
};

const DEFAULT_TIMINGS: PoolTimings = {
  maxIdleMs: POOLED_MAX_IDLE_MS,
  firstRetryMs: FIRST_RETRY_MS,
  maxRetryMs: MAX_RETRY_MS,
  minHealthyLifetimeMs: MIN_HEALTHY_LIFETIME_MS,
};

export class TunnelPool {
  readonly #config: AgentConfig;
  readonly #log: Logger;
  readonly #timings: Required<PoolTimings>;
  readonly #edge: PoolEdge;
  /** How the log lines name the pool: "warm pool" for the one edge, the edge itself for one of several. */
  readonly #name: string;
  readonly #ready: Spare[] = [];
  /** Spares whose upgrade is under way. */
  #connecting = new Set<WebSocket>();
  #failuresInARow = 0;
  /** Date.now() of the first failure of the current run of failures, for the recovery line. */
  #failingSinceMs = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Date.now() at which #retryTimer fires. */
  #retryAtMs: number | undefined;
  /** The refill a take() asked for, once the taking stream's open is past. */
  #refillTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** Date.now() of the last take(): the pool shrinks once it is idleShrinkMs old. */
  #lastTakeMs = Date.now();
  /** Spares have lapsed for want of clients: nothing is refilled until the next take(). */
  #idle = false;
  /** Streams each tunnel out of the pool has carried before the one it carries now. */
  readonly #carried = new WeakMap<WebSocket, number>();

  constructor(config: AgentConfig, log: Logger, timings: PoolTimings = DEFAULT_TIMINGS, edge?: PoolEdge) {
    this.#config = config;
    this.#log = log;
    this.#edge = edge ?? { tunnelUrl: config.tunnelUrl, edgeLabel: config.edgeLabel, hasAlternatives: false };
    this.#name = this.#edge.hasAlternatives ? `edge ${this.#edge.edgeLabel}` : "warm pool";
    this.#timings = {
      reusedMaxIdleMs: REUSED_MAX_IDLE_MS,
      idleShrinkMs: IDLE_SHRINK_MS,
      refillDelayMs: REFILL_DELAY_MS,
      ...timings,
      maxUnreachableRetryMs: timings.maxUnreachableRetryMs ?? Math.min(MAX_UNREACHABLE_RETRY_MS, timings.maxRetryMs),
    };
  }

  /** Tunnels open and waiting for an OPEN. */
  get readyCount(): number {
    return this.#ready.length;
  }

  /** The edge this pool's tunnels go to. */
  get edge(): PoolEdge {
    return this.#edge;
  }

  /** The edge's health as this pool has seen it. */
  get health(): PoolHealth {
    return { healthy: this.#failuresInARow === 0, consecutiveFailures: this.#failuresInARow, nextRetryAtMs: this.#retryAtMs };
  }

  /** Opens spares up to the pool size. */
  start(): void {
    this.#fill();
  }

  /**
   * A client connection has started, on this edge or another: the pool does not shrink for want
   * of clients, refills if it had, and a failing edge with no attempt under way is probed.
   */
  noteClient(): void {
    this.#lastTakeMs = Date.now();
    if (this.#idle) {
      this.#idle = false;
      this.#fill();
    }
    this.#probeIfFailing();
  }

  /**
   * A connection's tunnel to this edge failed before OPENED, for the edge's sake (refused,
   * unreachable, closed): a failure like a spare's, counted once with those it fails together with.
   */
  noteFailure(cause: string, kind: FailureKind, what = "a connection's tunnel failed"): void {
    this.#failed(cause, kind, what);
  }

  /**
   * The edge answered a connection's OPEN (with any status): it is back, so the pool refills now
   * rather than after its wait, and it is well. Only the one edge's pool, when it has spares to
   * reopen, waits for one to live before it says so, as it always has: nothing waits on the verdict.
   */
  noteAnswered(): void {
    if (this.#failuresInARow === 0) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#retryAtMs = undefined;
    this.#fill();
    if (this.#edge.hasAlternatives || this.#connecting.size === 0) this.#healthy("connections open");
  }

  /**
   * An open tunnel the edge is waiting on, now the caller's alone (a replacement is being
   * opened), or undefined when none is ready.
   */
  take(): WebSocket | undefined {
    this.#lastTakeMs = Date.now();
    this.#idle = false;
    let taken: WebSocket | undefined;
    while (taken === undefined && this.#ready.length > 0) {
      // A taken-back tunnel first, the longest waiting of them: it lapses soonest, and a fresh
      // spare keeps for minutes.
      const index = this.#ready.findIndex((candidate) => candidate.streamsCarried > 0);
      const [spare] = this.#ready.splice(Math.max(index, 0), 1) as [Spare];
      clearTimeout(spare.retireTimer);
      // The caller's now: whether it lives on is no longer the pool's evidence about the edge.
      clearTimeout(spare.healthyTimer);
      spare.detach();
      if (spare.socket.readyState === WebSocket.OPEN) {
        taken = spare.socket;
        this.#carried.set(taken, spare.streamsCarried);
      } else spare.socket.terminate();
    }
    if (this.#timings.refillDelayMs === 0) this.#fill();
    else {
      this.#refillTimer ??= setTimeout(() => {
        this.#refillTimer = undefined;
        this.#fill();
      }, this.#timings.refillDelayMs);
    }
    return taken;
  }

  /** Streams `socket`, a tunnel from take(), carried before its current one: 0 for a fresh spare. */
  streamsCarriedBefore(socket: WebSocket): number {
    return this.#carried.get(socket) ?? 0;
  }

  /**
   * Takes back a tunnel whose stream is over from the agent's side (END sent and received, a
   * RESET sent or received, or a failed OPENED received) and has carried `streamsCarried` streams,
   * for the next stream. False when the caller should close it instead: it has carried
   * config.maxStreamsPerTunnel, it is not open, the pool is closing or holds enough.
   */
  giveBack(socket: WebSocket, streamsCarried: number): boolean {
    if (this.#closed || socket.readyState !== WebSocket.OPEN || streamsCarried >= this.#config.maxStreamsPerTunnel) return false;
    if (this.#ready.length >= this.#config.poolSize + MAX_EXTRA_TAKEN_BACK) return false;
    this.#carried.delete(socket);
    let spare: Spare | undefined;
    // Leftovers of the stream just over may still arrive; any other frame breaks the protocol,
    // and a message that does not decode is 4400 here as on any tunnel.
    const onMessage = (data: Buffer, isBinary: boolean) => this.#onIdleMessage(socket, data, isBinary, true);
    const onClose = () => {
      const index = spare === undefined ? -1 : this.#ready.indexOf(spare);
      if (index < 0 || spare === undefined) return;
      this.#ready.splice(index, 1);
      clearTimeout(spare.retireTimer);
      this.#fill();
    };
    const detach = () => {
      socket.off("message", onMessage);
      socket.off("close", onClose);
    };
    socket.on("message", onMessage);
    socket.on("close", onClose);
    spare = {
      socket,
      openedAtMs: Date.now(),
      healthyTimer: undefined,
      streamsCarried,
      // Before the edge's NEXT_OPEN_TIMEOUT_MS could close it under a stream being opened.
      retireTimer: setTimeout(() => this.#retire(socket, "idle after its stream"), this.#timings.reusedMaxIdleMs),
      detach,
    };
    this.#ready.push(spare);
    return true;
  }

  /** Closes every spare and stops refilling. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#retryAtMs = undefined;
    clearTimeout(this.#refillTimer);
    for (const spare of this.#ready.splice(0)) {
      clearTimeout(spare.retireTimer);
      clearTimeout(spare.healthyTimer);
      spare.detach();
      spare.socket.close(CloseCode.Normal, "agent closing");
    }
    for (const socket of this.#connecting) socket.terminate();
    this.#connecting.clear();
  }

  #fill(): void {
    if (this.#closed || this.#idle || this.#retryTimer !== undefined) return;
    while (this.#ready.length + this.#connecting.size < this.#config.poolSize) this.#openSpare();
  }

  /**
   * While the edge is failing, its backoff is over and nothing under way will tell (no attempt, no
   * spare living out minHealthyLifetimeMs), opens one tunnel anyway: the probe that lets an edge
   * no connection goes to rejoin (a full pool opens nothing; with --pool-size 0 the only attempt).
   */
  #probeIfFailing(): void {
    // The one edge gets every connection anyway: their opens tell, and a probe would only cost a request.
    if (!this.#edge.hasAlternatives) return;
    if (this.#closed || this.#idle || this.#retryTimer !== undefined || this.#failuresInARow === 0) return;
    if (this.#connecting.size > 0 || this.#ready.some((spare) => spare.healthyTimer !== undefined)) return;
    this.#openSpare();
  }

  #openSpare(): void {
    const socket = openEdgeSocket(this.#config, { [POOLED_HEADER]: "1" }, { tunnelUrl: this.#edge.tunnelUrl });
    this.#connecting.add(socket);
    let why = "";
    /** The edge sent an HTTP answer to the upgrade (101 or a refusal): this attempt reached it. */
    let answered = false;
    let spare: Spare | undefined;
    const onOpen = () => {
      this.#connecting.delete(socket);
      if (this.#closed) {
        socket.close(CloseCode.Normal, "agent closing");
        return;
      }
      // An open alone does not reset the backoff: an edge that accepts and drops at once would
      // otherwise be retried every firstRetryMs forever, each attempt a Worker request.
      const healthyTimer = setTimeout(() => {
        if (spare) spare.healthyTimer = undefined;
        this.#healthy("spares open");
      }, this.#timings.minHealthyLifetimeMs);
      healthyTimer.unref();
      spare = {
        socket,
        openedAtMs: Date.now(),
        healthyTimer,
        streamsCarried: 0,
        // Renewed before the edge's POOLED_OPEN_TIMEOUT_MS: the replacement opens as this one
        // closes, unless no client has come for idleShrinkMs: then it lapses.
        retireTimer: setTimeout(() => this.#renew(socket), this.#timings.maxIdleMs),
        detach,
      };
      this.#ready.push(spare);
      // The round trip of an idle tunnel (v4): the one sample no DATA queues in front of, which
      // the windows of its streams then size to.
      pingIfDue(socket);
      this.#log.debug(`${this.#name}: ${this.#ready.length} of ${this.#config.poolSize} spares ready`);
    };
    const onError = (error: Error) => {
      why ||= error.message;
    };
    // A spare carries no stream: any frame on it is a broken edge.
    const onMessage = (data: Buffer, isBinary: boolean) => this.#onIdleMessage(socket, data, isBinary, false);
    const onClose = (code: number, reason: Buffer) => {
      const cause = why || `closed by the edge (${code}${reason.byteLength > 0 ? ` ${reason.toString("utf8")}` : ""})`;
      if (this.#connecting.delete(socket)) {
        this.#failed(cause, answered ? "answered" : "unreachable");
        return;
      }
      const index = spare === undefined ? -1 : this.#ready.indexOf(spare);
      if (index < 0 || spare === undefined) return; // taken or retired: no longer ours
      this.#ready.splice(index, 1);
      clearTimeout(spare.retireTimer);
      clearTimeout(spare.healthyTimer);
      if (Date.now() - spare.openedAtMs < this.#timings.minHealthyLifetimeMs) this.#failed(cause, "answered");
      else this.#fill();
    };
    const onUpgrade = () => {
      answered = true;
    };
    const detach = () => {
      socket.off("upgrade", onUpgrade);
      socket.off("open", onOpen);
      socket.off("error", onError);
      socket.off("message", onMessage);
      socket.off("close", onClose);
    };
    socket.on("upgrade", onUpgrade);
    socket.on("open", onOpen);
    socket.on("error", onError);
    socket.on("message", onMessage);
    socket.on("close", onClose);
    // After a refusal ws may never emit close: the refusal itself ends the attempt.
    whenRefused(socket, (status, explanation) => {
      // ws emits no close after a refusal: end it here, or its keepalive interval and listeners stay forever.
      socket.terminate();
      if (this.#connecting.delete(socket)) this.#failed(`edge refused the tunnel: HTTP ${status} ${explanation}`.trim(), "answered");
    });
  }

  /** A message on `socket` while it waits in the pool: dropped when a leftover, else the tunnel is closed with what it broke. */
  #onIdleMessage(socket: WebSocket, data: Buffer, isBinary: boolean, leftoversExpected: boolean): void {
    const fault = idleTunnelFault(socket, data, isBinary, leftoversExpected);
    if (fault) this.#retire(socket, fault.message, fault.closeCode);
  }

  /** An unused spare's time is up: renewed, or let lapse while no client comes. */
  #renew(socket: WebSocket): void {
    if (!this.#idle && Date.now() - this.#lastTakeMs >= this.#timings.idleShrinkMs) {
      this.#idle = true;
      this.#log.debug(`${this.#name}: no client for ${Math.round((Date.now() - this.#lastTakeMs) / 60_000)} min; spares lapse until the next connection`);
    }
    this.#retire(socket, this.#idle ? "idle" : "renewed");
  }

  #retire(socket: WebSocket, reason: string, code: number = CloseCode.Normal): void {
    const index = this.#ready.findIndex((spare) => spare.socket === socket);
    if (index < 0) return;
    const [spare] = this.#ready.splice(index, 1);
    if (spare) {
      clearTimeout(spare.retireTimer);
      clearTimeout(spare.healthyTimer);
      spare.detach();
    }
    socket.close(code, reason);
    this.#fill();
  }

  /**
   * A spare has lived minHealthyLifetimeMs, or the edge answered a connection's OPEN (`how` says
   * which): the backoff starts over, and an outage is over.
   */
  #healthy(how: string): void {
    if (this.#failuresInARow === 0) return;
    // One line per outage, as the first failure was its one warning: the attempts in between were debug.
    const seconds = ((Date.now() - this.#failingSinceMs) / 1000).toFixed(1);
    const rejoins = this.#edge.hasAlternatives ? "; it takes new connections again" : "";
    this.#log.info(`${this.#name}: ${how} again after ${this.#failuresInARow} failed attempt${this.#failuresInARow === 1 ? "" : "s"} in ${seconds} s${rejoins}`);
    this.#failuresInARow = 0;
  }

  /** A tunnel could not be opened: wait, doubling the wait with each failure in a row up to the cap of its kind, then refill (or probe). */
  #failed(cause: string, kind: FailureKind, what = "cannot open a spare tunnel"): void {
    // Spares that fail together (an edge down while several were opening) count as one failure.
    if (this.#closed || this.#retryTimer !== undefined) return;
    this.#failuresInARow++;
    if (this.#failuresInARow === 1) this.#failingSinceMs = Date.now();
    const capMs = kind === "answered" ? this.#timings.maxRetryMs : this.#timings.maxUnreachableRetryMs;
    const waitMs = Math.min(capMs, this.#timings.firstRetryMs * 2 ** (this.#failuresInARow - 1));
    const message = `${this.#name}: ${what}: ${cause}; retrying in ${waitMs >= 1000 ? `${(waitMs / 1000).toFixed(0)} s` : `${waitMs} ms`}`;
    if (this.#failuresInARow === 1) this.#log.warn(`${message}${this.#edge.hasAlternatives ? "; new connections go to the other edges meanwhile" : ""}`);
    else this.#log.debug(message);
    this.#retryAtMs = Date.now() + waitMs;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#retryAtMs = undefined;
      this.#fill();
      this.#probeIfFailing();
    }, waitMs);
    this.#retryTimer.unref();
  }
}
