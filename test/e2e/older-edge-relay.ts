// The real edge as an edge older than GET /check sees it: a relay on loopback that answers
// /check with the 404 an older Worker gives (worker/index.ts's notFound) and passes everything
// else, tunnel upgrades included, to the real edge unchanged. An agent in front of it skips the
// token check at start with a warning, as it does with a Worker deployed before this release.

import { createServer, request as httpRequest, type IncomingMessage } from "node:http";
import { connect, type Socket } from "node:net";
import { CHECK_PATH } from "../../worker/protocol/index.ts";

export type OlderEdgeRelay = {
  /** The --edge URL for the agent. */
  url: string;
  /** How many /check requests it has answered with 404. */
  checkRequests(): number;
  close(): Promise<void>;
};

/** Starts a relay in front of the edge at `edgeUrl` (http://127.0.0.1:PORT) that hides its /check. */
export async function startOlderEdgeRelay(edgeUrl: string): Promise<OlderEdgeRelay> {
  const edge = new URL(edgeUrl);
  const sockets = new Set<Socket>();
  let checks = 0;
  const server = createServer((request, response) => {
    if (new URL(request.url ?? "/", edgeUrl).pathname === CHECK_PATH) {
      checks++;
      request.resume();
      response.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" }).end("not found: edgesocks serves /tunnel, /dns and /healthz\n");
      return;
    }
    const upstream = httpRequest({ host: edge.hostname, port: edge.port, method: request.method, path: request.url, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(response);
    });
    upstream.on("error", () => response.destroy());
    request.pipe(upstream);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  server.on("upgrade", (request: IncomingMessage, client: Socket, head: Buffer) => {
    const upstream = connect(Number(edge.port), edge.hostname);
    sockets.add(upstream);
    upstream.once("close", () => sockets.delete(upstream));
    const lines = [`${request.method} ${request.url} HTTP/1.1`];
    for (let index = 0; index < request.rawHeaders.length; index += 2) lines.push(`${request.rawHeaders[index]}: ${request.rawHeaders[index + 1]}`);
    upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
    upstream.write(head);
    upstream.pipe(client).pipe(upstream);
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    checkRequests: () => checks,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
