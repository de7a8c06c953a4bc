// HTTP on the agent's port: an HTTP proxy (CONNECT tunnels and absolute-form http:// requests),
// the PAC file at /proxy.pac, and the status (/status, /status.json, /metrics: status/). One
// node:http Server that never listens: the front door hands it each client whose first byte
// starts an HTTP method, and Node's parser does the rest (keep-alive, chunked bodies, header
// limits).

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { AgentConfig } from "../config/config.ts";
import { openStream } from "../tunnel/dialer.ts";
import { parseRequestFraming } from "./http-framing.ts";
import { forwardRequest } from "./http-forward.ts";
import type { HandshakeDeadline } from "./handshake-deadline.ts";
import {
  HttpProxyError,
  PROXY_REALM,
  encodeClosingResponse,
  httpStatusForFailure,
  oneLine,
  parseAuthority,
  parseBasicCredentials,
  parseProxyTarget,
} from "./http-proxy.ts";
import type { Logger } from "../log.ts";
import { PAC_CONTENT_TYPE, PAC_PATH, generatePac, pacProxyAddress } from "./pac.ts";
import { STATUS_NAMES, resetConnection, type OpenAnswer } from "../tunnel/stream-request.ts";
import { checkCredentials } from "../config/users.ts";
import { isStatusPath, serveStatus } from "../status/status-routes.ts";

export type HttpFront = {
  /**
   * Serves one client whose first bytes (`firstChunk`) look like HTTP, until it closes; its first
   * request head must be complete by `deadline` (armed at accept), or it is answered 408.
   */
  serve(client: Socket, firstChunk: Buffer, label: string, deadline: HandshakeDeadline, onClosed: () => void): void;
  /** Stops serving: closes idle keep-alive connections. */
  close(): void;
  /** Closes keep-alive connections waiting for their next request (a drain calls it until the end). */
  closeIdle(): void;
};

/** Idle time a client's keep-alive connection is kept between requests (Node's default). */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** How often Node checks for requests whose headers are overdue (its default is 30 s). */
const HEADERS_CHECK_INTERVAL_MS = 1_000;
/** Largest request head accepted; a bigger one is answered 431 (Node's default). */
const MAX_HEADER_BYTES = 16 * 1024;

const PROXY_AUTHENTICATE = { "Proxy-Authenticate": `Basic realm="${PROXY_REALM}"` };

/** llhttp's codes for a body whose length cannot be known (RFC 9112 section 6.3). */
const FRAMING_ERROR_CODES = new Set(["HPE_INVALID_TRANSFER_ENCODING", "HPE_UNEXPECTED_CONTENT_LENGTH", "HPE_INVALID_CONTENT_LENGTH"]);

/** CONNECT: "200 Connection established" on success, then the tunnel; a short closing answer on failure. */
const CONNECT_ANSWER: OpenAnswer = {
  succeeded: () => Buffer.from("HTTP/1.1 200 Connection established\r\n\r\n", "latin1"),
  failed: (status, reason) => encodeClosingResponse(httpStatusForFailure(status), `${STATUS_NAMES[status]}: ${reason}`),
};

/** The HTTP proxy and PAC server on the agent's port. */
export function createHttpFront(config: AgentConfig, log: Logger): HttpFront {
  const labels = new WeakMap<Duplex, string>();
  const labelOf = (socket: Duplex): string => labels.get(socket) ?? "?";
  const authorized = (header: string | undefined): boolean => {
    if (config.users.size === 0) return true;
    const credentials = parseBasicCredentials(header);
    return credentials !== undefined && checkCredentials(config.users, credentials.name, credentials.password);
  };

  const server = createServer({
    // Node counts this from a request's first byte and checks it once per interval, so it bounds
    // only the heads after the first: the first is bounded from accept by the front door's deadline.
    headersTimeout: config.handshakeTimeoutMs,
    // No whole-request deadline: a forwarded upload may rightly take longer than any handshake.
    requestTimeout: 0,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    connectionsCheckingInterval: HEADERS_CHECK_INTERVAL_MS,
    maxHeaderSize: MAX_HEADER_BYTES,
  });
  // Node starts tracking connections (headersTimeout, closeIdleConnections) on 'listening'. This
  // server never listens, since the agent's listener hands it its sockets, so start it the same way.
  server.emit("listening");

  /** Connections answered with a refusal that closes them: a parse error llhttp raises after it must not cut the answer off. */
  const closingAfterAnswer = new WeakSet<Duplex>();
  /** The request with a Transfer-Encoding each connection holds for a turn, and how to refuse it instead. */
  const awaitingParser = new WeakMap<Duplex, { refuse: (message: string) => void }>();
  /** The deadline of each connection whose first request head is not complete yet. */
  const handshakes = new WeakMap<Duplex, HandshakeDeadline>();
  /** The first request head is in (or the connection was answered): the deadline is over. */
  const endHandshake = (socket: Duplex) => {
    handshakes.get(socket)?.clear();
    handshakes.delete(socket);
  };

  server.on("request", (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket;
    endHandshake(socket);
    // Pipelined behind a request refused for its framing: where it starts was a guess, and the
    // connection closes once that refusal is written.
    if (closingAfterAnswer.has(socket)) return;
    const label = labelOf(socket);
    const method = request.method ?? "?";
    const refuse = (statusCode: number, message: string, headers: Record<string, string> = {}) => {
      log.info(`${label} HTTP ${method} refused ${statusCode}: ${message}`);
      const body = `${oneLine(message)}\n`;
      response.writeHead(statusCode, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body), ...headers });
      response.end(body);
    };
    // Where this request's body ends is unknown, so nothing after it on the connection can be read.
    const refuseAndClose = (statusCode: number, message: string) => {
      closingAfterAnswer.add(socket);
      refuse(statusCode, message, { Connection: "close" });
    };
    try {
      parseRequestFraming({ method, httpVersion: request.httpVersion, headers: request.headersDistinct });
    } catch (error) {
      if (!(error instanceof HttpProxyError)) throw error;
      refuseAndClose(error.statusCode, error.message);
      return;
    }
    if (request.headers["transfer-encoding"] === undefined) {
      serveRequest(request, response, refuse);
      return;
    }
    // llhttp reads some spellings of chunked differently from the value node:http hands over
    // ("chunked" and a tab is not chunked to it) and raises that error after this event, in the
    // same read: hold the request one turn, so that error is answered before any route opens.
    let refused = false;
    const held = {
      refuse: (message: string) => {
        refused = true;
        refuseAndClose(400, message);
      },
    };
    awaitingParser.set(socket, held);
    setImmediate(() => {
      if (awaitingParser.get(socket) === held) awaitingParser.delete(socket);
      if (!refused && !socket.destroyed) serveRequest(request, response, refuse);
    });
  });

  /** Serves one request whose framing is sound: the PAC file, or a forward to its origin. */
  const serveRequest = (request: IncomingMessage, response: ServerResponse, refuse: (statusCode: number, message: string, headers?: Record<string, string>) => void) => {
    const label = labelOf(request.socket);
    const method = request.method ?? "?";
    const target = request.url ?? "";
    if (target.startsWith("/")) {
      // Origin form: a request to the agent itself, not one to forward.
      if ((method === "GET" || method === "HEAD") && target.split("?")[0] === PAC_PATH) {
        servePac(request, response, config, log, label);
        return;
      }
      if (isStatusPath(target)) {
        serveStatus(request, response, config, log, label);
        return;
      }
      refuse(400, `this is a proxy: it serves ${PAC_PATH}, CONNECT, and absolute http:// URLs`);
      return;
    }
    if (!authorized(request.headers["proxy-authorization"])) {
      refuse(407, "proxy credentials missing or wrong", PROXY_AUTHENTICATE);
      return;
    }
    let parsed;
    try {
      parsed = parseProxyTarget(target);
    } catch (error) {
      if (!(error instanceof HttpProxyError)) throw error;
      refuse(error.statusCode, error.message);
      return;
    }
    forwardRequest(request, response, parsed, label, config, log);
  };

  server.on("connect", (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    endHandshake(socket);
    // Its head completed as the deadline's 408 was being written: that answer stands.
    if (closingAfterAnswer.has(socket)) return;
    const label = labelOf(socket);
    const refuse = (statusCode: number, message: string, headers: Record<string, string> = {}) => {
      log.info(`${label} HTTP CONNECT refused ${statusCode}: ${message}`);
      answerAndClose(socket, encodeClosingResponse(statusCode, message, headers));
    };
    try {
      parseRequestFraming({ method: "CONNECT", httpVersion: request.httpVersion, headers: request.headersDistinct });
    } catch (error) {
      if (!(error instanceof HttpProxyError)) throw error;
      refuse(error.statusCode, error.message);
      return;
    }
    if (!authorized(request.headers["proxy-authorization"])) {
      refuse(407, "proxy credentials missing or wrong", PROXY_AUTHENTICATE);
      return;
    }
    let destination;
    try {
      destination = parseAuthority(request.url ?? "");
    } catch (error) {
      if (!(error instanceof HttpProxyError)) throw error;
      refuse(error.statusCode, `CONNECT target: ${error.message}`);
      return;
    }
    // A keep-alive wait before this request may have left an idle timeout on the socket.
    (socket as Socket).setTimeout(0);
    openStream({ client: socket, clientLabel: `${label} HTTP CONNECT`, destination, earlyBytes: head, answer: CONNECT_ANSWER, onClosed: () => {} }, config, log);
  });

  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
    endHandshake(socket);
    const label = labelOf(socket);
    const held = awaitingParser.get(socket);
    if (held && error.code !== "ECONNRESET" && socket.writable) {
      // The request llhttp emitted before it found the error: answer it in place of any route.
      awaitingParser.delete(socket);
      held.refuse(parseErrorMessage(error));
      return;
    }
    if (closingAfterAnswer.has(socket)) {
      log.debug(`${label} HTTP connection after its refusal: ${error.code ?? error.message}`);
      return;
    }
    // A response already under way cannot be followed by a second status line: cut it off with
    // a reset, so that a client reading to the connection's end does not take it for whole.
    const inFlight = (socket as Duplex & { _httpMessage?: unknown })._httpMessage;
    if (error.code === "ECONNRESET" || !socket.writable || inFlight) {
      log.debug(`${label} HTTP connection: ${error.code ?? error.message}`);
      if (inFlight) resetConnection(socket, error.code ?? error.message);
      else socket.destroy();
      return;
    }
    const statusCode = error.code === "HPE_HEADER_OVERFLOW" ? 431 : error.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
    const message =
      statusCode === 431
        ? `request head is larger than ${MAX_HEADER_BYTES} bytes`
        : statusCode === 408
          ? `request head not received within ${config.handshakeTimeoutMs} ms`
          : parseErrorMessage(error);
    log.info(`${label} HTTP refused ${statusCode}: ${message}`);
    answerAndClose(socket, encodeClosingResponse(statusCode, message));
  });

  // The listener is half-open (allowHalfOpen), so end() alone would keep the connection, and
  // its --max-connections slot, for as long as a client that ignores the FIN keeps sending.
  const answerAndClose = (socket: Duplex, answer: Buffer) => {
    closingAfterAnswer.add(socket);
    socket.end(answer, () => socket.destroy());
  };

  return {
    serve(client, firstChunk, label, deadline, onClosed) {
      labels.set(client, label);
      client.once("close", () => onClosed());
      handshakes.set(client, deadline);
      deadline.onExpiry(() => {
        handshakes.delete(client);
        if (!client.writable) {
          client.destroy();
          return;
        }
        const message = `request head not received within ${deadline.timeoutMs} ms`;
        log.info(`${label} HTTP refused 408: ${message}`);
        answerAndClose(client, encodeClosingResponse(408, message));
      });
      // Put the sniffed bytes back and let the HTTP server read the socket from the start.
      client.pause();
      client.unshift(firstChunk);
      server.emit("connection", client);
      client.resume();
    },
    close() {
      server.close();
    },
    closeIdle() {
      server.closeIdleConnections();
    },
  };
}

/** What a client is told about a request head llhttp refused: its reason, for the framing errors (RFC 9112 section 6.3). */
function parseErrorMessage(error: NodeJS.ErrnoException & { reason?: unknown }): string {
  const code = error.code ?? error.message;
  if (error.code !== undefined && FRAMING_ERROR_CODES.has(error.code) && typeof error.reason === "string") {
    return `the body's length cannot be known: ${error.reason.replaceAll("`", "")} (${code}, RFC 9112 section 6.3)`;
  }
  return `malformed HTTP request (${code})`;
}

/** Answers GET /proxy.pac with a script naming the address the client reached the agent on. */
function servePac(request: IncomingMessage, response: ServerResponse, config: AgentConfig, log: Logger, label: string): void {
  const socket = request.socket;
  const proxyAddress = pacProxyAddress(socket.localAddress ?? "127.0.0.1", socket.localPort ?? 0);
  const body = generatePac(proxyAddress, config.bypass, config.users.size > 0);
  response.writeHead(200, { "Content-Type": PAC_CONTENT_TYPE, "Content-Length": Buffer.byteLength(body), "Cache-Control": "no-store" });
  response.end(request.method === "HEAD" ? undefined : body);
  log.info(`${label} HTTP ${request.method ?? "?"} ${PAC_PATH} 200 (proxy ${proxyAddress}, --bypass ${config.bypass})`);
}
