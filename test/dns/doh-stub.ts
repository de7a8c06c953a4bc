// A DNS-over-HTTPS resolver stub on loopback (RFC 8484 POST, plain HTTP): what the edge's
// EDGESOCKS_DOH_URL points at in the tests. It answers from a record table with dns-message.ts,
// counts the queries for each name, and a few paths fail in the ways a real resolver can.

import { createServer, type IncomingMessage, type Server } from "node:http";
import { STUB_RECORDS, answerQuery, questionOf, type StubRecords } from "./dns-message.ts";

/** Paths the stub serves, each one behaviour. */
export const DohStubPath = {
  /** Answers every well-formed query from the stub's table (dns-message.ts's answerQuery). */
  Answer: "/dns-query",
  /** Answers 503, as an overloaded resolver does. */
  Unavailable: "/unavailable",
  /** Answers 200 with text/plain: a URL that is not a DoH resolver. */
  NotDns: "/not-dns",
} as const;

export type DohStub = {
  port: number;
  /** The URL of `path` on the stub. */
  url(path: string): string;
  /** Queries that reached DohStubPath.Answer so far. */
  answeredCount(): number;
  /** Queries DohStubPath.Answer has received for `name` (any case, trailing dot or not), of any type. */
  queriesFor(name: string): number;
  /** Stops listening and drops kept-alive connections: the resolver is down from now on. */
  close(): Promise<void>;
};

/** Starts the stub on 127.0.0.1 and an ephemeral port, answering from `records`. */
export async function startDohStub(records: StubRecords = STUB_RECORDS): Promise<DohStub> {
  let answered = 0;
  const queriesByName = new Map<string, number>();
  const server: Server = createServer((request, response) => {
    void readBody(request).then((body) => {
      if (request.url === DohStubPath.Unavailable) {
        response.writeHead(503, { "Content-Type": "text/plain" }).end("overloaded\n");
        return;
      }
      if (request.url === DohStubPath.NotDns) {
        response.writeHead(200, { "Content-Type": "text/plain" }).end("hello\n");
        return;
      }
      const valid =
        request.url === DohStubPath.Answer &&
        request.method === "POST" &&
        request.headers["content-type"] === "application/dns-message" &&
        request.headers.accept === "application/dns-message";
      if (!valid) {
        response.writeHead(400, { "Content-Type": "text/plain" }).end("not an RFC 8484 POST\n");
        return;
      }
      let answer: Uint8Array;
      try {
        const name = questionOf(body).name.toLowerCase();
        queriesByName.set(name, (queriesByName.get(name) ?? 0) + 1);
        answer = answerQuery(body, records);
      } catch {
        response.writeHead(400, { "Content-Type": "text/plain" }).end("not a DNS query\n");
        return;
      }
      answered++;
      response.writeHead(200, { "Content-Type": "application/dns-message" }).end(answer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    port,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    answeredCount: () => answered,
    queriesFor: (name) => queriesByName.get(name.toLowerCase().replace(/\.$/, "")) ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function readBody(request: IncomingMessage): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(new Uint8Array(Buffer.concat(chunks))));
    request.on("error", reject);
  });
}
