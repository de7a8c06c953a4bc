// Loopback servers in Node for the Worker tests: the Worker's connect() dials the TCP ones and
// its fetch() the DoH stub, from workerd. Their ports reach the tests through provide()/inject().

import { createServer, type Server } from "node:net";
import type { TestProject } from "vitest/node";
import { startDohStub } from "../dns/doh-stub.ts";
import { SOURCE_BYTES, patternBytes } from "./pattern.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** Echoes every byte back; on the client's FIN, sends FIN after the echo. */
    echoPort: number;
    /** Reads until FIN, then answers "received N bytes" and closes: proves half-close. */
    countThenReplyPort: number;
    /** A port with nothing listening: connect() is refused. */
    closedPort: number;
    /** Sends SOURCE_BYTES of patternBytes() on connect, then FIN: a fast origin for flow control. */
    sourcePort: number;
    /** A DNS-over-HTTPS resolver stub (test/dns/doh-stub.ts) for POST /dns. */
    dohStubPort: number;
  }
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const echo = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  const countThenReply = createServer({ allowHalfOpen: true }, (socket) => {
    let receivedBytes = 0;
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      receivedBytes += chunk.byteLength;
    });
    socket.on("end", () => socket.end(`received ${receivedBytes} bytes`));
  });
  const sourcePayload = patternBytes(SOURCE_BYTES);
  const source = createServer({ allowHalfOpen: true }, (socket) => {
    // The edge closes the socket early when a test stops reading: not an error here.
    socket.on("error", () => {});
    socket.end(sourcePayload);
  });
  const closed = createServer();
  const closedPort = await listen(closed);
  await new Promise<void>((resolve) => closed.close(() => resolve()));

  project.provide("echoPort", await listen(echo));
  project.provide("countThenReplyPort", await listen(countThenReply));
  project.provide("closedPort", closedPort);
  project.provide("sourcePort", await listen(source));
  const dohStub = await startDohStub();
  project.provide("dohStubPort", dohStub.port);
  return async () => {
    echo.close();
    countThenReply.close();
    source.close();
    await dohStub.close();
  };
}
