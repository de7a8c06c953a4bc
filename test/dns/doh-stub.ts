// A DNS-over-HTTPS resolver stub on loopback (RFC 8484 POST, plain HTTP): what the edge's
// EDGESOCKS_DOH_URL points at in the tests. It answers from a record table with dns-message.ts,
// counts the queries for each name, and a few paths fail in the ways a real resolver can.
// Tests inside workerd cannot reach this object, so GET DohStubPath.Stats reports its counters.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { MAX_DNS_MESSAGE_BYTES } from "../../worker/protocol/index.ts";
import { STUB_RECORDS, answerQuery, questionOf, type StubRecords } from "./dns-message.ts";

/** Paths the stub serves, each one behaviour. */
export const DohStubPath = {
  /** Answers every well-formed query from the stub's table (dns-message.ts's answerQuery). */
  Answer: "/dns-query",
  /** Answers 503, as an overloaded resolver does. */
  Unavailable: "/unavailable",
  /** Answers 200 with text/plain: a URL that is not a DoH resolver. */
  NotDns: "/not-dns",
  /** Reads the query and never answers: a resolver that has gone silent. */
  Hang: "/hang",
  /** Sends 200 and application/dns-message headers, then nothing: an answer that never comes. */
  HangAfterHeaders: "/hang-after-headers",
  /**
   * Answers 3xx (`?status=`, default 307) with Location: RedirectTarget on the same stub. 307
   * and 308 tell a client to repeat the POST, body and all, at the new place.
   */
  Redirect: "/redirect",
  /** Where Redirect points: answers as Answer does, and counts each query that reaches it. */
  RedirectTarget: "/redirect-target",
  /** Answers 200 with a Content-Length one byte over MAX_DNS_MESSAGE_BYTES, and that many bytes. */
  Oversized: "/oversized",
  /**
   * Answers 200 and streams FLOOD_ANSWER_BYTES of dns-message without a Content-Length, far
   * more than any socket buffer holds: a reader that stops at the bound hangs up long before
   * the end, one that buffers everything reads to the end.
   */
  Flood: "/flood",
  /** GET: the stub's counters as JSON (StubStats), for tests that run where this object is not. */
  Stats: "/stats",
} as const;

/**
 * A name DohStubPath.Answer reads the query for and never answers, while it answers every
 * other name: one edge, one resolver URL, and a silent resolver for just this name.
 */
export const UNANSWERED_NAME = "silent.edgesocks.test";

/** Bytes an Oversized answer has: one over the largest DNS message. */
export const OVERSIZED_ANSWER_BYTES = MAX_DNS_MESSAGE_BYTES + 1;
/** Bytes of a Flood answer: 1024 times the bound, and more than loopback socket buffers hold (a few MiB). */
export const FLOOD_ANSWER_BYTES = 64 * 1024 * 1024;
/** Bytes per write of a Flood answer. */
const FLOOD_CHUNK_BYTES = 64 * 1024;

export type StubStats = {
  /** Requests the stub holds unanswered now (Hang, HangAfterHeaders, UNANSWERED_NAME). */
  unansweredNow: number;
  /** Requests ever held unanswered. */
  unansweredTotal: number;
  /** Unanswered requests whose client hung up (what a timeout at the client does). */
  unansweredAbandoned: number;
  /** Queries that reached RedirectTarget: a client that followed a redirect. */
  redirectTargetHits: number;
  /** Flood answers started. */
  floodStarted: number;
  /** Flood answers whose reader hung up before the last byte. */
  floodAbandoned: number;
  /** Flood answers written to the end: a reader that buffered it all. */
  floodCompleted: number;
};

export type DohStub = {
  port: number;
  /** The URL of `path` on the stub. */
  url(path: string): string;
  /** Queries that reached DohStubPath.Answer so far. */
  answeredCount(): number;
  /** Queries DohStubPath.Answer has received for `name` (any case, trailing dot or not), of any type. */
  queriesFor(name: string): number;
  /** The counters GET DohStubPath.Stats reports. */
  stats(): StubStats;
  /** Stops listening and drops kept-alive connections: the resolver is down from now on. */
  close(): Promise<void>;
};

/** Starts the stub on 127.0.0.1 and an ephemeral port, answering from `records`. */
export async function startDohStub(records: StubRecords = STUB_RECORDS): Promise<DohStub> {
  let answered = 0;
  const queriesByName = new Map<string, number>();
  const counters: StubStats = {
    unansweredNow: 0,
    unansweredTotal: 0,
    unansweredAbandoned: 0,
    redirectTargetHits: 0,
    floodStarted: 0,
    floodAbandoned: 0,
    floodCompleted: 0,
  };

  /** Holds `response` open until its client hangs up (or close() drops the connection). */
  const holdUnanswered = (response: ServerResponse): void => {
    counters.unansweredNow++;
    counters.unansweredTotal++;
    response.on("close", () => {
      counters.unansweredNow--;
      counters.unansweredAbandoned++;
    });
  };

  /** Writes FLOOD_ANSWER_BYTES as fast as the reader takes them, and records how it ended. */
  const flood = (response: ServerResponse): void => {
    counters.floodStarted++;
    response.writeHead(200, { "Content-Type": "application/dns-message" });
    const chunk = new Uint8Array(FLOOD_CHUNK_BYTES);
    let writtenBytes = 0;
    response.on("finish", () => counters.floodCompleted++);
    response.on("close", () => {
      if (!response.writableFinished) counters.floodAbandoned++;
    });
    const pump = (): void => {
      while (!response.destroyed) {
        if (writtenBytes >= FLOOD_ANSWER_BYTES) {
          response.end();
          return;
        }
        writtenBytes += chunk.byteLength;
        if (!response.write(chunk)) {
          response.once("drain", pump);
          return;
        }
      }
    };
    pump();
  };

  const server: Server = createServer((request, response) => {
    const { pathname, searchParams } = new URL(request.url ?? "/", "http://stub");
    void readBody(request).then((body) => {
      if (pathname === DohStubPath.Stats) {
        response.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(counters));
        return;
      }
      if (pathname === DohStubPath.Unavailable) {
        response.writeHead(503, { "Content-Type": "text/plain" }).end("overloaded\n");
        return;
      }
      if (pathname === DohStubPath.NotDns) {
        response.writeHead(200, { "Content-Type": "text/plain" }).end("hello\n");
        return;
      }
      if (pathname === DohStubPath.Hang) {
        holdUnanswered(response);
        return;
      }
      if (pathname === DohStubPath.HangAfterHeaders) {
        // flushHeaders sends the status line and headers now; the body never follows.
        response.writeHead(200, { "Content-Type": "application/dns-message" }).flushHeaders();
        holdUnanswered(response);
        return;
      }
      if (pathname === DohStubPath.Redirect) {
        const status = Number(searchParams.get("status") ?? "307");
        response.writeHead(status, { Location: DohStubPath.RedirectTarget, "Content-Type": "text/plain" }).end("moved\n");
        return;
      }
      if (pathname === DohStubPath.Oversized) {
        response.writeHead(200, { "Content-Type": "application/dns-message", "Content-Length": String(OVERSIZED_ANSWER_BYTES) }).end(new Uint8Array(OVERSIZED_ANSWER_BYTES));
        return;
      }
      if (pathname === DohStubPath.Flood) {
        flood(response);
        return;
      }
      const valid =
        (pathname === DohStubPath.Answer || pathname === DohStubPath.RedirectTarget) &&
        request.method === "POST" &&
        request.headers["content-type"] === "application/dns-message" &&
        request.headers.accept === "application/dns-message";
      if (pathname === DohStubPath.RedirectTarget) counters.redirectTargetHits++;
      if (!valid) {
        response.writeHead(400, { "Content-Type": "text/plain" }).end("not an RFC 8484 POST\n");
        return;
      }
      let answer: Uint8Array;
      try {
        const name = questionOf(body).name.toLowerCase();
        queriesByName.set(name, (queriesByName.get(name) ?? 0) + 1);
        if (name === UNANSWERED_NAME) {
          holdUnanswered(response);
          return;
        }
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
    stats: () => ({ ...counters }),
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
