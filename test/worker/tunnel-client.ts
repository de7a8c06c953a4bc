// The agent's side of a tunnel, for the Worker tests: opens /tunnel inside workerd, queues what
// the edge sends, and offers awaitable reads with timeouts so each test reads as a dialogue.

import { createExecutionContext } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import type { EdgeEnv } from "../../worker/config.ts";
import app from "../../worker/index.ts";
import {
  AddressType,
  DEFAULT_WINDOW_BYTES,
  FrameType,
  SUBPROTOCOL,
  decodeFrame,
  encodeOpen,
  encodePong,
  encodeWindow,
  type Destination,
  type Frame,
  type OpenedFrame,
} from "../../worker/protocol/index.ts";

/** The first of the two tokens the test Worker is configured with (test/vitest.config.ts). */
export const TEST_TOKEN = "worker-test-token-0123456789";
/** The second configured token: any entry of the list opens a tunnel. */
export const SECOND_TEST_TOKEN = "worker-test-token-second-abcdef";
/** Long enough for any wait on loopback; a test that hits it has found a hang. */
export const DEFAULT_WAIT_MS = 5_000;

/**
 * The headers of a valid tunnel upgrade; tests override one at a time to break it, and an
 * override of undefined leaves that header out.
 */
export function tunnelHeaders(overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const headers: Record<string, string | undefined> = {
    Upgrade: "websocket",
    Authorization: `Bearer ${TEST_TOKEN}`,
    "Sec-WebSocket-Protocol": SUBPROTOCOL,
    ...overrides,
  };
  return Object.fromEntries(Object.entries(headers).filter((entry): entry is [string, string] => entry[1] !== undefined));
}

/** Sends a request for /tunnel to the Worker as deployed in the tests (its own bindings). */
export function requestTunnel(init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch("http://edge.test/tunnel", { headers: tunnelHeaders(), ...init });
}

/** Sends a request to the Worker's Hono app with bindings of the test's choosing. */
export function requestWithEnv(env: EdgeEnv, path = "/tunnel", init: RequestInit = {}): Promise<Response> {
  return Promise.resolve(app.fetch(new Request(`http://edge.test${path}`, { headers: tunnelHeaders(), ...init }), env, createExecutionContext()));
}

const openClients = new Set<TunnelClient>();

/**
 * Opens a tunnel through the test Worker, or through the app with `env` when given; `headers`
 * are added to the upgrade request (the v2 OPEN and pooled headers).
 */
export async function openTunnel(env?: EdgeEnv, headers: Record<string, string> = {}): Promise<TunnelClient> {
  const init = { headers: tunnelHeaders(headers) };
  const response = env === undefined ? await requestTunnel(init) : await requestWithEnv(env, "/tunnel", init);
  if (response.status !== 101 || !response.webSocket) {
    throw new Error(`tunnel upgrade failed: HTTP ${response.status} ${await response.text()}`);
  }
  const client = new TunnelClient(response.webSocket);
  openClients.add(client);
  return client;
}

/**
 * Closes every tunnel opened so far, so no stream outlives its test: for afterEach in files
 * whose tests run one at a time (concurrent tests close their own).
 */
export function closeAllTunnels(): void {
  for (const client of openClients) client.close();
  openClients.clear();
}

/** A destination on this machine's IPv4 loopback, where global-setup.ts's servers listen. */
export function loopback(port: number): Destination {
  return { type: AddressType.IPv4, host: "127.0.0.1", port };
}

export type CloseInfo = { code: number; reason: string };

/** The client end of one tunnel WebSocket. */
export class TunnelClient {
  readonly #socket: WebSocket;
  readonly #queue: (ArrayBuffer | string)[] = [];
  #wake: (() => void) | undefined;
  #closeInfo: CloseInfo | undefined;
  readonly closed: Promise<CloseInfo>;

  constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.accept();
    socket.binaryType = "arraybuffer";
    let resolveClosed!: (info: CloseInfo) => void;
    this.closed = new Promise((resolve) => {
      resolveClosed = resolve;
    });
    socket.addEventListener("message", (event) => {
      // A v4 edge PINGs after OPENED to size its windows to the round trip. Unanswered, the edge
      // has no round trip and its windows stay as announced, which is what most tests check; the
      // tests of auto-tuning answer them ("answer"), and "show" queues them like any frame.
      if (this.pings !== "show" && isPing(event.data)) {
        if (this.pings === "answer") socket.send(encodePong(new DataView(event.data).getUint32(1)));
        return;
      }
      this.#queue.push(event.data as ArrayBuffer | string);
      this.#notify();
    });
    socket.addEventListener("close", (event) => {
      this.#closeInfo = { code: event.code, reason: event.reason };
      resolveClosed(this.#closeInfo);
      this.#notify();
    });
  }

  /** What the client does with the edge's PINGs: drop them (the default), answer them, or queue them. */
  pings: "drop" | "answer" | "show" = "drop";

  /** Sends one message: a frame's bytes, or a string to provoke a text-message error. */
  send(message: Uint8Array | string): void {
    this.#socket.send(message);
  }

  /** Sends OPEN and returns the edge's OPENED (whatever its status). */
  async open(destination: Destination, windowBytes = DEFAULT_WINDOW_BYTES, earlyData?: Uint8Array): Promise<OpenedFrame> {
    this.send(encodeOpen(destination, windowBytes, earlyData));
    return this.expectFrame(FrameType.Opened);
  }

  /** The next message from the edge; rejects on timeout or when the socket closes first. */
  async nextMessage(timeoutMs = DEFAULT_WAIT_MS): Promise<ArrayBuffer | string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const message = this.#queue.shift();
      if (message !== undefined) return message;
      if (this.#closeInfo) throw new Error(`tunnel closed (${this.#closeInfo.code} ${this.#closeInfo.reason}) while waiting for a message`);
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) throw new Error(`no message from the edge within ${timeoutMs} ms`);
      await this.#waitForEvent(remainingMs);
    }
  }

  /** The next message decoded as a frame; rejects if it is text. */
  async nextFrame(timeoutMs = DEFAULT_WAIT_MS): Promise<Frame> {
    const message = await this.nextMessage(timeoutMs);
    if (typeof message === "string") throw new Error(`edge sent a text message: ${message}`);
    return decodeFrame(new Uint8Array(message));
  }

  /** The next frame, which must be of `type`. */
  async expectFrame<T extends Frame["type"]>(type: T, timeoutMs = DEFAULT_WAIT_MS): Promise<Extract<Frame, { type: T }>> {
    const frame = await this.nextFrame(timeoutMs);
    if (frame.type !== type) throw new Error(`expected frame type ${type}, got ${describeFrame(frame)}`);
    return frame as Extract<Frame, { type: T }>;
  }

  /**
   * Reads DATA frames until `byteCount` bytes have arrived (rejects on any other frame or on
   * overshoot). With `grantWindow`, returns credit for each DATA as a conformant agent would.
   */
  async readData(byteCount: number, options: { grantWindow?: boolean; timeoutMs?: number } = {}): Promise<Uint8Array> {
    const received = new Uint8Array(byteCount);
    let offset = 0;
    while (offset < byteCount) {
      const frame = await this.nextFrame(options.timeoutMs);
      if (frame.type !== FrameType.Data) throw new Error(`expected DATA after ${offset} of ${byteCount} bytes, got ${describeFrame(frame)}`);
      if (offset + frame.payload.byteLength > byteCount) {
        throw new Error(`edge sent ${offset + frame.payload.byteLength} bytes; expected ${byteCount}`);
      }
      received.set(frame.payload, offset);
      offset += frame.payload.byteLength;
      if (options.grantWindow) this.send(encodeWindow(frame.payload.byteLength));
    }
    return received;
  }

  /** Reads DATA until the edge's END and returns the bytes; rejects on any other frame. */
  async readUntilEnd(options: { grantWindow?: boolean; timeoutMs?: number } = {}): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for (;;) {
      const frame = await this.nextFrame(options.timeoutMs);
      if (frame.type === FrameType.End) return concatBytes(chunks);
      if (frame.type !== FrameType.Data) throw new Error(`expected DATA or END, got ${describeFrame(frame)}`);
      chunks.push(frame.payload);
      if (options.grantWindow) this.send(encodeWindow(frame.payload.byteLength));
    }
  }

  /** Resolves after `quietMs` with no message and no close; rejects if either happens. */
  async expectSilence(quietMs: number): Promise<void> {
    const deadline = Date.now() + quietMs;
    for (;;) {
      const message = this.#queue[0];
      if (message !== undefined) {
        const text = typeof message === "string" ? `text "${message}"` : describeFrame(decodeFrame(new Uint8Array(message)));
        throw new Error(`expected silence, the edge sent ${text}`);
      }
      if (this.#closeInfo) throw new Error(`expected silence, the tunnel closed (${this.#closeInfo.code} ${this.#closeInfo.reason})`);
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) return;
      await this.#waitForEvent(remainingMs);
    }
  }

  /** The close the edge sends; rejects if a message comes first or nothing within the timeout. */
  async expectClose(timeoutMs = DEFAULT_WAIT_MS): Promise<CloseInfo> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const message = this.#queue[0];
      if (message !== undefined) {
        const text = typeof message === "string" ? `text "${message}"` : describeFrame(decodeFrame(new Uint8Array(message)));
        throw new Error(`expected a close, the edge sent ${text}`);
      }
      if (this.#closeInfo) return this.#closeInfo;
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) throw new Error(`the edge did not close the tunnel within ${timeoutMs} ms`);
      await this.#waitForEvent(remainingMs);
    }
  }

  /** Closes the tunnel from the agent's side, as the agent does after its stream. */
  close(): void {
    if (this.#closeInfo) return;
    try {
      this.#socket.close(1000, "test finished");
    } catch {
      // already closing
    }
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #waitForEvent(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, timeoutMs);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** A frame for failure messages: its type and the fields that tell frames apart. */
export function describeFrame(frame: Frame): string {
  switch (frame.type) {
    case FrameType.Open:
      return `OPEN ${frame.destination.host}:${frame.destination.port}`;
    case FrameType.Opened:
      return `OPENED status=${frame.status} window=${frame.windowBytes} reason="${frame.reason}"`;
    case FrameType.Data:
      return `DATA ${frame.payload.byteLength} bytes`;
    case FrameType.Early:
      return `EARLY ${frame.payload.byteLength} bytes`;
    case FrameType.Window:
      return `WINDOW ${frame.bytes}`;
    case FrameType.End:
      return "END";
    case FrameType.Reset:
      return `RESET status=${frame.status} reason="${frame.reason}"`;
    case FrameType.Grow:
      return `GROW ${frame.windowBytes}`;
    case FrameType.Ping:
      return `PING ${frame.id}`;
    case FrameType.Pong:
      return `PONG ${frame.id}`;
  }
}

function isPing(data: unknown): data is ArrayBuffer {
  return data instanceof ArrayBuffer && data.byteLength === 5 && new Uint8Array(data)[0] === FrameType.Ping;
}

/** One array holding `chunks` back to back. */
export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(chunks.reduce((total, chunk) => total + chunk.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/** The first difference between two byte arrays, or undefined when equal: cheaper than toEqual on megabytes. */
export function firstDifference(actual: Uint8Array, expected: Uint8Array): string | undefined {
  if (actual.byteLength !== expected.byteLength) return `length ${actual.byteLength}, expected ${expected.byteLength}`;
  for (let index = 0; index < actual.byteLength; index++) {
    if (actual[index] !== expected[index]) return `byte ${index} is ${actual[index]}, expected ${expected[index]}`;
  }
  return undefined;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The UTF-8 bytes of `text`. */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** `bytes` read as UTF-8. */
export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}
