// One absolute-form request (`GET http://host/path`) forwarded by the agent itself: the request
// goes to the origin over whatever route the destination takes (edge, direct, block), through a
// duplexPair whose one half is the route's "client" and the other the socket of an HTTP client
// request; the origin's answer streams back to the proxy client with backpressure.

import { request as httpRequest, type IncomingMessage, type ServerResponse } from "node:http";
import { duplexPair } from "node:stream";
import type { AgentConfig } from "../config/config.ts";
import { openStream } from "../tunnel/dialer.ts";
import { endToEndHeaders, httpStatusForFailure, oneLine, type ProxyTarget } from "./http-proxy.ts";
import type { Logger } from "../log.ts";
import { STATUS_NAMES, resetConnection, type OpenAnswer } from "../tunnel/stream-request.ts";
import { StreamStatus } from "../../worker/protocol/index.ts";

/** Forwards `request` to `target` and answers `response` with the origin's reply, or 403/502/504. */
export function forwardRequest(request: IncomingMessage, response: ServerResponse, target: ProxyTarget, label: string, config: AgentConfig, log: Logger): void {
  const [originSocket, routeSide] = duplexPair();
  let openFailure: { status: StreamStatus; reason: string } | undefined;
  // The route ends routeSide after failed(): the HTTP client request then fails with "socket hang
  // up", and its error handler finds the recorded cause here.
  const answer: OpenAnswer = {
    succeeded: () => undefined,
    failed: (status, reason) => {
      openFailure = { status, reason };
      return undefined;
    },
  };
  // A duplexPair half does not pass its destruction to the other. A route's reset must reach
  // the HTTP client request, and an HTTP client done with its socket must release the route;
  // setImmediate lets an orderly end's pending 'finish' reach the route first.
  routeSide.once("close", () => {
    if (!originSocket.destroyed) originSocket.destroy(routeSide.errored ?? undefined);
  });
  originSocket.once("close", () => setImmediate(() => routeSide.destroy()));

  const headers = endToEndHeaders(request.headersDistinct);
  // RFC 9112 section 3.2.2: a proxy sets Host from the absolute-form target.
  headers.host = [target.hostHeader];
  // Node decodes a chunked body; the upstream request re-chunks it rather than guess a length.
  if (request.headers["transfer-encoding"] !== undefined) headers["transfer-encoding"] = ["chunked"];
  const upstream = httpRequest({ createConnection: () => originSocket, method: request.method, path: target.path, headers, setHost: false });

  // Mid-body, the client's connection is reset, never ended: an HTTP/1.0 client reads a body
  // without a length to the connection's end, and would take a FIN for the whole of it.
  const cutClientOff = (why: string) => {
    log.debug(`${label} HTTP ${request.method ?? "?"} ${target.hostHeader}: client reset, ${why}`);
    resetConnection(request.socket, why);
  };
  const answerFailure = (status: StreamStatus, reason: string) => {
    if (response.headersSent) {
      cutClientOff(`${STATUS_NAMES[status]} mid-answer: ${reason}`);
      return;
    }
    const body = `${STATUS_NAMES[status]}: ${oneLine(reason)}\n`;
    response.writeHead(httpStatusForFailure(status), {
      "Content-Type": "text/plain; charset=utf-8",
      "Content-Length": Buffer.byteLength(body),
      Connection: "close",
    });
    response.end(body);
  };
  upstream.on("response", (originResponse) => {
    response.writeHead(originResponse.statusCode ?? 502, originResponse.statusMessage, endToEndHeaders(originResponse.headersDistinct));
    originResponse.pipe(response);
    originResponse.on("error", (error: NodeJS.ErrnoException) => cutClientOff(`origin answer broke off (${error.code ?? error.message})`));
    // The origin (or the route) broke off mid-body, with a reset or a FIN short of the length it
    // promised: pass the cut on as a reset.
    originResponse.on("close", () => {
      if (!originResponse.complete) cutClientOff("origin answer ended before its body did");
    });
  });
  upstream.on("error", (error: NodeJS.ErrnoException) => {
    if (openFailure) answerFailure(openFailure.status, openFailure.reason);
    else answerFailure(StreamStatus.GeneralFailure, `origin connection failed (${error.code ?? error.message})`);
    log.debug(`${label} HTTP ${request.method ?? "?"} ${target.hostHeader}: upstream request ${error.code ?? error.message}`);
  });
  response.on("close", () => {
    // The client left (or was cut off) before the whole answer: abandon the origin request too.
    if (!response.writableFinished) upstream.destroy();
  });
  request.pipe(upstream);

  openStream({ client: routeSide, clientLabel: `${label} HTTP ${request.method ?? "?"}`, destination: target.destination, earlyBytes: Buffer.alloc(0), answer, onClosed: () => {} }, config, log);
}
