// An HTTP origin whose transfers stay in flight until something between it and the client breaks:
// a download that drips a little at a time towards a length it never reaches in a test's time, and
// an upload sink that says when a body's first bytes arrived. A test that cuts the path can then
// know each transfer was under way, and that none could have finished cleanly before the cut.

import { createServer, type Server } from "node:http";

/** The length every /drip answer announces: ~10 minutes at the drip rate, far past any test. */
export const DRIP_TOTAL_BYTES = 1024 * 1024 * 1024;
/** Bytes per drip and the pause between drips: ~1.6 MB/s, little CPU on a shared 2-core machine. */
const DRIP_BYTES = 16 * 1024;
const DRIP_INTERVAL_MS = 10;

export type DripOrigin = {
  port: number;
  /** Resolves once the body of the upload to /sink?id=`id` has sent its first bytes. */
  uploadStarted(id: string): Promise<void>;
  close(): Promise<void>;
};

/** GET /drip answers DRIP_TOTAL_BYTES, a drip every DRIP_INTERVAL_MS; PUT or POST /sink?id=X reads a body to its end and answers its length. */
export async function startDripOrigin(): Promise<DripOrigin> {
  const started = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  const startedFor = (id: string) => {
    let entry = started.get(id);
    if (!entry) {
      let resolve = () => {};
      const promise = new Promise<void>((resolvePromise) => (resolve = resolvePromise));
      entry = { promise, resolve };
      started.set(id, entry);
    }
    return entry;
  };
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://origin");
    if (url.pathname === "/drip") {
      response.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": DRIP_TOTAL_BYTES });
      const drop = Buffer.alloc(DRIP_BYTES, 0x2e);
      const timer = setInterval(() => response.write(drop), DRIP_INTERVAL_MS);
      response.once("close", () => clearInterval(timer));
      return;
    }
    if (url.pathname === "/sink") {
      const entry = startedFor(url.searchParams.get("id") ?? "default");
      let bytes = 0;
      request.on("data", (chunk: Buffer) => {
        bytes += chunk.byteLength;
        entry.resolve();
      });
      request.on("end", () => response.writeHead(200, { "Content-Type": "text/plain" }).end(`received ${bytes} bytes\n`));
      return;
    }
    response.writeHead(404).end("not found\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    port,
    uploadStarted: (id) => startedFor(id).promise,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
