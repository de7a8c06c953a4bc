// Opens a tunnel through the upstream proxy named by EDGESOCKS_UPSTREAM, over a connection the
// caller has already dialed: the SOCKS5 (RFC 1928 + RFC 1929) or HTTP CONNECT exchange, reading
// and writing only; upstream-codec.ts builds and parses every message.
//
// Only web streams and Uint8Array: the same code runs in workerd (over a cloudflare:sockets
// Socket) and in Node (over Duplex.toWeb(socket)), where the tests drive it against real proxies.
// There is no timeout here: the caller bounds the handshake by closing the socket, which ends a
// pending read and so the handshake.

import type { Destination } from "../protocol/index.ts";
import { StreamStatus } from "../protocol/index.ts";
import {
  AuthMethod,
  UpstreamError,
  classifyConnectResponse,
  encodeConnectRequest,
  encodeGreeting,
  encodeHttpConnect,
  encodeUserPass,
  offeredMethod,
  parseConnectReply,
  parseHttpResponseHead,
  parseMethodSelection,
  parseUserPassStatus,
  type ParseResult,
} from "./upstream-codec.ts";
import type { UpstreamProxy } from "./upstream-url.ts";

export { UpstreamError };

export type ByteChannel = { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> };

/** Runs the SOCKS5 (RFC 1928 + RFC 1929) or HTTP CONNECT handshake for `destination` through `proxy`; resolves once the tunnel is open, with any bytes the proxy sent past its reply. Releases every reader/writer lock it took before it resolves or rejects. */
export async function upstreamHandshake(channel: ByteChannel, proxy: UpstreamProxy, destination: Destination): Promise<{ leftover: Uint8Array }> {
  const reader = channel.readable.getReader();
  let writer: WritableStreamDefaultWriter<Uint8Array>;
  try {
    writer = channel.writable.getWriter();
  } catch (error) {
    reader.releaseLock();
    throw error;
  }
  const input = new HandshakeInput(reader, proxy.label);
  const send = async (bytes: Uint8Array): Promise<void> => {
    try {
      await writer.write(bytes);
    } catch (cause) {
      throw closedDuringHandshake(proxy.label, cause);
    }
  };
  try {
    if (proxy.scheme === "socks5") await socks5Handshake(input, send, proxy, destination);
    else await httpConnectHandshake(input, send, proxy, destination);
    return { leftover: input.rest() };
  } finally {
    // Every read and write above has settled by now, so neither release can fail a pending one.
    reader.releaseLock();
    writer.releaseLock();
  }
}

type Send = (bytes: Uint8Array) => Promise<void>;

/** RFC 1928 sections 3, 4 and 6, with RFC 1929 between method selection and the request when the proxy has credentials. */
async function socks5Handshake(input: HandshakeInput, send: Send, proxy: UpstreamProxy, destination: Destination): Promise<void> {
  const request = encodeConnectRequest(destination); // a bad destination throws before anything is sent
  const offered = offeredMethod(proxy);
  await send(encodeGreeting(offered));
  await input.next((bytes) => parseMethodSelection(bytes, offered, proxy.label));
  if (offered === AuthMethod.UsernamePassword) {
    await send(encodeUserPass(proxy.username ?? "", proxy.password ?? ""));
    await input.next((bytes) => parseUserPassStatus(bytes, proxy.label));
  }
  await send(request);
  await input.next((bytes) => parseConnectReply(bytes, proxy.label));
}

/** RFC 9110 section 9.3.6: any 2xx opens the tunnel; interim 1xx heads are skipped; a failure's body is never read. */
async function httpConnectHandshake(input: HandshakeInput, send: Send, proxy: UpstreamProxy, destination: Destination): Promise<void> {
  await send(encodeHttpConnect(proxy, destination));
  let interimBytes = 0;
  for (;;) {
    const { head, headBytes } = await input.next((bytes) => {
      const result = parseHttpResponseHead(bytes, proxy.label, interimBytes);
      return result === "incomplete" ? result : { value: { head: result.value, headBytes: result.bytesUsed }, bytesUsed: result.bytesUsed };
    });
    const outcome = classifyConnectResponse(head, proxy.label, proxy.username !== undefined);
    if (outcome === "open") return;
    if (outcome !== "interim") throw outcome;
    interimBytes += headBytes;
  }
}

/** The handshake's view of the proxy's bytes: parses messages off the front, keeping what follows them. */
class HandshakeInput {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #label: string;
  #buffered = new Uint8Array(0);

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>, label: string) {
    this.#reader = reader;
    this.#label = label;
  }

  /** The next message `parse` finds, reading until it has one; the proxy closing first is an UpstreamError. */
  async next<T>(parse: (bytes: Uint8Array) => ParseResult<T>): Promise<T> {
    for (;;) {
      const result = parse(this.#buffered);
      if (result !== "incomplete") {
        this.#buffered = this.#buffered.subarray(result.bytesUsed);
        return result.value;
      }
      await this.#readMore();
    }
  }

  /** What the proxy sent past the last message, in a buffer of its own. */
  rest(): Uint8Array {
    return this.#buffered.slice();
  }

  async #readMore(): Promise<void> {
    let chunk: Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]>>;
    try {
      chunk = await this.#reader.read();
    } catch (cause) {
      throw closedDuringHandshake(this.#label, cause);
    }
    if (chunk.done) throw closedDuringHandshake(this.#label);
    if (chunk.value.byteLength === 0) return;
    const joined = new Uint8Array(this.#buffered.byteLength + chunk.value.byteLength);
    joined.set(this.#buffered, 0);
    joined.set(chunk.value, this.#buffered.byteLength);
    this.#buffered = joined;
  }
}

function closedDuringHandshake(label: string, cause?: unknown): UpstreamError {
  return new UpstreamError(StreamStatus.GeneralFailure, `upstream ${label} closed the connection during the handshake`, cause === undefined ? undefined : { cause });
}
