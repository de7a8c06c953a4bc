// A tunnel to the edge without the agent: a `ws` client speaking the wire protocol
// (worker/protocol/codec.ts), so a benchmark charges the Worker for exactly the frames it sends. The
// socket is set up as the agent's is (local-agent/tunnel/edge-socket.ts): no deflate, frames capped at
// MAX_FRAME_BYTES, the all-zero mask the agent uses inside TLS and on loopback.

import WebSocket from "ws";
import { maskGeneratorFor } from "../../local-agent/tunnel/frame-mask.ts";
import { FrameType, MAX_FRAME_BYTES, OPEN_HEADER, SUBPROTOCOLS, TUNNEL_PATH, decodeFrame, encodeHeaderOpen, encodePong, type Frame } from "../../worker/protocol/index.ts";

/** Longer than any frame takes on loopback, even on a loaded machine: a wait that hits it has found a hang. */
const FRAME_TIMEOUT_MS = 15_000;

export type CloseInfo = { code: number; reason: string };

/** One tunnel WebSocket: frames out as given, frames in through an awaitable queue. */
export class RawTunnel {
  readonly #socket: WebSocket;
  readonly #queue: Frame[] = [];
  #wake: (() => void) | undefined;
  #closeInfo: CloseInfo | undefined;
  #failure: Error | undefined;
  readonly #closed: Promise<CloseInfo>;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    this.#closed = new Promise((resolve) => {
      socket.on("close", (code, reason) => {
        this.#closeInfo = { code, reason: reason.toString() };
        resolve(this.#closeInfo);
        this.#notify();
      });
    });
    // ws emits "close" after "error"; until then a waiting reader hears of the error.
    socket.on("error", (error) => {
      this.#failure ??= error;
      this.#notify();
    });
    socket.on("message", (data: Buffer, isBinary) => {
      try {
        if (!isBinary) throw new Error(`the edge sent a text message: ${data.toString().slice(0, 80)}`);
        this.#queue.push(decodeFrame(data));
      } catch (error) {
        this.#failure ??= error instanceof Error ? error : new Error(String(error));
      }
      this.#notify();
    });
  }

  /**
   * Opens /tunnel at `edgeUrl` (http://host:port) with the bearer token; `firstOpen` (an OPEN
   * frame) rides in the upgrade as the agent's cold open does. Resolves once the edge answered 101.
   */
  static async open(edgeUrl: string, token: string, firstOpen?: Uint8Array): Promise<RawTunnel> {
    const tunnelUrl = `${edgeUrl.replace(/^http/, "ws")}${TUNNEL_PATH}`;
    const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
    if (firstOpen) headers[OPEN_HEADER] = encodeHeaderOpen(firstOpen);
    const socket = new WebSocket(tunnelUrl, [...SUBPROTOCOLS], {
      headers,
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_BYTES,
      handshakeTimeout: FRAME_TIMEOUT_MS,
      followRedirects: false,
      generateMask: maskGeneratorFor(tunnelUrl),
    });
    socket.binaryType = "nodebuffer";
    const tunnel = new RawTunnel(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("unexpected-response", (_request, response) => reject(new Error(`tunnel upgrade answered HTTP ${response.statusCode}`)));
      socket.once("close", () => reject(tunnel.#failure ?? new Error("tunnel closed during the upgrade")));
    });
    return tunnel;
  }

  /** Sends one frame; the promise settles once `ws` has handed it to the kernel, so a sender can pace itself. */
  send(frame: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => this.#socket.send(frame, { binary: true }, (error) => (error ? reject(error) : resolve())));
  }

  /** The next frame from the edge; rejects if the tunnel closes first, on a frame that does not decode, or after FRAME_TIMEOUT_MS. */
  async nextFrame(): Promise<Frame> {
    const deadline = Date.now() + FRAME_TIMEOUT_MS;
    for (;;) {
      const frame = this.#queue.shift();
      // A v4 edge PINGs a tunnel for its round trip: answered as the agent answers it, and not a frame of the workload.
      if (frame?.type === FrameType.Ping) {
        this.#socket.send(encodePong(frame.id));
        continue;
      }
      if (frame) return frame;
      if (this.#failure) throw this.#failure;
      if (this.#closeInfo) throw new Error(`tunnel closed (${this.#closeInfo.code} ${this.#closeInfo.reason}) while a frame was awaited`);
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) throw new Error(`no frame from the edge within ${FRAME_TIMEOUT_MS} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remainingMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Closes the tunnel as the agent does after its last stream (1000) and resolves once the edge's close arrived. */
  async close(): Promise<CloseInfo> {
    if (!this.#closeInfo) this.#socket.close(1000, "");
    const timer = setTimeout(() => this.#socket.terminate(), FRAME_TIMEOUT_MS);
    const info = await this.#closed;
    clearTimeout(timer);
    return info;
  }

  /** Drops the connection without a close handshake: for cleanup after a failure. */
  terminate(): void {
    this.#socket.terminate();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
