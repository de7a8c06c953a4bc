// The benchmark's client workloads. A client reaches the origin (origin.ts) directly or through
// a SOCKS5 proxy with a minimal RFC 1928 client, so every contender does the same handshake.

import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { ARRIVAL_TAG_BYTES, Mode, PATTERN, type Origin } from "./origin.ts";

/** Where a client connects: straight to the origin (proxyPort undefined) or through SOCKS5. */
export type Route = { proxyPort: number | undefined; originPort: number };

/** A connection to the origin, with any SOCKS5 handshake done: greeting, method, CONNECT, reply. */
export async function openConnection(route: Route): Promise<Socket> {
  if (route.proxyPort === undefined) return connectTo(route.originPort);
  const socket = await connectTo(route.proxyPort);
  try {
    await greet(socket);
    socket.write(connectRequest(route.originPort));
    await readConnectReply(socket);
  } catch (error) {
    socket.destroy();
    throw error;
  }
  return socket;
}

/** SOCKS5 greeting offering no authentication, and the server's choice. */
async function greet(socket: Socket): Promise<void> {
  socket.write(Uint8Array.of(0x05, 0x01, 0x00));
  const choice = await readExactly(socket, 2);
  if (choice[1] !== 0x00) throw new Error(`SOCKS method 0x${(choice[1] ?? 0).toString(16)}`);
}

/** CONNECT to 127.0.0.1:port (IPv4 address type, so every reply is 10 bytes). */
function connectRequest(port: number): Uint8Array {
  return Uint8Array.of(0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, port >> 8, port & 0xff);
}

async function readConnectReply(socket: Socket): Promise<void> {
  const reply = await readExactly(socket, 10);
  if (reply[1] !== 0x00) throw new Error(`SOCKS reply 0x${(reply[1] ?? 0).toString(16)}`);
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

/**
 * How a client sends its first bytes through SOCKS5: "normal" waits for the CONNECT reply, as
 * curl and browsers do; "optimistic" writes them together with the CONNECT request.
 */
export type ClientKind = "normal" | "optimistic";

export type ArrivalTiming = {
  /** Milliseconds from the client's first payload leaving to its arrival at the origin. */
  payloadMs: number;
  /** Milliseconds from the start of the TCP connect to the proxy to that arrival. */
  fromConnectMs: number;
};

/** Longest a payload may take to reach the origin before the measurement fails. */
const ARRIVAL_TIMEOUT_MS = 15_000;

/** One fresh connection through the SOCKS5 proxy at route.proxyPort: when its first payload reaches the origin. */
export async function payloadArrival(route: Route & { proxyPort: number }, origin: Origin, kind: ClientKind): Promise<ArrivalTiming> {
  const tag = randomBytes(ARRIVAL_TAG_BYTES); // random, so a late arrival is never taken for this one
  const payload = Buffer.concat([Uint8Array.of(Mode.Arrival), tag]);
  const arrival = origin.arrivalOf(tag.toString("hex"));
  const connectStartedMs = performance.now();
  const socket = await connectTo(route.proxyPort);
  // Listened to from the start: a reset after the handshake must fail this sample, not the process.
  const failed = new Promise<never>((_, reject) => socket.on("error", reject));
  let timer: NodeJS.Timeout | undefined;
  try {
    await greet(socket);
    let payloadSentMs: number;
    let replied: Promise<void>;
    if (kind === "optimistic") {
      payloadSentMs = performance.now();
      socket.write(Buffer.concat([connectRequest(route.originPort), payload]));
      replied = readConnectReply(socket);
    } else {
      socket.write(connectRequest(route.originPort));
      await readConnectReply(socket);
      payloadSentMs = performance.now();
      socket.write(payload);
      replied = Promise.resolve();
    }
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the payload did not reach the origin within ${ARRIVAL_TIMEOUT_MS} ms`)), ARRIVAL_TIMEOUT_MS);
    });
    // A refusal ends the wait at once; a success reply must not, the arrival is what is timed.
    const arrivedMs = await Promise.race([arrival, timeout, failed, replied.then(() => arrival)]);
    return { payloadMs: arrivedMs - payloadSentMs, fromConnectMs: arrivedMs - connectStartedMs };
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
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
