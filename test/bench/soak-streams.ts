// Byte streams through the agent's SOCKS5 or HTTP CONNECT front, every byte checked: downloads
// and uploads of origin.ts's PATTERN (compared as they arrive, or by the checking origin of
// checked-transfer.ts), short echo exchanges, and transfers the client resets midway.

import { connect, type Socket } from "node:net";
import { Mode, PATTERN } from "./origin.ts";
import { openConnection } from "./workloads.ts";

/** The agent's front door a stream goes through. */
export type StreamFront = "socks5" | "connect";

/** Bytes or a count that differ from what was sent: the failure a soak exists to find. */
export class ByteMismatch extends Error {
  override name = "ByteMismatch";
}

/** What a transfer proved: bytes compared and found right, and whether the client reset it on purpose. */
export type TransferResult = { checkedBytes: number; resetByClient: boolean };

/** Longest CONNECT answer head read; the agent's is one short line. */
const MAX_CONNECT_HEAD_BYTES = 8 * 1024;
/** A mode byte and an 8-byte length: origin.ts's download and upload requests. */
const REQUEST_HEAD_BYTES = 9;

/** A connection to 127.0.0.1:originPort through the agent at proxyPort, its handshake done; paused. */
export async function openStream(front: StreamFront, proxyPort: number, originPort: number, track: (socket: Socket) => void): Promise<Socket> {
  if (front === "socks5") {
    const socket = await openConnection({ proxyPort, originPort });
    track(socket);
    return socket;
  }
  const socket = connect({ host: "127.0.0.1", port: proxyPort, noDelay: true, allowHalfOpen: true });
  track(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const authority = `127.0.0.1:${originPort}`;
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  const head = await readConnectHead(socket);
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  if (status?.[1] !== "200") throw new Error(`CONNECT answered ${JSON.stringify(head.split("\r\n")[0] ?? "")}`);
  return socket;
}

/** Reads up to the end of the CONNECT answer's head; bytes after it are put back. */
function readConnectHead(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const done = (settle: () => void) => {
      socket.off("data", onData);
      socket.off("error", reject);
      socket.off("end", onEnd);
      settle();
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buffered.byteLength > MAX_CONNECT_HEAD_BYTES) done(() => reject(new Error(`CONNECT answer head longer than ${MAX_CONNECT_HEAD_BYTES} bytes`)));
        return;
      }
      socket.pause();
      const rest = buffered.subarray(end + 4);
      if (rest.byteLength > 0) socket.unshift(rest);
      done(() => resolve(buffered.subarray(0, end).toString("latin1")));
    };
    const onEnd = () => done(() => reject(new Error("closed before answering CONNECT")));
    socket.on("data", onData);
    socket.once("error", reject);
    socket.once("end", onEnd);
  });
}

/** Offset in `chunk` of its first byte that differs from the PATTERN at stream offset `streamOffset`; -1 if none does. */
function firstMismatch(chunk: Buffer, streamOffset: number): number {
  for (let done = 0; done < chunk.byteLength; ) {
    const at = (streamOffset + done) % PATTERN.byteLength;
    const length = Math.min(chunk.byteLength - done, PATTERN.byteLength - at);
    if (!chunk.subarray(done, done + length).equals(PATTERN.subarray(at, at + length))) {
      let offset = done;
      while (chunk[offset] === PATTERN[at + offset - done]) offset++;
      return offset;
    }
    done += length;
  }
  return -1;
}

function requestHead(mode: number, totalBytes: number): Buffer {
  const head = Buffer.alloc(REQUEST_HEAD_BYTES);
  head[0] = mode;
  head.writeBigUInt64BE(BigInt(totalBytes), 1);
  return head;
}

/**
 * Downloads `totalBytes` of the PATTERN, comparing each chunk as it arrives. With
 * `resetAfterBytes`, the client resets the connection (RST) once that many have arrived.
 * A clean end short of the length is a ByteMismatch: a relay that lost bytes must reset.
 */
export function patternDownload(socket: Socket, totalBytes: number, resetAfterBytes?: number): Promise<TransferResult> {
  let receivedBytes = 0;
  return new Promise<TransferResult>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => {
      const mismatch = firstMismatch(chunk, receivedBytes);
      if (mismatch >= 0) {
        socket.destroy();
        return reject(new ByteMismatch(`download: wrong byte at offset ${receivedBytes + mismatch} of ${totalBytes}`));
      }
      receivedBytes += chunk.byteLength;
      if (receivedBytes > totalBytes) return reject(new ByteMismatch(`download: ${receivedBytes} bytes arrived, ${totalBytes} were sent`));
      if (resetAfterBytes !== undefined && receivedBytes >= resetAfterBytes) {
        socket.resetAndDestroy();
        resolve({ checkedBytes: receivedBytes, resetByClient: true });
      }
    });
    socket.once("end", () => {
      if (receivedBytes === totalBytes) resolve({ checkedBytes: receivedBytes, resetByClient: false });
      else reject(new ByteMismatch(`download: clean end after ${receivedBytes} of ${totalBytes} bytes`));
    });
    socket.once("error", (error: NodeJS.ErrnoException) => reject(new Error(`download: ${error.code ?? error.message} after ${receivedBytes} of ${totalBytes} bytes`)));
    socket.once("close", () => reject(new Error(`download: closed without an end after ${receivedBytes} of ${totalBytes} bytes`)));
    socket.write(requestHead(Mode.Download, totalBytes));
    socket.resume();
  }).finally(() => socket.destroy());
}

/**
 * Uploads `totalBytes` of the PATTERN in writes of `nextWriteBytes()` bytes, and resolves once the
 * checking origin has counted them all intact. With `resetAfterBytes`, the client resets the
 * connection once that many are written, and no answer is awaited.
 */
export async function patternUpload(socket: Socket, totalBytes: number, nextWriteBytes: () => number, resetAfterBytes?: number): Promise<TransferResult> {
  const failed = new Promise<never>((_, reject) => {
    socket.once("error", (error: NodeJS.ErrnoException) => reject(new Error(`upload: ${error.code ?? error.message}`)));
    socket.once("close", () => reject(new Error("upload: closed before the origin answered")));
  });
  failed.catch(() => {}); // raced below; a reset after a deliberate one is expected
  const answer = new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.once("end", () => resolve(Buffer.concat(chunks)));
  });
  socket.resume();
  try {
    socket.write(requestHead(Mode.Upload, totalBytes));
    let sentBytes = 0;
    while (sentBytes < totalBytes) {
      const at = sentBytes % PATTERN.byteLength;
      const length = Math.min(nextWriteBytes(), totalBytes - sentBytes, PATTERN.byteLength - at);
      sentBytes += length;
      const flushed = socket.write(PATTERN.subarray(at, at + length));
      if (resetAfterBytes !== undefined && sentBytes >= resetAfterBytes) {
        socket.resetAndDestroy();
        return { checkedBytes: 0, resetByClient: true };
      }
      if (!flushed) await Promise.race([new Promise((resolve) => socket.once("drain", resolve)), failed]);
    }
    const answerBytes = await Promise.race([answer, failed]);
    if (answerBytes.byteLength !== 8) throw new ByteMismatch(`upload: the origin's answer is ${answerBytes.byteLength} bytes, not 8`);
    const intactBytes = Number(answerBytes.readBigUInt64BE(0));
    if (intactBytes !== totalBytes) throw new ByteMismatch(`upload: the origin found ${intactBytes} of ${totalBytes} bytes intact`);
    return { checkedBytes: totalBytes, resetByClient: false };
  } finally {
    socket.destroy();
  }
}

/** Sends each payload to the echo origin and compares what comes back, one round trip at a time; then a clean end both ways. */
export async function echoExchange(socket: Socket, payloads: Buffer[]): Promise<TransferResult> {
  let buffered = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let ended = false;
  let failure: Error | undefined;
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    wake?.();
  });
  socket.once("end", () => {
    ended = true;
    wake?.();
  });
  socket.once("error", (error: NodeJS.ErrnoException) => {
    failure = new Error(`echo: ${error.code ?? error.message}`);
    wake?.();
  });
  socket.once("close", () => {
    failure ??= ended ? undefined : new Error("echo: closed without an end");
    wake?.();
  });
  socket.resume();
  /** Waits until `ready()` holds, the stream ends or fails. */
  const until = async (ready: () => boolean) => {
    while (!ready() && !ended && failure === undefined) await new Promise<void>((resolve) => (wake = resolve));
    if (failure) throw failure;
  };
  try {
    let checkedBytes = 0;
    for (const payload of payloads) {
      socket.write(payload);
      await until(() => buffered.byteLength >= payload.byteLength);
      if (buffered.byteLength < payload.byteLength) throw new ByteMismatch(`echo: clean end after ${buffered.byteLength} of ${payload.byteLength} bytes of a round trip`);
      if (!buffered.subarray(0, payload.byteLength).equals(payload)) throw new ByteMismatch(`echo: a ${payload.byteLength}-byte round trip came back different`);
      buffered = buffered.subarray(payload.byteLength);
      checkedBytes += payload.byteLength;
    }
    socket.end();
    await until(() => false);
    if (buffered.byteLength > 0) throw new ByteMismatch(`echo: ${buffered.byteLength} bytes came back that were never sent`);
    return { checkedBytes, resetByClient: false };
  } finally {
    socket.destroy();
  }
}
