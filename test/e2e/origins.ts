// Destination servers on loopback for end-to-end tests: an HTTP origin and raw TCP servers.
// Every payload is a fast pseudo-random stream (AES-CTR over zeros) hashed as it is sent, so a
// test compares SHA-256 of what arrived against what left.

import { createCipheriv, createHash, randomBytes } from "node:crypto";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import type { Writable } from "node:stream";

const CHUNK_BYTES = 256 * 1024;
const zeros = Buffer.alloc(CHUNK_BYTES);

/** Writes `totalBytes` of pseudo-random data to `sink` honouring backpressure; resolves with its SHA-256. */
export async function writeRandom(sink: Writable, totalBytes: number): Promise<string> {
  const cipher = createCipheriv("aes-128-ctr", randomBytes(16), randomBytes(16));
  const hash = createHash("sha256");
  let remaining = totalBytes;
  while (remaining > 0) {
    const chunk = cipher.update(remaining >= CHUNK_BYTES ? zeros : zeros.subarray(0, remaining));
    hash.update(chunk);
    remaining -= chunk.byteLength;
    if (!sink.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onError = (error: Error) => reject(error);
        sink.once("error", onError);
        sink.once("drain", () => {
          sink.off("error", onError);
          resolve();
        });
      });
    }
  }
  return hash.digest("hex");
}

export type Listening<T> = { server: T; port: number; close(): Promise<void> };

async function listen<T extends Server | HttpServer>(server: T, host = "127.0.0.1", wantedPort = 0): Promise<Listening<T>> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(wantedPort, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as { port: number };
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        if ("closeAllConnections" in server) server.closeAllConnections();
      }),
  };
}

export type HttpOrigin = Listening<HttpServer> & {
  /** SHA-256 of each finished /blob response, by the id the client put in the query. */
  sentHashes: Map<string, string>;
  /** SHA-256 and size of each finished upload, by id. */
  received: Map<string, { bytes: number; sha256: string }>;
};

/**
 * GET /blob?bytes=N&id=X streams N random bytes (hash kept under X); PUT or POST /upload?id=X
 * hashes the body and answers it as JSON; GET / is a small page with a script, for browsers.
 */
export async function startHttpOrigin(host = "127.0.0.1", port = 0): Promise<HttpOrigin> {
  const sentHashes = new Map<string, string>();
  const received = new Map<string, { bytes: number; sha256: string }>();
  const server = createHttpServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://origin");
    const id = url.searchParams.get("id") ?? "default";
    if (url.pathname === "/blob") {
      const totalBytes = Number(url.searchParams.get("bytes") ?? "0");
      response.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": totalBytes });
      void writeRandom(response, totalBytes).then(
        (sha256) => {
          sentHashes.set(id, sha256);
          response.end();
        },
        () => response.destroy(),
      );
      return;
    }
    if (url.pathname === "/upload") {
      const hash = createHash("sha256");
      let bytes = 0;
      request.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.byteLength;
      });
      request.on("end", () => {
        const result = { bytes, sha256: hash.digest("hex") };
        received.set(id, result);
        response.writeHead(200, { "Content-Type": "application/json" });
        response.end(JSON.stringify(result));
      });
      return;
    }
    if (url.pathname === "/") {
      response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
      response.end(`<!doctype html><title>edgesocks e2e</title><p id="static">served by the origin</p><script src="/app.js"></script>`);
      return;
    }
    if (url.pathname === "/app.js") {
      response.writeHead(200, { "Content-Type": "text/javascript" });
      response.end(`fetch("/data.json").then((r) => r.json()).then((d) => { document.title = "loaded " + d.answer; });`);
      return;
    }
    if (url.pathname === "/data.json") {
      response.writeHead(200, { "Content-Type": "application/json" });
      response.end(JSON.stringify({ answer: 42 }));
      return;
    }
    response.writeHead(404).end("not found\n");
  });
  return { ...(await listen(server, host, port)), sentHashes, received };
}

/** A TCP server running `handle` for every connection, on loopback. */
export async function startTcpOrigin(handle: (socket: Socket) => void, host = "127.0.0.1"): Promise<Listening<Server>> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => {});
    handle(socket);
  });
  return listen(server, host);
}

/** Echoes every byte; answers the client's FIN with its own after the echo. */
export function echo(socket: Socket): void {
  socket.pipe(socket);
}

/** Reads to FIN, then answers "received N bytes" and closes. */
export function countThenReply(socket: Socket): void {
  let receivedBytes = 0;
  socket.on("data", (chunk: Buffer) => (receivedBytes += chunk.byteLength));
  socket.on("end", () => socket.end(`received ${receivedBytes} bytes`));
}
