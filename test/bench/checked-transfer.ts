// Single-stream transfers whose every byte is checked, for A/B runs where a relay change could
// corrupt data and still be fast. Both use origin.ts's pattern: downloads come from its origin
// and are compared here as they arrive; uploads go to an origin that compares them there.

import type { Server, Socket } from "node:net";
import { startTcpOrigin, type Listening } from "../e2e/origins.ts";
import { Mode, PATTERN } from "./origin.ts";
import { openConnection, upload, type Route } from "./workloads.ts";

/** A mode byte and an 8-byte length: origin.ts's download and upload requests. */
const REQUEST_HEAD_BYTES = 9;

/** Where checked transfers go: origin.ts's origin for downloads, the checking one for uploads. */
export type CheckedOrigins = { downloadPort: number; uploadPort: number };

/** Offset in `chunk` of its first byte that differs from the pattern at stream offset `streamOffset`; -1 if none does. */
function firstMismatch(chunk: Buffer, streamOffset: number): number {
  for (let done = 0; done < chunk.byteLength; ) {
    const at = (streamOffset + done) % PATTERN.byteLength;
    const length = Math.min(chunk.byteLength - done, PATTERN.byteLength - at);
    if (!chunk.subarray(done, done + length).equals(PATTERN.subarray(at, at + length))) return done;
    done += length;
  }
  return -1;
}

/**
 * An origin for uploads that speaks origin.ts's upload protocol ('U' + 8-byte length, answered
 * with an 8-byte count once that many bytes arrived), but counts only the bytes that arrived
 * intact before the first wrong one: `upload` from workloads.ts then fails on corruption too.
 */
export function startUploadChecker(): Promise<Listening<Server>> {
  return startTcpOrigin(checkUpload);
}

function checkUpload(socket: Socket): void {
  let head = Buffer.alloc(0);
  let expectedBytes = -1;
  let receivedBytes = 0;
  let intactBytes = 0;
  const take = (data: Buffer) => {
    const mismatch = intactBytes === receivedBytes ? firstMismatch(data, receivedBytes) : 0;
    intactBytes += mismatch === -1 ? data.byteLength : mismatch;
    receivedBytes += data.byteLength;
    if (receivedBytes < expectedBytes || socket.writableEnded) return;
    const count = Buffer.alloc(8);
    count.writeBigUInt64BE(BigInt(intactBytes));
    socket.end(count);
  };
  socket.on("data", (chunk: Buffer) => {
    if (expectedBytes >= 0) return take(chunk);
    head = Buffer.concat([head, chunk]);
    if (head.byteLength < REQUEST_HEAD_BYTES) return;
    if (head[0] !== Mode.Upload) return void socket.destroy();
    expectedBytes = Number(head.readBigUInt64BE(1));
    take(head.subarray(REQUEST_HEAD_BYTES));
  });
}

/** Downloads `totalBytes` from origin.ts's origin through `proxyPort`, checking each byte; resolves with the seconds from request to FIN. */
export async function checkedDownload(proxyPort: number, origins: CheckedOrigins, totalBytes: number): Promise<number> {
  const socket = await openConnection({ proxyPort, originPort: origins.downloadPort });
  const started = performance.now();
  const request = Buffer.alloc(REQUEST_HEAD_BYTES);
  request[0] = Mode.Download;
  request.writeBigUInt64BE(BigInt(totalBytes), 1);
  let receivedBytes = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      socket.on("data", (chunk: Buffer) => {
        const mismatch = firstMismatch(chunk, receivedBytes);
        if (mismatch >= 0) reject(new Error(`download: corrupt byte at offset ${receivedBytes + mismatch}`));
        receivedBytes += chunk.byteLength;
      });
      socket.once("end", resolve);
      socket.once("error", reject);
      socket.write(request);
    });
  } finally {
    socket.destroy();
  }
  if (receivedBytes !== totalBytes) throw new Error(`download: ${receivedBytes} of ${totalBytes} bytes arrived`);
  return (performance.now() - started) / 1000;
}

/** Uploads `totalBytes` through `proxyPort` to the checking origin; resolves with the seconds until it confirmed them all intact. */
export function checkedUpload(proxyPort: number, origins: CheckedOrigins, totalBytes: number): Promise<number> {
  const route: Route = { proxyPort, originPort: origins.uploadPort };
  return upload(route, totalBytes);
}
