// A TCP relay between the agent and the edge that keeps the request head of each tunnel upgrade
// and the destination of every OPEN the agent sends, so a test can see which tunnels the agent
// opened, what their upgrades carried and what it asked the edge to dial, as it went on the
// wire. Other requests (the agent's /healthz probe at start) pass through unrecorded.

import { connect, createServer, type Server, type Socket } from "node:net";
import { FrameType, OPEN_HEADER, TUNNEL_PATH, decodeFrame, decodeHeaderOpen, type Destination } from "../../worker/protocol/index.ts";

/** Longest request head kept per connection: an OPEN in the upgrade is at most ~11 KB of base64. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Largest OPEN frame kept: type, longest name, port, window and MAX_EARLY_DATA_BYTES of early data. */
const MAX_OPEN_FRAME_BYTES = 1 + 2 + 255 + 2 + 4 + 64 * 1024;
/** RFC 6455 section 5.2: the opcode of a binary message. */
const BINARY_OPCODE = 0x2;

/** An OPEN as it went to the edge: in the upgrade's OPEN_HEADER (a cold open) or as a frame on the open tunnel. */
export type RecordedOpen = {
  destination: Destination;
  carriedIn: "upgrade" | "frame";
  /** For an OPEN frame: the masking key the agent sent it with, in hex ("00000000": unmasked). */
  maskKey?: string;
};

export type UpgradeRecorder = {
  port: number;
  /** The request head of every tunnel upgrade so far, in order of arrival. */
  heads(): string[];
  /** Resolves once `count` complete heads have arrived; rejects after `timeoutMs`. */
  waitForHeads(count: number, timeoutMs?: number): Promise<string[]>;
  /** Every OPEN the agent sent so far, in order of arrival. */
  opens(): RecordedOpen[];
  /** Resolves once `count` OPENs have arrived; rejects after `timeoutMs`. */
  waitForOpens(count: number, timeoutMs?: number): Promise<RecordedOpen[]>;
  close(): Promise<void>;
};

/**
 * Finds OPEN frames in the agent-to-edge bytes of a tunnel, after the upgrade: client frames
 * are masked (RFC 6455 section 5.3), so each is unmasked only when its first payload byte says
 * OPEN; every other frame is skipped by its length without being copied.
 */
class OpenFrameScanner {
  #header = Buffer.alloc(0);
  #payloadLeft = 0;
  #payloadSeen = 0;
  #mask = Buffer.alloc(4);
  #capture: Buffer | undefined;
  #candidate = false;

  /** Feeds the next bytes; returns the OPEN messages they completed, each with its masking key. */
  push(chunk: Buffer): { message: Uint8Array; maskKey: string }[] {
    const found: { message: Uint8Array; maskKey: string }[] = [];
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (this.#payloadLeft === 0) {
        const used = this.#readHeader(chunk.subarray(offset));
        offset += used;
        if (this.#payloadLeft === 0) continue; // header still incomplete, or an empty frame
      }
      const take = Math.min(this.#payloadLeft, chunk.byteLength - offset);
      const piece = chunk.subarray(offset, offset + take);
      if (this.#payloadSeen === 0 && this.#candidate) {
        const firstByte = (piece[0] ?? 0) ^ (this.#mask[0] ?? 0);
        if (firstByte === FrameType.Open) this.#capture = Buffer.alloc(0);
      }
      if (this.#capture) this.#capture = Buffer.concat([this.#capture, piece]);
      this.#payloadSeen += take;
      this.#payloadLeft -= take;
      offset += take;
      if (this.#payloadLeft === 0 && this.#capture) {
        const message = this.#capture;
        for (let index = 0; index < message.byteLength; index++) message[index] = (message[index] ?? 0) ^ (this.#mask[index % 4] ?? 0);
        found.push({ message, maskKey: this.#mask.toString("hex") });
        this.#capture = undefined;
      }
    }
    return found;
  }

  /** Consumes header bytes from `bytes`; once the header is whole, arms the payload. Returns bytes used. */
  #readHeader(bytes: Buffer): number {
    const before = this.#header.byteLength;
    this.#header = Buffer.concat([this.#header, bytes.subarray(0, 14)]);
    const header = this.#header;
    if (header.byteLength < 2) return bytes.byteLength;
    const lengthCode = (header[1] ?? 0) & 0x7f;
    const masked = ((header[1] ?? 0) & 0x80) !== 0;
    const extended = lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0;
    const headerBytes = 2 + extended + (masked ? 4 : 0);
    if (header.byteLength < headerBytes) return header.byteLength - before;
    const payloadBytes = lengthCode === 126 ? header.readUInt16BE(2) : lengthCode === 127 ? Number(header.readBigUInt64BE(2)) : lengthCode;
    this.#mask = masked ? Buffer.from(header.subarray(2 + extended, headerBytes)) : Buffer.alloc(4);
    const opcode = (header[0] ?? 0) & 0x0f;
    const fin = ((header[0] ?? 0) & 0x80) !== 0;
    // The agent sends every frame whole (ws does not fragment): an OPEN is one FIN binary frame.
    this.#candidate = fin && opcode === BINARY_OPCODE && payloadBytes <= MAX_OPEN_FRAME_BYTES;
    this.#payloadLeft = payloadBytes;
    this.#payloadSeen = 0;
    this.#header = Buffer.alloc(0);
    return headerBytes - before;
  }
}

/** Listens on loopback and relays every connection to `targetPort`, recording request heads and OPENs. */
export async function startUpgradeRecorder(targetPort: number): Promise<UpgradeRecorder> {
  const heads: string[] = [];
  const opens: RecordedOpen[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (inbound) => {
    const outbound = connect({ port: targetPort, host: "127.0.0.1", noDelay: true, allowHalfOpen: true });
    sockets.add(inbound).add(outbound);
    let head = "";
    let recording = true;
    let scanner: OpenFrameScanner | undefined;
    const scan = (bytes: Buffer) => {
      for (const { message, maskKey } of scanner?.push(bytes) ?? []) {
        const frame = decodeFrame(message);
        if (frame.type === FrameType.Open) opens.push({ destination: frame.destination, carriedIn: "frame", maskKey });
      }
    };
    inbound.on("data", (chunk: Buffer) => {
      if (recording) {
        head += chunk.toString("latin1");
        const end = head.indexOf("\r\n\r\n");
        if (end >= 0 || head.length > MAX_HEAD_BYTES) {
          recording = false;
          const kept = head.slice(0, end >= 0 ? end : MAX_HEAD_BYTES);
          if (head.startsWith(`GET ${TUNNEL_PATH} `)) {
            heads.push(kept);
            const headerOpen = headerValue(kept, OPEN_HEADER);
            if (headerOpen !== undefined) opens.push({ destination: decodeHeaderOpen(headerOpen).destination, carriedIn: "upgrade" });
            if (end >= 0) {
              scanner = new OpenFrameScanner();
              // Frames the agent sent in the same write as its head (latin1: one char per byte).
              scan(chunk.subarray(chunk.byteLength - (head.length - end - 4)));
            }
          }
        }
      } else {
        scan(chunk);
      }
      // Backpressure: a 64 MiB upload must not pile up here.
      if (!outbound.write(chunk)) {
        inbound.pause();
        outbound.once("drain", () => inbound.resume());
      }
    });
    inbound.on("end", () => outbound.end());
    outbound.pipe(inbound);
    for (const socket of [inbound, outbound]) {
      socket.on("error", () => {
        inbound.destroy();
        outbound.destroy();
      });
      socket.on("close", () => {
        sockets.delete(socket);
        inbound.destroy();
        outbound.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const waitFor = async <T>(list: T[], count: number, what: string, timeoutMs: number): Promise<T[]> => {
    const deadline = Date.now() + timeoutMs;
    while (list.length < count) {
      if (Date.now() > deadline) throw new Error(`${list.length} ${what} within ${timeoutMs} ms; expected ${count}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return [...list];
  };
  return {
    port: (server.address() as { port: number }).port,
    heads: () => [...heads],
    waitForHeads: (count, timeoutMs = 10_000) => waitFor(heads, count, "upgrade(s)", timeoutMs),
    opens: () => [...opens],
    waitForOpens: (count, timeoutMs = 10_000) => waitFor(opens, count, "OPEN(s)", timeoutMs),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The value of `name` in a request head, or undefined (header names match case-insensitively). */
export function headerValue(head: string, name: string): string | undefined {
  const prefix = `${name.toLowerCase()}:`;
  const line = head.split("\r\n").find((candidate) => candidate.toLowerCase().startsWith(prefix));
  return line?.slice(prefix.length).trim();
}
