// The streams the cost benchmark drives over a RawTunnel, every byte checked: a short exchange
// (what opening a stream costs the Worker), and a bulk download and upload (what a MB costs it).
// Flow control is the agent's: the download's credit goes back through ReceiveWindow, the upload
// waits on the edge's credit with SendCredit and sends frames of the agent's size.

import type { Server, Socket } from "node:net";
import { startTcpOrigin, type Listening } from "../e2e/origins.ts";
import { ReceiveWindow, SendCredit } from "../../worker/protocol/flow-control.ts";
import {
  AddressType,
  DEFAULT_WINDOW_BYTES,
  FrameType,
  StreamStatus,
  encodeData,
  encodeEnd,
  encodeOpen,
  encodeWindow,
  type Destination,
  type Frame,
  type OpenedFrame,
} from "../../worker/protocol/index.ts";
import { Mode, PATTERN } from "./origin.ts";
import type { RawTunnel } from "./raw-tunnel.ts";

/** The agent's upload frame size (local-agent/tunnel/upload-sender.ts UPLOAD_FRAME_BYTES): workerd's upload cost depends on it. */
const UPLOAD_FRAME_BYTES = 256 * 1024;
/** origin.ts's download and upload requests: a mode byte and an 8-byte length. */
const REQUEST_HEAD_BYTES = 9;

/** 127.0.0.1:`port` as a stream's destination. */
export function loopbackDestination(port: number): Destination {
  return { type: AddressType.IPv4, host: "127.0.0.1", port };
}

/** The OPEN frame for `destination` with the agent's default receive window. */
export function openFrame(destination: Destination): Uint8Array {
  return encodeOpen(destination, DEFAULT_WINDOW_BYTES);
}

/** An origin for exchanges: reads to the client's FIN, then sends back what it read and its own FIN. */
export function startEchoAfterFinOrigin(): Promise<Listening<Server>> {
  return startTcpOrigin((socket: Socket) => {
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => socket.end(Buffer.concat(chunks)));
  });
}

/**
 * One short stream: OPEN (unless `openSent`, when it rode in the upgrade), OPENED, `payload` up
 * and END, the origin's echo down and END. Rejects unless the echo is `payload` exactly.
 */
export async function exchange(tunnel: RawTunnel, destination: Destination, payload: Uint8Array, openSent: boolean): Promise<void> {
  if (!openSent) void tunnel.send(openFrame(destination));
  await expectOpened(tunnel);
  void tunnel.send(encodeData(payload));
  void tunnel.send(encodeEnd());
  const chunks: Uint8Array[] = [];
  for (;;) {
    const frame = await tunnel.nextFrame();
    if (frame.type === FrameType.End) break;
    chunks.push(dataPayload(frame, "exchange"));
  }
  const echoed = Buffer.concat(chunks);
  if (!echoed.equals(payload)) throw new Error(`exchange: the ${echoed.byteLength} bytes that came back are not the ${payload.byteLength} sent`);
}

/** Downloads `totalBytes` from origin.ts's origin at `destination`, checking each byte against its pattern as it arrives. */
export async function checkedDownload(tunnel: RawTunnel, destination: Destination, totalBytes: number): Promise<void> {
  void tunnel.send(openFrame(destination));
  await expectOpened(tunnel);
  const request = Buffer.alloc(REQUEST_HEAD_BYTES);
  request[0] = Mode.Download;
  request.writeBigUInt64BE(BigInt(totalBytes), 1);
  void tunnel.send(encodeData(request));
  void tunnel.send(encodeEnd());
  const receive = new ReceiveWindow(DEFAULT_WINDOW_BYTES);
  let receivedBytes = 0;
  for (;;) {
    const frame = await tunnel.nextFrame();
    if (frame.type === FrameType.End) break;
    const payload = dataPayload(frame, "download");
    const mismatch = firstMismatch(payload, receivedBytes);
    if (mismatch >= 0) throw new Error(`download: a corrupt byte in the ${payload.byteLength - mismatch} bytes from offset ${receivedBytes + mismatch}`);
    receivedBytes += payload.byteLength;
    receive.received(payload.byteLength);
    const grant = receive.delivered(payload.byteLength);
    if (grant > 0) void tunnel.send(encodeWindow(grant));
  }
  if (receivedBytes !== totalBytes) throw new Error(`download: the edge sent END after ${receivedBytes} of ${totalBytes} bytes`);
}

/**
 * Uploads `totalBytes` of origin.ts's pattern to checked-transfer.ts's upload checker at
 * `destination`, under the edge's credit; resolves once the checker confirmed every byte intact.
 */
export async function checkedUpload(tunnel: RawTunnel, destination: Destination, totalBytes: number): Promise<void> {
  void tunnel.send(openFrame(destination));
  const opened = await expectOpened(tunnel);
  const credit = new SendCredit(opened.windowBytes, opened.windowBytes);
  let readerFailed = false;
  // The edge's frames while we send: WINDOW grants, then the checker's 8-byte count and END.
  const answer = (async () => {
    const chunks: Uint8Array[] = [];
    for (;;) {
      const frame = await tunnel.nextFrame();
      if (frame.type === FrameType.Window) credit.grant(frame.bytes);
      else if (frame.type === FrameType.End) return Buffer.concat(chunks);
      else chunks.push(dataPayload(frame, "upload"));
    }
  })().catch((error: unknown) => {
    readerFailed = true;
    credit.release();
    throw error;
  });
  const head = Buffer.alloc(REQUEST_HEAD_BYTES);
  head[0] = Mode.Upload;
  head.writeBigUInt64BE(BigInt(totalBytes), 1);
  let pending: Uint8Array[] = [head];
  let pendingBytes = head.byteLength;
  for (let sentBytes = 0; sentBytes < totalBytes || pendingBytes > 0; ) {
    await credit.whenAvailable();
    if (readerFailed) break;
    // The head goes in the first frame; the first credit (a whole window) has room for it.
    const patternAt = sentBytes % PATTERN.byteLength;
    const roomBytes = Math.min(credit.availableBytes, UPLOAD_FRAME_BYTES) - pendingBytes;
    const pieceBytes = Math.max(0, Math.min(roomBytes, totalBytes - sentBytes, PATTERN.byteLength - patternAt));
    if (pieceBytes > 0) pending.push(PATTERN.subarray(patternAt, patternAt + pieceBytes));
    sentBytes += pieceBytes;
    pendingBytes += pieceBytes;
    credit.consume(pendingBytes);
    void tunnel.send(encodeData(pending));
    pending = [];
    pendingBytes = 0;
  }
  if (!readerFailed) void tunnel.send(encodeEnd());
  const count = await answer;
  const intactBytes = count.byteLength === 8 ? Number(count.readBigUInt64BE(0)) : -1;
  if (intactBytes !== totalBytes) throw new Error(`upload: the checker confirmed ${intactBytes} of ${totalBytes} bytes intact`);
}

async function expectOpened(tunnel: RawTunnel): Promise<OpenedFrame> {
  const frame = await tunnel.nextFrame();
  if (frame.type !== FrameType.Opened) throw new Error(`expected OPENED, the edge sent frame type ${frame.type}`);
  if (frame.status !== StreamStatus.Ok) throw new Error(`the edge could not open the stream: status ${frame.status} ${frame.reason}`);
  return frame;
}

/** The payload of a DATA frame; any other frame (a RESET above all) is an error naming `what`. */
function dataPayload(frame: Frame, what: string): Uint8Array {
  if (frame.type === FrameType.Data) return frame.payload;
  if (frame.type === FrameType.Reset) throw new Error(`${what}: the edge reset the stream: status ${frame.status} ${frame.reason}`);
  throw new Error(`${what}: expected DATA or END, the edge sent frame type ${frame.type}`);
}

/** Where in `chunk` the first piece (up to a pattern boundary) that differs from the pattern at `streamOffset` starts; -1 if none does. */
function firstMismatch(chunk: Uint8Array, streamOffset: number): number {
  const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  for (let done = 0; done < bytes.byteLength; ) {
    const at = (streamOffset + done) % PATTERN.byteLength;
    const length = Math.min(bytes.byteLength - done, PATTERN.byteLength - at);
    if (!bytes.subarray(done, done + length).equals(PATTERN.subarray(at, at + length))) return done;
    done += length;
  }
  return -1;
}
