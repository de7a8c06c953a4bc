// Plain http:// requests forwarded by the agent (absolute-form GET and POST), checked by
// SHA-256 against what e2e/origins.ts's HTTP origin sent or received.

import { createHash } from "node:crypto";
import { Agent, request, type ClientRequest, type IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { writeRandom, type HttpOrigin } from "../e2e/origins.ts";
import { ByteMismatch, type TransferResult } from "./soak-streams.ts";

/** Where a request goes: the agent as its proxy, the HTTP origin as its destination. */
export type HttpRoute = { proxyPort: number; origin: HttpOrigin; track: (socket: Socket) => void };

function absoluteUrl(route: HttpRoute, pathAndQuery: string): string {
  return `http://127.0.0.1:${route.origin.port}${pathAndQuery}`;
}

/** Sends one request through the proxy with `agent` (false: a connection of its own); resolves with the answer's head. */
function send(route: HttpRoute, method: string, pathAndQuery: string, agent: Agent | false, body?: (outgoing: ClientRequest) => Promise<void>): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const outgoing = request({ host: "127.0.0.1", port: route.proxyPort, method, path: absoluteUrl(route, pathAndQuery), agent, headers: { host: `127.0.0.1:${route.origin.port}` } });
    outgoing.once("socket", (socket: Socket) => route.track(socket));
    outgoing.once("response", resolve);
    outgoing.once("error", (error: NodeJS.ErrnoException) => reject(new Error(`${method} ${pathAndQuery}: ${error.code ?? error.message}`)));
    if (body) body(outgoing).catch(reject);
    else outgoing.end();
  });
}

/**
 * GET /blob of `totalBytes`, hashed as it arrives and compared with the origin's hash of what it
 * sent. With `resetAfterBytes`, the client resets its connection once that many have arrived
 * (those bytes cannot be checked: the hash covers the whole body).
 */
export async function httpGetBlob(route: HttpRoute, id: string, totalBytes: number, agent: Agent | false, resetAfterBytes?: number): Promise<TransferResult> {
  const response = await send(route, "GET", `/blob?bytes=${totalBytes}&id=${id}`, agent);
  if (response.statusCode !== 200) {
    response.resume();
    throw new Error(`GET /blob: status ${response.statusCode ?? "?"}`);
  }
  const hash = createHash("sha256");
  let receivedBytes = 0;
  const reset = await new Promise<boolean>((resolve, reject) => {
    response.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      receivedBytes += chunk.byteLength;
      if (resetAfterBytes !== undefined && receivedBytes >= resetAfterBytes) {
        response.socket.resetAndDestroy();
        resolve(true);
      }
    });
    response.once("end", () => resolve(false));
    response.once("error", (error: NodeJS.ErrnoException) => reject(new Error(`GET /blob: ${error.code ?? error.message} after ${receivedBytes} of ${totalBytes} bytes`)));
    response.once("close", () => {
      if (!response.complete) reject(new Error(`GET /blob: connection closed after ${receivedBytes} of ${totalBytes} bytes`));
    });
  });
  const sentSha256 = route.origin.sentHashes.get(id);
  route.origin.sentHashes.delete(id);
  if (reset) return { checkedBytes: 0, resetByClient: true };
  // Node's parser ends a body with a Content-Length only once it is complete: short is an error above.
  if (receivedBytes !== totalBytes) throw new ByteMismatch(`GET /blob: ${receivedBytes} of ${totalBytes} bytes`);
  if (sentSha256 === undefined) throw new Error(`GET /blob: the origin recorded no hash for ${id}`);
  if (hash.digest("hex") !== sentSha256) throw new ByteMismatch(`GET /blob: the body's SHA-256 differs from the origin's (${totalBytes} bytes)`);
  return { checkedBytes: totalBytes, resetByClient: false };
}

/** POST /upload of `totalBytes` random bytes; the origin's answer must give their count and SHA-256. */
export async function httpPostUpload(route: HttpRoute, id: string, totalBytes: number): Promise<TransferResult> {
  let sentSha256 = "";
  const response = await send(route, "POST", `/upload?id=${id}`, false, async (outgoing) => {
    outgoing.setHeader("content-length", totalBytes);
    sentSha256 = await writeRandom(outgoing, totalBytes);
    outgoing.end();
  });
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    response.on("data", (chunk: Buffer) => chunks.push(chunk));
    response.once("end", resolve);
    response.once("error", (error: NodeJS.ErrnoException) => reject(new Error(`POST /upload: ${error.code ?? error.message} in the answer`)));
    response.once("close", () => {
      if (!response.complete) reject(new Error("POST /upload: connection closed inside the answer"));
    });
  });
  route.origin.received.delete(id);
  if (response.statusCode !== 200) throw new Error(`POST /upload: status ${response.statusCode ?? "?"}`);
  const answer = JSON.parse(Buffer.concat(chunks).toString()) as { bytes?: unknown; sha256?: unknown };
  if (answer.bytes !== totalBytes || answer.sha256 !== sentSha256) throw new ByteMismatch(`POST /upload: the origin received ${String(answer.bytes)} bytes of ${totalBytes}${answer.sha256 === sentSha256 ? "" : ", SHA-256 differs"}`);
  return { checkedBytes: totalBytes, resetByClient: false };
}

/** Short GETs one after another on one keep-alive connection to the agent; resolves with the connections used (1 unless one was not reused). */
export async function httpShortExchanges(route: HttpRoute, idPrefix: string, sizes: number[]): Promise<TransferResult & { connections: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const sockets = new Set<Socket>();
  const tracked: HttpRoute = {
    ...route,
    track: (socket) => {
      sockets.add(socket);
      route.track(socket);
    },
  };
  try {
    let checkedBytes = 0;
    for (const [index, size] of sizes.entries()) checkedBytes += (await httpGetBlob(tracked, `${idPrefix}.${index}`, size, agent)).checkedBytes;
    return { checkedBytes, resetByClient: false, connections: sockets.size };
  } finally {
    agent.destroy();
  }
}
