// The benchmark's origin: one loopback TCP server whose first byte from the client picks the
// work (workloads.ts holds the clients).

import { randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";

/** First byte the client sends: what the origin does with the connection. */
export const Mode = { Download: 0x44, Upload: 0x55, Echo: 0x45, Idle: 0x49, Arrival: 0x54 } as const;

/** One random MiB written over and over: throughput runs measure the relay, not the origin's RNG. */
export const PATTERN = randomBytes(1024 * 1024);

/** Bytes after the Arrival mode byte: a random tag naming the connection. */
export const ARRIVAL_TAG_BYTES = 8;

export type Origin = {
  port: number;
  close(): Promise<void>;
  /** performance.now() when the Arrival connection tagged `tagHex` delivered its first bytes. */
  arrivalOf(tagHex: string): Promise<number>;
};

/**
 * Download: 'D' + 8-byte length, the origin sends that many bytes and FIN. Upload: 'U' + 8-byte
 * length, the origin counts that many bytes and answers with the 8-byte count (not at the
 * client's FIN: microsocks does not pass a half-close on). Echo: 'E' comes back. Idle: the
 * connection is held. Arrival: 'T' + an 8-byte tag, the origin notes when the connection's first
 * bytes arrived (performance.now(), this process's clock, which the client shares) and closes it.
 */
export async function startOrigin(): Promise<Origin> {
  const sockets = new Set<Socket>();
  const arrivals = new Map<string, number>();
  const arrivalWaiters = new Map<string, (atMs: number) => void>();
  const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let head = Buffer.alloc(0);
    let firstBytesAtMs: number | undefined;
    const onHead = (chunk: Buffer) => {
      firstBytesAtMs ??= performance.now();
      head = Buffer.concat([head, chunk]);
      const needsLength = head[0] === Mode.Download || head[0] === Mode.Upload;
      if (needsLength && head.byteLength < 9) return;
      if (head[0] === Mode.Arrival && head.byteLength < 1 + ARRIVAL_TAG_BYTES) return;
      socket.off("data", onHead);
      serve(socket, head, firstBytesAtMs);
    };
    socket.on("data", onHead);
  });
  const serve = (socket: Socket, first: Buffer, firstBytesAtMs: number) => {
    const mode = first[0];
    if (mode === Mode.Arrival) {
      const tagHex = first.subarray(1, 1 + ARRIVAL_TAG_BYTES).toString("hex");
      const waiter = arrivalWaiters.get(tagHex);
      arrivalWaiters.delete(tagHex);
      if (waiter) waiter(firstBytesAtMs);
      else arrivals.set(tagHex, firstBytesAtMs);
      socket.end();
    } else if (mode === Mode.Echo) {
      socket.end(first.subarray(0, 1));
    } else if (mode === Mode.Download) {
      void sendPattern(socket, Number(first.readBigUInt64BE(1)));
    } else if (mode === Mode.Upload) {
      const expectedBytes = Number(first.readBigUInt64BE(1));
      let receivedBytes = first.byteLength - 9;
      const answerWhenDone = () => {
        if (receivedBytes < expectedBytes) return;
        const count = Buffer.alloc(8);
        count.writeBigUInt64BE(BigInt(receivedBytes));
        socket.end(count);
      };
      socket.on("data", (chunk: Buffer) => {
        receivedBytes += chunk.byteLength;
        answerWhenDone();
      });
      answerWhenDone();
    } else if (mode === Mode.Idle) {
      // Nothing to send; end when the client ends, as a server would.
      socket.on("end", () => socket.end());
      socket.resume();
    }
  };
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    arrivalOf: (tagHex) =>
      new Promise((resolve) => {
        const atMs = arrivals.get(tagHex);
        arrivals.delete(tagHex);
        if (atMs === undefined) arrivalWaiters.set(tagHex, resolve);
        else resolve(atMs);
      }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

async function sendPattern(socket: Socket, totalBytes: number): Promise<void> {
  let remaining = totalBytes;
  while (remaining > 0 && !socket.destroyed) {
    const chunk = remaining >= PATTERN.byteLength ? PATTERN : PATTERN.subarray(0, remaining);
    remaining -= chunk.byteLength;
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once("drain", resolve));
  }
  socket.end();
}
