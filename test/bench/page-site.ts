// The site `npm run bench:page` loads: one page and its images spread over several loopback
// origins (127.0.0.1 on one port each), every response `Connection: close` and `no-store`, so
// each resource costs the browser a fresh connection through its proxy, as a page of many small
// third-party resources over HTTP/1.1 does.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** A 1×1 GIF padded with comment blocks to `totalBytes`, so each image is a real decode of a chosen size. */
export function paddedGif(totalBytes: number): Buffer {
  const header = Buffer.from("474946383961010001008000000000ffffff", "hex"); // GIF89a, 1×1, a 2-colour table
  const image = Buffer.from("2c00000000010001000002024401003b", "hex"); // one pixel, then the trailer
  const fixedBytes = header.byteLength + image.byteLength + 3; // + the comment's introducer, label and terminator
  const padBytes = Math.max(0, totalBytes - fixedBytes);
  // A comment extension is sub-blocks of at most 255 bytes, each after a length byte.
  const blocks: Buffer[] = [];
  for (let left = padBytes; left > 0; ) {
    const length = Math.min(255, left - 1);
    if (length <= 0) break;
    blocks.push(Buffer.of(length), Buffer.alloc(length, 0x20));
    left -= length + 1;
  }
  return Buffer.concat([header, Buffer.of(0x21, 0xfe), ...blocks, Buffer.of(0x00), image]);
}

/** The page: `resources` images, dealt round the origins, and no favicon request. */
export function pageHtml(originPorts: readonly number[], resources: number, loadId: string): string {
  const images = Array.from({ length: resources }, (_, index) => {
    const port = originPorts[index % originPorts.length];
    return `<img src="http://127.0.0.1:${port}/image/${index}.gif?load=${loadId}" width="1" height="1">`;
  });
  return `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>page ${loadId}</title></head><body>\n${images.join("\n")}\n</body></html>\n`;
}

export type Site = {
  ports: number[];
  /** The page's URL for one load (a fresh query each time, though nothing is cached anyway). */
  pageUrl(loadId: string): string;
  /** TCP connections the origins have accepted so far. */
  connections(): number;
  /** Requests the origins have answered so far. */
  requests(): number;
  /** Resolves once no origin has a connection open, or rejects after `timeoutMs`. */
  quiet(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
};

/** Starts `originCount` HTTP origins on loopback; the first also serves the page of `resources` images of `resourceBytes` each. */
export async function startSite(originCount: number, resources: number, resourceBytes: number): Promise<Site> {
  const gif = paddedGif(resourceBytes);
  const open = new Set<Socket>();
  let connections = 0;
  let requests = 0;
  const servers: Server[] = [];
  const ports: number[] = [];
  const handle = (request: IncomingMessage, response: ServerResponse) => {
    requests++;
    const url = new URL(request.url ?? "/", "http://origin");
    // Timing-Allow-Origin: the page reads every image's connect and first-byte times, cross-origin.
    const headers = { Connection: "close", "Cache-Control": "no-store", "Timing-Allow-Origin": "*" };
    if (url.pathname === "/" && ports.length > 0) {
      response.writeHead(200, { ...headers, "Content-Type": "text/html; charset=utf-8" }).end(pageHtml(ports, resources, url.searchParams.get("load") ?? "-"));
    } else if (url.pathname.startsWith("/image/")) {
      response.writeHead(200, { ...headers, "Content-Type": "image/gif", "Content-Length": gif.byteLength }).end(gif);
    } else {
      response.writeHead(404, { ...headers, "Content-Type": "text/plain" }).end("not found\n");
    }
  };
  for (let index = 0; index < originCount; index++) {
    const server = createServer({ keepAlive: false }, handle);
    server.on("connection", (socket: Socket) => {
      connections++;
      open.add(socket);
      socket.on("close", () => open.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    servers.push(server);
    ports.push((server.address() as { port: number }).port);
  }
  return {
    ports,
    pageUrl: (loadId) => `http://127.0.0.1:${ports[0]}/?load=${loadId}`,
    connections: () => connections,
    requests: () => requests,
    quiet: async (timeoutMs) => {
      const deadline = performance.now() + timeoutMs;
      while (open.size > 0) {
        if (performance.now() > deadline) throw new Error(`${open.size} origin connection(s) still open ${timeoutMs} ms after the load`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    close: async () => {
      for (const socket of open) socket.destroy();
      await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    },
  };
}
