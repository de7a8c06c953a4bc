// A stand-in edge on loopback whose every frame a test scripts, for the agent's side of the
// protocol: what the real Worker never sends (a second OPENED, DATA before OPENED, DATA past the
// agent's window, credit beyond its own window, a frame on an idle spare) it sends on request, and
// it keeps the close code and reason the agent answers with as they came on the wire.
//
// It speaks the protocol through worker/protocol/codec.ts and negotiates the subprotocol as
// worker/tunnel/tunnel-endpoint.ts does (bearer token, then the newest offered version, then the
// Edgesocks-Open / Edgesocks-Pooled headers); it dials nothing. A tunnel whose OPEN finds no
// script is served by `serveEcho`, an honest edge that echoes the upload back under the agent's
// window, so a test can show the agent still serves after a fault.

import { createServer, type IncomingMessage, type Server } from "node:http";
import type { Socket } from "node:net";
import WebSocket, { WebSocketServer } from "ws";
import {
  CloseCode,
  FrameType,
  OPEN_HEADER,
  POOLED_HEADER,
  PROTOCOL_VERSION,
  PROTOCOL_VERSIONS,
  ProtocolError,
  SUBPROTOCOLS,
  StreamStatus,
  TUNNEL_PATH,
  chooseVersion,
  decodeFrame,
  decodeHeaderOpen,
  encodeData,
  encodeEnd,
  encodeOpened,
  encodePong,
  encodeWindow,
  subprotocolFor,
  type Frame,
  type OpenFrame,
  type ProtocolVersion,
} from "../../worker/protocol/index.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";

/** How long a wait for the agent's next frame or close lasts before the test fails. */
const DEFAULT_WAIT_MS = 10_000;

/** How the tunnel's upgrade asked it to begin (worker/tunnel/tunnel-endpoint.ts, tunnelStart). */
export type TunnelKind = "open" | "pooled" | "plain";
/** The agent's Close as it came on the wire (1005: a close frame with no code; 1006: no close frame). */
export type AgentClose = { code: number; reason: string };
/** What a scripted edge does with a tunnel once its OPEN has arrived. */
export type TunnelScript = (tunnel: ScriptedTunnel, open: OpenFrame) => void;

/** One accepted tunnel: the frames the agent sent on it (streams one after another), a way to send any frame back, and its close. */
export class ScriptedTunnel {
  readonly index: number;
  readonly kind: TunnelKind;
  readonly version: ProtocolVersion;
  /** Every frame the agent sent, in order (a cold tunnel's OPEN from its upgrade first). */
  readonly frames: Frame[] = [];
  /** Resolves with the agent's Close once the socket has closed. */
  readonly closed: Promise<AgentClose>;
  readonly #socket: WebSocket;
  #isClosed = false;
  /** The agent PINGed the tunnel: a v4 agent does so once its spare is open, so it is in the agent's pool. */
  pinged = false;
  #streamStartIndex = 0;
  readonly #listeners = new Set<() => void>();
  /** Called with each frame from the agent as it arrives, after it is recorded. */
  onFrame: (frame: Frame) => void = () => {};

  constructor(index: number, kind: TunnelKind, version: ProtocolVersion, socket: WebSocket) {
    this.index = index;
    this.kind = kind;
    this.version = version;
    this.#socket = socket;
    this.closed = new Promise((resolve) => {
      socket.once("close", (code, reason) => {
        this.#isClosed = true;
        this.#notify();
        resolve({ code, reason: reason.toString("utf8") });
      });
    });
  }

  /** The OPEN of the tunnel's current stream (its latest), if one has arrived (in the upgrade or as a frame). */
  get open(): OpenFrame | undefined {
    return this.frames.findLast((frame): frame is OpenFrame => frame.type === FrameType.Open);
  }

  /** The frames of the current stream: from its OPEN on (all of them before the first OPEN). */
  get streamFrames(): Frame[] {
    return this.frames.slice(this.#streamStartIndex);
  }

  /** Streams the tunnel has carried so far: one per OPEN. */
  get streamCount(): number {
    return this.frames.filter((frame) => frame.type === FrameType.Open).length;
  }

  /** An OPEN arrived: what follows belongs to a new stream, with no handler until its script sets one. */
  beginStream(): void {
    this.#streamStartIndex = this.frames.length - 1;
    this.onFrame = () => {};
  }

  /** Sends raw bytes as one binary message, whatever the protocol says about them. */
  send(message: Uint8Array): void {
    this.#socket.send(message);
  }

  /** Sends a text message, which no frame of the protocol is. */
  sendText(text: string): void {
    this.#socket.send(text);
  }

  /** Resolves with the first frame of the current stream that satisfies `matches`, recorded or still to come. */
  waitForFrame(matches: (frame: Frame) => boolean, timeoutMs = DEFAULT_WAIT_MS): Promise<Frame> {
    return this.#until(() => this.streamFrames.find(matches), `no matching frame from the agent on tunnel ${this.index}`, timeoutMs);
  }

  /** The agent's Close, or a rejection if it has not closed within `timeoutMs`. */
  waitForClose(timeoutMs = DEFAULT_WAIT_MS): Promise<AgentClose> {
    return withTimeout(this.closed, timeoutMs, `the agent did not close tunnel ${this.index} within ${timeoutMs} ms`);
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Records a frame from the agent and wakes the waits. */
  received(frame: Frame): void {
    this.frames.push(frame);
    this.onFrame(frame);
    this.#notify();
  }

  close(code: number, reason: string): void {
    if (this.#socket.readyState === WebSocket.OPEN) this.#socket.close(code, reason);
  }

  terminate(): void {
    this.#socket.terminate();
  }

  #notify(): void {
    for (const listener of [...this.#listeners]) listener();
  }

  #until<T>(check: () => T | undefined, failure: string, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const attempt = () => {
        const found = check();
        if (found === undefined) return false;
        finish();
        resolve(found);
        return true;
      };
      const finish = () => {
        clearTimeout(timer);
        this.#listeners.delete(listener);
      };
      const listener = () => void attempt();
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${failure} within ${timeoutMs} ms; frames: ${this.frames.map((frame) => frame.type).join(",")}`));
      }, timeoutMs);
      this.#listeners.add(listener);
      attempt();
    });
  }
}

export type ScriptedEdge = {
  /** The --edge URL for the agent. */
  url: string;
  token: string;
  /** Every accepted tunnel, in order of acceptance. */
  tunnels: ScriptedTunnel[];
  /** Runs `script` on the stream of the next OPEN (scripts queue; a stream with none is echoed). */
  scriptNextStream(script: TunnelScript): void;
  /** Resolves once `count` pooled tunnels are open and have carried no stream yet. */
  waitForIdleSpares(count: number, timeoutMs?: number): Promise<ScriptedTunnel[]>;
  /** Resolves with the tunnel that carries the first OPEN to arrive after this call. */
  nextStream(timeoutMs?: number): Promise<ScriptedTunnel>;
  /** Drops scripts no OPEN has taken yet (a test that failed before its stream opened). */
  resetScripts(): void;
  close(): Promise<void>;
};

/** Starts a scripted edge on a free loopback port, accepting `token` as the real edge accepts one. */
export async function startScriptedEdge(token: string): Promise<ScriptedEdge> {
  const scripts: TunnelScript[] = [];
  const tunnels: ScriptedTunnel[] = [];
  const streams: ScriptedTunnel[] = [];
  const changes = new Set<() => void>();
  const changed = () => {
    for (const listener of [...changes]) listener();
  };
  const sockets = new Set<Socket>();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, handleProtocols: (offered) => pickSubprotocol([...offered]) ?? false });

  const server: Server = createServer((request, response) => {
    if (request.method === "GET" && request.url === "/healthz") {
      // The body worker/index.ts serves, so the agent's start-up probe (local-agent/tunnel/edge-probe.ts) is content.
      response.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ name: "edgesocks", version: EDGESOCKS_VERSION, protocol: PROTOCOL_VERSION, protocols: PROTOCOL_VERSIONS }));
      return;
    }
    response.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" }).end("not found\n");
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  server.on("upgrade", (request: IncomingMessage, socket: Socket, head: Buffer) => {
    const refusal = refusalFor(request, token);
    if (refusal) {
      socket.end(`HTTP/1.1 ${refusal.status} Refused\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(refusal.body)}\r\n\r\n${refusal.body}`);
      return;
    }
    const headerOpen = request.headers[OPEN_HEADER.toLowerCase()];
    const kind: TunnelKind = typeof headerOpen === "string" ? "open" : request.headers[POOLED_HEADER.toLowerCase()] === "1" ? "pooled" : "plain";
    wss.handleUpgrade(request, socket, head, (ws) => {
      ws.binaryType = "nodebuffer";
      const version = versionOf(ws.protocol);
      const tunnel = new ScriptedTunnel(tunnels.length, kind, version, ws);
      tunnels.push(tunnel);
      const startStream = (open: OpenFrame) => {
        tunnel.beginStream();
        streams.push(tunnel);
        (scripts.shift() ?? serveEcho)(tunnel, open);
        changed();
      };
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        let frame: Frame;
        try {
          if (!isBinary) throw new ProtocolError(CloseCode.MalformedFrame, "text message");
          frame = decodeFrame(data);
        } catch (error) {
          // The agent broke the protocol: answered as the real edge answers it.
          const failure = error instanceof ProtocolError ? error : new ProtocolError(CloseCode.InternalError, String(error));
          tunnel.close(failure.closeCode, failure.message);
          return;
        }
        // The tunnel's round trip (v4) is answered as the real edge answers it, and kept out of the scripts' view.
        if (frame.type === FrameType.Ping) {
          ws.send(encodePong(frame.id));
          tunnel.pinged = true;
          changed();
          return;
        }
        if (frame.type === FrameType.Pong) return;
        tunnel.received(frame);
        // Each OPEN starts a stream: the agent sends the next one on a tunnel whose stream is over.
        if (frame.type === FrameType.Open) startStream(frame);
      });
      ws.once("close", changed);
      changed();
      // A cold tunnel's OPEN came in the upgrade: the stream starts with the 101, as at the real edge.
      if (typeof headerOpen === "string") {
        const open = decodeHeaderOpen(headerOpen.trim());
        tunnel.received(open);
        startStream(open);
      }
    });
  });

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };

  const until = <T>(check: () => T | undefined, failure: string, timeoutMs: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const listener = () => {
        const found = check();
        if (found === undefined) return;
        clearTimeout(timer);
        changes.delete(listener);
        resolve(found);
      };
      const timer = setTimeout(() => {
        changes.delete(listener);
        reject(new Error(`${failure} within ${timeoutMs} ms (${tunnels.length} tunnels so far)`));
      }, timeoutMs);
      changes.add(listener);
      listener();
    });

  return {
    url: `http://127.0.0.1:${port}`,
    token,
    tunnels,
    scriptNextStream: (script) => scripts.push(script),
    waitForIdleSpares: (count, timeoutMs = DEFAULT_WAIT_MS) =>
      until(
        () => {
          // Pinged: open at the agent too, not only here (its PING follows its 'open'), so a
          // connection made now rides one of them.
          const idle = tunnels.filter((tunnel) => tunnel.kind === "pooled" && tunnel.streamCount === 0 && !tunnel.isClosed && tunnel.pinged);
          return idle.length >= count ? idle : undefined;
        },
        `fewer than ${count} idle spares`,
        timeoutMs,
      ),
    nextStream: (timeoutMs = DEFAULT_WAIT_MS) => {
      const ordinal = streams.length;
      return until(() => streams[ordinal], `no OPEN number ${ordinal + 1}`, timeoutMs);
    },
    resetScripts: () => {
      scripts.length = 0;
    },
    close: async () => {
      for (const tunnel of tunnels) tunnel.terminate();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The subprotocol the real edge answers with: the newest version offered that this build speaks. */
function pickSubprotocol(offered: string[]): string | undefined {
  const version = chooseVersion(offered);
  return version === undefined ? undefined : subprotocolFor(version);
}

function versionOf(subprotocol: string): ProtocolVersion {
  return chooseVersion([subprotocol]) ?? PROTOCOL_VERSION;
}

/** The refusals of worker/tunnel/tunnel-endpoint.ts this stand-in needs: a wrong token, no common version. */
function refusalFor(request: IncomingMessage, token: string): { status: number; body: string } | undefined {
  if (request.url !== TUNNEL_PATH) return { status: 404, body: "not found\n" };
  const presented = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(request.headers.authorization ?? "")?.[1];
  if (presented !== token) return { status: 401, body: presented === undefined ? "missing bearer token\n" : "wrong token\n" };
  const offered = (request.headers["sec-websocket-protocol"] ?? "").split(",").map((name) => name.trim());
  if (pickSubprotocol(offered) === undefined) {
    return { status: 400, body: `unsupported protocol version: this edge speaks ${SUBPROTOCOLS.join(", ")}; update the agent or redeploy the Worker so both match\n` };
  }
  return undefined;
}

/** The window serveEcho announces in its OPENED: the agent's upload credit on an honest stream. */
export const ECHO_WINDOW_BYTES = 64 * 1024;

/**
 * An honest edge for one stream: OPENED Ok, every upload byte echoed back as DATA within the
 * agent's window (the OPEN's, plus its WINDOW grants), credit returned for each DATA at once
 * (the echo has delivered it), END answered with END once the echo is out.
 */
export function serveEcho(tunnel: ScriptedTunnel, open: OpenFrame): void {
  let creditBytes = open.windowBytes;
  const queued: Buffer[] = [];
  let agentEnded = false;
  let sentEnd = false;
  const pump = () => {
    while (queued.length > 0 && creditBytes > 0) {
      const next = queued[0] as Buffer;
      const piece = next.subarray(0, creditBytes);
      if (piece.byteLength === next.byteLength) queued.shift();
      else queued[0] = next.subarray(piece.byteLength);
      creditBytes -= piece.byteLength;
      tunnel.send(encodeData(piece));
    }
    if (agentEnded && queued.length === 0 && !sentEnd) {
      sentEnd = true;
      tunnel.send(encodeEnd());
    }
  };
  tunnel.onFrame = (frame) => {
    if (frame.type === FrameType.Data || frame.type === FrameType.Early) {
      queued.push(Buffer.from(frame.payload));
      if (frame.type === FrameType.Data) tunnel.send(encodeWindow(frame.payload.byteLength));
    } else if (frame.type === FrameType.Window) {
      creditBytes += frame.bytes;
    } else if (frame.type === FrameType.End) {
      agentEnded = true;
    }
    pump();
  };
  queued.push(...open.earlyData.byteLength > 0 ? [Buffer.from(open.earlyData)] : []);
  tunnel.send(encodeOpened(StreamStatus.Ok, ECHO_WINDOW_BYTES));
  pump();
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, failure: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(failure)), timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
