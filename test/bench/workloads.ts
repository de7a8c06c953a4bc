// The benchmark's origin and client workloads. The origin is one loopback TCP server whose
// first byte from the client picks the work; the client reaches it directly or through a
// SOCKS5 proxy with a minimal RFC 1928 client, so every contender does the same handshake.

import { randomBytes } from "node:crypto";
import { connect, createServer, type Server, type Socket } from "node:net";

/** First byte the client sends: what the origin does with the connection. */
const Mode = { Download: 0x44, Upload: 0x55, Echo: 0x45, Idle: 0x49, Arrival: 0x54 } as const;

/** One random MiB written over and over: throughput runs measure the relay, not the origin's RNG. */
const PATTERN = randomBytes(1024 * 1024);

export type Origin = { port: number; close(): Promise<void>; nextArrival(): Promise<number> };

/**
 * Download: 'D' + 8-byte length, the origin sends that many bytes and FIN. Upload: 'U' + 8-byte
 * length, the origin counts that many bytes and answers with the 8-byte count (not at the
 * client's FIN: microsocks does not pass a half-close on). Echo: 'E' comes back. Idle: the
 * connection is held. Arrival: the origin notes when 'T' arrived (performance.now()).
 */
export async function startOrigin(): Promise<Origin> {
  const sockets = new Set<Socket>();
  let arrivalWaiter: ((atMs: number) => void) | undefined;
  const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let head = Buffer.alloc(0);
    const onHead = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const needsLength = head[0] === Mode.Download || head[0] === Mode.Upload;
      if (needsLength && head.byteLength < 9) return;
      socket.off("data", onHead);
      serve(socket, head);
    };
    socket.on("data", onHead);
  });
  const serve = (socket: Socket, first: Buffer) => {
      const mode = first[0];
      if (mode === Mode.Arrival) {
        arrivalWaiter?.(performance.now());
        arrivalWaiter = undefined;
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
      }
      else if (mode === Mode.Idle) {
        // Nothing to send; end when the client ends, as a server would.
        socket.on("end", () => socket.end());
        socket.resume();
      }
  };
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    nextArrival: () => new Promise((resolve) => (arrivalWaiter = resolve)),
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

/** Where a client connects: straight to the origin (proxyPort undefined) or through SOCKS5. */
export type Route = { proxyPort: number | undefined; originPort: number };

/** A connection to the origin, with any SOCKS5 handshake done: greeting, method, CONNECT, reply. */
export async function openConnection(route: Route): Promise<Socket> {
  if (route.proxyPort === undefined) return connectTo(route.originPort);
  const socket = await connectTo(route.proxyPort);
  socket.write(Uint8Array.of(0x05, 0x01, 0x00));
  await readExactly(socket, 2);
  socket.write(Uint8Array.of(0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, route.originPort >> 8, route.originPort & 0xff));
  const reply = await readExactly(socket, 10);
  if (reply[1] !== 0x00) {
    socket.destroy();
    throw new Error(`SOCKS reply 0x${(reply[1] ?? 0).toString(16)}`);
  }
  return socket;
}

function connectTo(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, noDelay: true, allowHalfOpen: true }, () => {
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** Reads exactly `byteLength` bytes (the SOCKS replies), leaving the socket paused for the caller. */
function readExactly(socket: Socket, byteLength: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const onReadable = () => {
      let chunk: Buffer | null;
      while (buffered.byteLength < byteLength && (chunk = socket.read(byteLength - buffered.byteLength) ?? socket.read()) !== null) {
        buffered = Buffer.concat([buffered, chunk]);
      }
      if (buffered.byteLength < byteLength) return;
      socket.off("readable", onReadable);
      socket.off("error", reject);
      socket.off("end", onEnd);
      if (buffered.byteLength > byteLength) socket.unshift(buffered.subarray(byteLength));
      resolve(buffered.subarray(0, byteLength));
    };
    const onEnd = () => reject(new Error("closed during the SOCKS handshake"));
    socket.on("readable", onReadable);
    socket.once("error", reject);
    socket.once("end", onEnd);
  });
}

/** Downloads `totalBytes`; resolves with the seconds from request to FIN. */
export async function download(route: Route, totalBytes: number): Promise<number> {
  const socket = await openConnection(route);
  const started = performance.now();
  const request = Buffer.alloc(9);
  request[0] = Mode.Download;
  request.writeBigUInt64BE(BigInt(totalBytes), 1);
  let receivedBytes = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => (receivedBytes += chunk.byteLength));
    socket.once("end", resolve);
    socket.once("error", reject);
    socket.write(request);
  });
  socket.destroy();
  if (receivedBytes !== totalBytes) throw new Error(`download: ${receivedBytes} of ${totalBytes} bytes arrived`);
  return (performance.now() - started) / 1000;
}

/** Uploads `totalBytes`; resolves with the seconds until the origin confirmed the count. */
export async function upload(route: Route, totalBytes: number): Promise<number> {
  const socket = await openConnection(route);
  const started = performance.now();
  const answer = new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("error", reject);
  });
  const request = Buffer.alloc(9);
  request[0] = Mode.Upload;
  request.writeBigUInt64BE(BigInt(totalBytes), 1);
  socket.write(request);
  let remaining = totalBytes;
  while (remaining > 0) {
    const chunk = remaining >= PATTERN.byteLength ? PATTERN : PATTERN.subarray(0, remaining);
    remaining -= chunk.byteLength;
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once("drain", resolve));
  }
  const answerBytes = await answer;
  if (answerBytes.byteLength !== 8) throw new Error(`upload: the origin's answer is ${answerBytes.byteLength} bytes, not 8`);
  const count = Number(answerBytes.readBigUInt64BE(0));
  socket.destroy();
  if (count !== totalBytes) throw new Error(`upload: the origin counted ${count} of ${totalBytes} bytes`);
  return (performance.now() - started) / 1000;
}

/** Milliseconds from a fresh connect (SOCKS handshake included) to the first byte back. */
export async function firstByteMs(route: Route): Promise<number> {
  const started = performance.now();
  const socket = await openConnection(route);
  await new Promise<void>((resolve, reject) => {
    socket.once("data", () => resolve());
    socket.once("error", reject);
    socket.write(Uint8Array.of(Mode.Echo));
  });
  const elapsed = performance.now() - started;
  socket.destroy();
  return elapsed;
}

/** Milliseconds from a fresh connect to the client's first byte arriving at the origin. */
export async function firstByteAtOriginMs(route: Route, origin: Origin): Promise<number> {
  const arrival = origin.nextArrival();
  const started = performance.now();
  const socket = await openConnection(route);
  socket.write(Uint8Array.of(Mode.Arrival));
  const arrivedAt = await arrival;
  socket.destroy();
  return arrivedAt - started;
}

/** Opens `count` connections and leaves them idle; resolves with them once all are established. */
export async function openIdle(route: Route, count: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  for (let opened = 0; opened < count; opened += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, count - opened) }, () => openConnection(route)));
    for (const socket of batch) {
      socket.write(Uint8Array.of(Mode.Idle));
      socket.on("error", () => {});
      sockets.push(socket);
    }
  }
  return sockets;
}
