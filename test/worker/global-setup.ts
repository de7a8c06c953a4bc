// Loopback TCP servers in Node for the Worker tests: the Worker's connect() dials them from
// workerd. Their ports reach the tests through provide()/inject().

import { createServer, type Server } from "node:net";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    /** Echoes every byte back; on the client's FIN, sends FIN after the echo. */
    echoPort: number;
    /** Reads until FIN, then answers "received N bytes" and closes: proves half-close. */
    countThenReplyPort: number;
    /** A port with nothing listening: connect() is refused. */
    closedPort: number;
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
  const closed = createServer();
  const closedPort = await listen(closed);
  await new Promise<void>((resolve) => closed.close(() => resolve()));

  project.provide("echoPort", await listen(echo));
  project.provide("countThenReplyPort", await listen(countThenReply));
  project.provide("closedPort", closedPort);
  return async () => {
    echo.close();
    countThenReply.close();
  };
}
