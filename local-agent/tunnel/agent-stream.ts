// One proxied connection in the agent, from the SOCKS request on: opens the stream on a warm or
// a new tunnel (stream-open.ts) of the edge its attempts choose (open-attempts.ts, trying a failed
// open again on another before the client hears of it), answers the client, relays the edge's
// frames and hands the client's bytes to its UploadSender, and ends exactly once.

import WebSocket from "ws";
import { verdictsFor } from "./cloudflare-verdicts.ts";
import type { AgentConfig } from "../config/config.ts";
import { startDirectStream } from "./direct-stream.ts";
import { missedPong } from "./edge-socket.ts";
import type { EdgeSet } from "./edge-set.ts";
import { trackStream, type StreamHold } from "./held-bytes.ts";
import { formatBytes, type Logger } from "../log.ts";
import { STATUS_NAMES, resetConnection, type ClientConnection, type OpenAnswer, type StreamRequest } from "./stream-request.ts";
import { noteEdge } from "../status/connection-meter.ts";
import { OpenAttempts, mayRetry, neverConnected, type Attempt, type TunnelFailure } from "./open-attempts.ts";
import { sendOpen } from "./stream-open.ts";
import { isStaleFrame, type TunnelPool } from "./tunnel-pool.ts";
import { UploadSender } from "./upload-sender.ts";
import { pingIfDue, roundTripOf, tunnelVersion } from "./tunnel-link.ts";
import { agentBudget, noteWindow } from "./window-budget.ts";
import { ReceiveWindow } from "../../worker/protocol/flow-control.ts";
import {
  CloseCode,
  FrameType,
  ProtocolError,
  StreamStatus,
  closeReason,
  decodeFrame,
  encodeGrow,
  encodePong,
  encodeReset,
  encodeWindow,
  formatDestination,
  speaksWindowGrowth,
  type Destination,
  type Frame,
} from "../../worker/protocol/index.ts";

type Phase = "opening" | "relaying" | "closed";

/** What the agent tells the user it can do about a destination on Cloudflare's network. */
export const CLOUDFLARE_OPTIONS =
  "set EDGESOCKS_UPSTREAM, EDGESOCKS_CLOUDFLARE_RELAY or EDGESOCKS_NAT64_PREFIX at the Worker, or run the agent with --on-cloudflare direct (README: Sites hosted on Cloudflare)";

export class AgentStream {
  readonly #request: StreamRequest;
  readonly #client: ClientConnection;
  readonly #destination: Destination;
  readonly #answer: OpenAnswer;
  readonly #config: AgentConfig;
  readonly #log: Logger;
  readonly #onClosed: () => void;
  /** "client -> destination", for log lines; #label adds the edge. */
  readonly #route: string;
  readonly #startedAtMs = Date.now();
  readonly #receive: ReceiveWindow;
  readonly #upload: UploadSender;
  #phase: Phase = "opening";
  readonly #untrack: () => void;
  #edge: WebSocket | undefined;
  /** Where the tunnel goes back once the stream is over, for the next stream: its edge's pool. */
  #pool: TunnelPool | undefined;
  /** The running agent's edges, given to start(). */
  #edges: EdgeSet | undefined;
  /** Set by start(): which edge each attempt goes to. */
  #attempts: OpenAttempts | undefined;
  /** Numbers the attempts: a callback of one that was given up on is ignored. */
  #attemptNumber = 0;
  /** The tunnel came from the pool (its OPEN left as its first frame), rather than being opened for this attempt. */
  #tunnelWarm = false;
  /** A new tunnel's upgrade was answered with 101: its request reached the edge. */
  #upgraded = false;
  /** The error code (ECONNREFUSED, ...) the tunnel failed with, if any. */
  #edgeErrorCode: string | undefined;
  /** The tunnel carried streams before this one: leftovers of the last may arrive before our OPENED. */
  #tunnelReused = false;
  /** This stream's listeners on the tunnel, removed when the tunnel goes back to the pool. */
  readonly #edgeListeners: Array<[string, (...args: never[]) => void]> = [];
  #openTimer: ReturnType<typeof setTimeout> | undefined;
  #receivedEnd = false;
  #clientWritesFinished = false;
  #downloadedBytes = 0;
  /** Why the edge WebSocket failed, kept for the close that follows. */
  #edgeError: string | undefined;
  /** The client has its success answer: at OPENED, or at once with zeroRtt. */
  #answered = false;

  /** The listeners this stream put on the client, removed when the client is handed to a direct stream. */
  readonly #clientListeners: Array<[string, (...args: never[]) => void]> = [];

  constructor(request: StreamRequest, config: AgentConfig, log: Logger) {
    this.#request = request;
    this.#client = request.client;
    this.#destination = request.destination;
    this.#answer = request.answer;
    this.#config = config;
    this.#log = log;
    this.#onClosed = request.onClosed;
    // The download window grows with the tunnel's round trip: there is none before the first PONG,
    // and only a v4 tunnel carries PONGs (decodeFrame refuses them on older ones).
    this.#receive = new ReceiveWindow(config.windowBytes, {
      budget: agentBudget(config),
      claimedBytes: 0,
      tuning: {
        maxWindowBytes: config.maxWindowBytes,
        rttMs: () => (this.#edge ? roundTripOf(this.#edge).rttMs : undefined),
        nowMs: () => performance.now(),
      },
    });
    this.#route = `${request.clientLabel} -> ${formatDestination(request.destination)}`;
    this.#upload = new UploadSender(request.client, {
      budget: agentBudget(config),
      earlyBytes: request.earlyBytes,
      readsBeforeOpened: config.zeroRtt,
      onEndSent: () => this.#finishIfDone(),
    });
    this.#untrack = trackStream(this);
  }

  /** What this stream holds now (SIGUSR2's log line): download not yet taken by the client, upload not yet sent. */
  hold(): StreamHold {
    return { downloadHeldBytes: this.#receive.heldBytes, uploadHeldBytes: this.#upload.pendingBytes };
  }

  /** "client -> destination via edge", naming the edge when there are several. */
  get #label(): string {
    const edge = this.#attempts?.current;
    return `${this.#route} via ${edge && this.#edges?.isSeveral ? `edge ${edge.edgeLabel}` : "edge"}`;
  }

  /**
   * Sends OPEN on a warm tunnel from the chosen edge's pool, or on a new one whose upgrade carries
   * it; everything after is driven by events. With zeroRtt the client is answered first, before the
   * edge dials. Without `edges` (no running agent), one new tunnel to the first edge.
   */
  start(edges?: EdgeSet): void {
    this.#edges = edges;
    this.#attempts = new OpenAttempts(this.#config, edges);
    const client = this.#client;
    client.pause(); // no upload until the edge grants a window (or, with zeroRtt, an early budget)
    this.#onClient("data", (chunk: Buffer) => this.#upload.received(chunk));
    this.#onClient("end", () => this.#upload.clientEnded());
    this.#onClient("finish", () => {
      this.#clientWritesFinished = true;
      this.#finishIfDone();
    });
    this.#onClient("error", (error: NodeJS.ErrnoException) => this.#log.debug(`${this.#label} client socket: ${error.code ?? error.message}`));
    this.#onClient("close", () => this.#onClientClosed());
    if (this.#config.zeroRtt) this.#answerSuccess();

    this.#launch(this.#attempts.next() as Attempt);
    this.#openTimer = setTimeout(
      () => this.#failOpen(StreamStatus.Timeout, `edge did not answer the open within ${this.#config.openTimeoutMs} ms`, "info"),
      this.#config.openTimeoutMs,
    );
    this.#upload.flush();
  }

  /** Sends the OPEN of `attempt` on its edge. */
  #launch(attempt: Attempt): void {
    // The status page shows the edge each attempt goes to (several edges: the chosen one).
    if (attempt.edge) noteEdge(this.#client, attempt.edge.edgeLabel);
    const number = ++this.#attemptNumber;
    this.#pool = attempt.edge?.pool;
    sendOpen(attempt.route, {
      config: this.#config,
      destination: this.#destination,
      upload: this.#upload,
      onTunnel: (edge, warm) => {
        this.#attempts?.tunnelIs(warm);
        this.#attach(edge, warm);
      },
      onRefused: (status, explanation) => {
        if (number !== this.#attemptNumber) return;
        // The edge refuses before it dials (worker/tunnel/tunnel-endpoint.ts): nothing reached the destination.
        this.#tunnelFailed({ cause: `edge refused the tunnel: HTTP ${status} ${explanation}`, kind: "answered", mayHaveReachedDestination: false }, "warn");
      },
    });
  }

  /**
   * The attempt's tunnel failed before OPENED, for the edge's sake: the edge's pool hears of it
   * (its backoff), and the open goes on to the next attempt when one is left and mayRetry allows;
   * else the client gets its answer.
   */
  #tunnelFailed(failure: TunnelFailure, level: "info" | "warn"): void {
    if (this.#phase !== "opening") return;
    this.#pool?.noteFailure(failure.cause, failure.kind);
    const attempts = this.#attempts as OpenAttempts;
    const next = mayRetry(failure, this.#upload.sentBeforeOpenedBytes) ? attempts.retry(this.#tunnelWarm) : undefined;
    if (!next) {
      this.#failOpen(StreamStatus.GeneralFailure, failure.cause, level);
      return;
    }
    this.#abandonTunnel();
    this.#upload.rewind();
    this.#log.debug(`${this.#route}: ${failure.cause}; trying again on ${next.edge && this.#edges?.isSeveral ? `edge ${next.edge.edgeLabel}` : "the edge"}${next.route.pool ? "" : " with a new tunnel"}`);
    this.#launch(next);
    this.#upload.flush();
  }

  /** Lets go of a tunnel given up on before OPENED: this stream's listeners off, the socket ended. */
  #abandonTunnel(): void {
    const edge = this.#edge;
    if (!edge) return;
    for (const [event, listener] of this.#edgeListeners.splice(0)) edge.off(event, listener as (...args: unknown[]) => void);
    // Ending a socket that is still connecting emits an error; nobody is left to care.
    edge.on("error", () => {});
    if (edge.readyState === WebSocket.CONNECTING || edge.readyState === WebSocket.OPEN) edge.terminate();
    this.#edge = undefined;
  }

  #onClient<Args extends never[]>(event: string, listener: (...args: Args) => void): void {
    this.#client.on(event, listener as (...args: unknown[]) => void);
    this.#clientListeners.push([event, listener as (...args: never[]) => void]);
  }

  /** Makes `edge` this stream's tunnel (`warm`: from the pool). */
  #attach(edge: WebSocket, warm: boolean): void {
    this.#edge = edge;
    this.#tunnelWarm = warm;
    this.#upgraded = false;
    this.#edgeError = undefined;
    this.#edgeErrorCode = undefined;
    this.#tunnelReused = (this.#pool?.streamsCarriedBefore(edge) ?? 0) > 0;
    this.#upload.useTunnel(edge);
    this.#onEdge(edge, "message", (data: Buffer, isBinary: boolean) => this.#onEdgeMessage(data, isBinary));
    if (!warm) this.#onEdge(edge, "upgrade", () => (this.#upgraded = true));
    this.#onEdge(edge, "error", (error: NodeJS.ErrnoException) => {
      this.#edgeError = error.message;
      this.#edgeErrorCode = error.code;
    });
    this.#onEdge(edge, "close", (code: number, reason: Buffer) => this.#onEdgeClosed(code, reason.toString("utf8")));
  }

  #onEdge<Args extends never[]>(edge: WebSocket, event: string, listener: (...args: Args) => void): void {
    edge.on(event, listener as (...args: unknown[]) => void);
    this.#edgeListeners.push([event, listener as (...args: never[]) => void]);
  }

  /** The client's success answer, once: at OPENED, or at start with zeroRtt. */
  #answerSuccess(): void {
    if (this.#answered) return;
    this.#answered = true;
    const reply = this.#answer.succeeded();
    if (reply) this.#client.write(reply);
  }

  #onEdgeMessage(data: Buffer, isBinary: boolean): void {
    if (this.#phase === "closed") return;
    try {
      if (!isBinary) throw new ProtocolError(CloseCode.MalformedFrame, "text messages are not part of the protocol");
      // Decoded first: a message that does not decode is 4400 on any tunnel (docs/protocol.md
      // §3), never a leftover to drop.
      const edge = this.#edge as WebSocket;
      const frame = decodeFrame(data, tunnelVersion(edge));
      // Tunnel-wide (v4), whatever the stream's phase.
      if (frame.type === FrameType.Ping) {
        edge.send(encodePong(frame.id));
        return;
      }
      if (frame.type === FrameType.Pong) {
        roundTripOf(edge).pong(frame.id, performance.now());
        return;
      }
      // On a reused tunnel, what the edge sent its last stream before it heard that stream was
      // over (a WINDOW for bytes it delivered, DATA that crossed our RESET) arrives before our
      // OPENED: every frame the edge sends this stream comes after OPENED, so these are not ours.
      if (this.#phase === "opening" && this.#tunnelReused && isStaleFrame(frame)) return;
      this.#dispatch(frame);
    } catch (error) {
      // A bug must cost this one stream, never the agent and every other connection with it.
      const failure =
        error instanceof ProtocolError
          ? error
          : new ProtocolError(CloseCode.InternalError, `internal error: ${error instanceof Error ? error.message : String(error)}`);
      this.#protocolFailure(failure);
    }
  }

  #dispatch(frame: Frame): void {
    switch (frame.type) {
      case FrameType.Opened:
        if (this.#phase !== "opening") throw new ProtocolError(CloseCode.UnexpectedFrame, "second OPENED");
        // Whatever the status, the edge answered: it is well (an edge failing since one of its tunnels did rejoins).
        this.#pool?.noteAnswered();
        if (frame.status === StreamStatus.OnCloudflare) {
          this.#onCloudflare(frame.windowBytes, frame.reason);
          return;
        }
        if (frame.status !== StreamStatus.Ok) {
          this.#failOpen(frame.status, frame.reason, "info", true);
          return;
        }
        this.#opened(frame.windowBytes);
        return;
      case FrameType.Data: {
        if (this.#phase !== "relaying") throw new ProtocolError(CloseCode.UnexpectedFrame, "DATA before OPENED");
        if (this.#receivedEnd) throw new ProtocolError(CloseCode.UnexpectedFrame, "DATA after END");
        const byteLength = frame.payload.byteLength;
        this.#receive.received(byteLength);
        this.#downloadedBytes += byteLength;
        // The write callback fires once the kernel has taken the bytes: only then return credit.
        this.#client.write(frame.payload, (error) => {
          if (error || this.#phase !== "relaying") return;
          this.#returnCredit(this.#receive.delivered(byteLength));
        });
        return;
      }
      case FrameType.Window:
        if (this.#phase !== "relaying") throw new ProtocolError(CloseCode.UnexpectedFrame, "WINDOW before OPENED");
        this.#upload.grant(frame.bytes);
        return;
      case FrameType.Grow:
        if (this.#phase !== "relaying") throw new ProtocolError(CloseCode.UnexpectedFrame, "GROW before OPENED");
        this.#upload.grow(frame.windowBytes);
        return;
      case FrameType.Ping:
      case FrameType.Pong:
        return; // taken in #onEdgeMessage
      case FrameType.End:
        if (this.#phase !== "relaying") throw new ProtocolError(CloseCode.UnexpectedFrame, "END before OPENED");
        if (this.#receivedEnd) throw new ProtocolError(CloseCode.UnexpectedFrame, "second END");
        this.#receivedEnd = true;
        this.#client.end(); // FIN to the client once every queued byte is written
        return;
      case FrameType.Reset:
        if (this.#phase === "opening") {
          this.#failOpen(frame.status, `edge reset the stream: ${frame.reason}`, "info");
          return;
        }
        this.#resetClient(`edge reset the stream: ${frame.reason || `status ${frame.status}`}`, true);
        return;
      case FrameType.Open:
      case FrameType.Early:
        throw new ProtocolError(CloseCode.UnexpectedFrame, `frame type ${frame.type} is sent by the agent, not to it`);
    }
  }

  /**
   * The edge cannot reach the destination (it is on Cloudflare's network) and has no fallback
   * for it: with --on-cloudflare direct, open it from this machine (the client, not answered yet
   * or answered with --zero-rtt, never notices) and remember the verdict for `verdictSeconds`;
   * otherwise refuse, with one hint line per destination rather than one per connection.
   */
  #onCloudflare(verdictSeconds: number, reason: string): void {
    const verdicts = verdictsFor(this.#config);
    const host = this.#destination.host;
    if (this.#config.onCloudflare === "direct") {
      verdicts.remember(host, verdictSeconds);
      this.#phase = "closed";
      this.#attempts?.done();
      this.#untrack(); // the direct stream takes the client over
      clearTimeout(this.#openTimer);
      for (const [event, listener] of this.#clientListeners) this.#client.off(event, listener as (...args: unknown[]) => void);
      this.#releaseEdge("open failed");
      const { bytes, clientEnded } = this.#upload.takeBack();
      startDirectStream({ ...this.#request, earlyBytes: bytes }, this.#config, this.#log, {
        why: "on Cloudflare's network: --on-cloudflare direct",
        answered: this.#answered,
        clientEnded,
      });
      return;
    }
    if (verdicts.takeHint(host)) this.#log.warn(`${formatDestination(this.#destination)}: ${reason}; to reach it, ${CLOUDFLARE_OPTIONS}`);
    this.#failOpen(StreamStatus.OnCloudflare, `${reason}; to reach it, ${CLOUDFLARE_OPTIONS}`, "info", true);
  }

  #opened(edgeWindowBytes: number): void {
    clearTimeout(this.#openTimer);
    this.#phase = "relaying";
    this.#answerSuccess();
    this.#upload.opened(edgeWindowBytes);
    if (this.#edge) pingIfDue(this.#edge);
  }

  /** Returns download credit: GROW first when tuning grew the window (v4), so the edge's ceiling rises before the WINDOW. */
  #returnCredit(grantBytes: number): void {
    const edge = this.#edge;
    if (grantBytes === 0 || this.#receivedEnd || !edge) return;
    const grownTo = this.#receive.takeGrowth();
    if (grownTo !== undefined && speaksWindowGrowth(tunnelVersion(edge))) {
      noteWindow(grownTo);
      edge.send(encodeGrow(grownTo));
    }
    edge.send(encodeWindow(grantBytes));
    pingIfDue(edge);
  }

  #finishIfDone(): void {
    if (this.#phase !== "relaying" || !this.#upload.hasSentEnd || !this.#receivedEnd || !this.#clientWritesFinished) return;
    this.#releaseEdge("stream finished");
    this.#client.destroy();
    this.#finish("ok", "info");
  }

  #onClientClosed(): void {
    if (this.#phase === "closed") return;
    if (this.#phase === "relaying" && this.#upload.hasSentEnd && this.#receivedEnd) {
      this.#releaseEdge("stream finished");
      this.#finish("ok", "info");
      return;
    }
    // The client vanished: abort the edge side too (while opening, closing the tunnel is enough).
    if (this.#phase === "relaying" && this.#edge?.readyState === WebSocket.OPEN) {
      this.#edge.send(encodeReset(StreamStatus.GeneralFailure, "client closed the connection"));
      this.#releaseEdge("client closed");
    } else this.#closeEdge(CloseCode.Normal, "client closed"); // while opening: the edge may still be dialing
    this.#finish("client closed the connection", "info");
  }

  #onEdgeClosed(code: number, reason: string): void {
    if (this.#phase === "closed") return;
    const cause = missedPong(this.#edge as WebSocket)
      ? "edge stopped answering pings"
      : `edge closed the tunnel (${code}${reason ? ` ${reason}` : ""}${this.#edgeError ? `: ${this.#edgeError}` : ""})${whyTunnelEnded(code)}`;
    if (this.#phase === "opening") {
      // Before a new tunnel's 101 with a connect that never completed, no request left; else the OPEN may have reached the edge.
      const reachedEdge = this.#tunnelWarm || this.#upgraded || !neverConnected(this.#edgeErrorCode);
      const answered = (this.#tunnelWarm || this.#upgraded) && code !== 1006;
      this.#tunnelFailed({ cause, kind: answered ? "answered" : "unreachable", mayHaveReachedDestination: reachedEdge }, "warn");
      return;
    }
    if (this.#upload.hasSentEnd && this.#receivedEnd) return; // only the client's last writes remain; 'finish' ends it
    this.#resetClient(cause);
  }

  #protocolFailure(error: ProtocolError): void {
    this.#closeEdge(error.closeCode, error.message);
    const cause = error.closeCode === CloseCode.InternalError ? error.message : `edge broke the protocol: ${error.message}`;
    if (this.#phase === "opening") this.#failOpen(StreamStatus.GeneralFailure, cause, "warn");
    else this.#resetClient(cause);
  }

  /**
   * The open failed: answer the client in its protocol, then close both sides. A client already
   * answered (zeroRtt) can only be reset.
   */
  #failOpen(status: StreamStatus, reason: string, level: "info" | "warn", edgeAnswered = false): void {
    if (this.#phase !== "opening") return;
    const endTunnel = () => (edgeAnswered ? this.#releaseEdge("open failed") : this.#closeEdge(CloseCode.Normal, "open failed"));
    if (this.#answered) {
      resetConnection(this.#client, reason);
      endTunnel();
      this.#finish(`${STATUS_NAMES[status]} after a 0-RTT answer, client reset: ${reason}`, level);
      return;
    }
    const reply = this.#answer.failed(status, reason);
    if (reply) this.#client.end(reply);
    else this.#client.end();
    endTunnel();
    this.#finish(`${STATUS_NAMES[status]}: ${reason}`, level);
  }

  /**
   * A mid-stream failure: the client gets a TCP reset, so it cannot mistake a cut for an end.
   * `edgeReset`: the edge's RESET said so, and the tunnel may carry the next stream.
   */
  #resetClient(reason: string, edgeReset = false): void {
    if (this.#phase === "closed") return;
    resetConnection(this.#client, reason);
    if (edgeReset) this.#releaseEdge("stream reset");
    else this.#closeEdge(CloseCode.Normal, "stream reset");
    this.#finish(`reset: ${reason}`, "info");
  }

  /**
   * The stream is over from the agent's side, and every frame the edge sends from now on belongs
   * to the tunnel's next stream (END sent and received, RESET sent or received, a failed OPENED
   * received): the tunnel goes back to the pool for that stream, or is closed with `reason` when
   * the pool will not have it (its stream limit, or a pool that is closing or full).
   */
  #releaseEdge(reason: string): void {
    const edge = this.#edge;
    if (!edge) return;
    for (const [event, listener] of this.#edgeListeners.splice(0)) edge.off(event, listener as (...args: unknown[]) => void);
    const carried = (this.#pool?.streamsCarriedBefore(edge) ?? 0) + 1;
    if (this.#pool?.giveBack(edge, carried)) return;
    this.#closeEdge(CloseCode.Normal, carried >= this.#config.maxStreamsPerTunnel && carried > 1 ? `${reason}; retired after ${carried} streams` : reason);
  }

  #closeEdge(code: number, reason: string): void {
    const edge = this.#edge;
    if (!edge) return;
    if (edge.readyState === WebSocket.CONNECTING) edge.terminate();
    else if (edge.readyState === WebSocket.OPEN) edge.close(code, closeReason(reason));
  }

  /** The one end of every stream: idempotent, logs the connection's line. */
  #finish(result: string, level: "info" | "warn"): void {
    if (this.#phase === "closed") return;
    this.#phase = "closed";
    this.#untrack();
    clearTimeout(this.#openTimer);
    this.#upload.close();
    this.#receive.close();
    const seconds = ((Date.now() - this.#startedAtMs) / 1000).toFixed(2);
    const label = `${this.#label}${this.#attempts?.describeFailures() ?? ""}`;
    this.#attempts?.done();
    this.#log[level](`${label} up=${formatBytes(this.#upload.uploadedBytes)} down=${formatBytes(this.#downloadedBytes)} ${seconds}s ${result}`);
    this.#onClosed();
  }
}

/**
 * What an edge close code without a reason of ours says about why the tunnel ended. The Worker's
 * invocation ending (a redeploy, a runtime update) closes with 1001 or drops with no close frame
 * at all (1006), as does the edge's process dying or a limit such as CPU ending the invocation.
 */
function whyTunnelEnded(code: number): string {
  if (code === 1001) return ": the Worker's invocation ended (a redeploy or a runtime update); new connections open new tunnels";
  if (code === 1006) return ": no close frame (the edge's process ended, the network dropped the connection, or the Worker's invocation was ended, for example by its CPU limit)";
  if (code === 1011 || code === 1012 || code === 1013) return ": the edge had an internal error or is restarting";
  return "";
}
