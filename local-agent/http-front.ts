// HTTP on the agent's port: an HTTP proxy (CONNECT tunnels and absolute-form http:// requests)
// and the PAC file at /proxy.pac. One node:http Server that never listens: the front door hands
// it each client whose first byte starts an HTTP method, and Node's parser does the rest
// (keep-alive, chunked bodies, header limits).

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { AgentConfig } from "./config.ts";
import { openStream } from "./dialer.ts";
import { forwardRequest } from "./http-forward.ts";
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
import type { Logger } from "./log.ts";
import { PAC_CONTENT_TYPE, PAC_PATH, generatePac, pacProxyAddress } from "./pac.ts";
import { STATUS_NAMES, type OpenAnswer } from "./stream-request.ts";
import { checkCredentials } from "./users.ts";

export type HttpFront = {
  /** Serves one client whose first bytes (`firstChunk`) look like HTTP, until it closes. */
  serve(client: Socket, firstChunk: Buffer, label: string, onClosed: () => void): void;
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

  server.on("request", (request: IncomingMessage, response: ServerResponse) => {
    const label = labelOf(request.socket);
    const method = request.method ?? "?";
    const target = request.url ?? "";
    const refuse = (statusCode: number, message: string, headers: Record<string, string> = {}) => {
      log.info(`${label} HTTP ${method} refused ${statusCode}: ${message}`);
      const body = `${oneLine(message)}\n`;
      response.writeHead(statusCode, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body), ...headers });
      response.end(body);
    };
    if (target.startsWith("/")) {
      // Origin form: a request to the agent itself, not one to forward.
      if ((method === "GET" || method === "HEAD") && target.split("?")[0] === PAC_PATH) {
        servePac(request, response, config, log, label);
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
  });

  server.on("connect", (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const label = labelOf(socket);
    const refuse = (statusCode: number, message: string, headers: Record<string, string> = {}) => {
      log.info(`${label} HTTP CONNECT refused ${statusCode}: ${message}`);
      socket.end(encodeClosingResponse(statusCode, message, headers));
    };
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
    const label = labelOf(socket);
    // A response already under way cannot be followed by a second status line: just close.
    const inFlight = (socket as Duplex & { _httpMessage?: unknown })._httpMessage;
    if (error.code === "ECONNRESET" || !socket.writable || inFlight) {
      log.debug(`${label} HTTP connection: ${error.code ?? error.message}`);
      socket.destroy();
      return;
    }
    const statusCode = error.code === "HPE_HEADER_OVERFLOW" ? 431 : error.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
    const message =
      statusCode === 431
        ? `request head is larger than ${MAX_HEADER_BYTES} bytes`
        : statusCode === 408
          ? `request head not received within ${config.handshakeTimeoutMs} ms`
          : `malformed HTTP request (${error.code ?? error.message})`;
    log.info(`${label} HTTP refused ${statusCode}: ${message}`);
    socket.end(encodeClosingResponse(statusCode, message));
  });

  return {
    serve(client, firstChunk, label, onClosed) {
      labels.set(client, label);
      client.once("close", () => onClosed());
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

/** Answers GET /proxy.pac with a script naming the address the client reached the agent on. */
function servePac(request: IncomingMessage, response: ServerResponse, config: AgentConfig, log: Logger, label: string): void {
  const socket = request.socket;
  const proxyAddress = pacProxyAddress(socket.localAddress ?? "127.0.0.1", socket.localPort ?? 0);
  const body = generatePac(proxyAddress, config.bypass, config.users.size > 0);
  response.writeHead(200, { "Content-Type": PAC_CONTENT_TYPE, "Content-Length": Buffer.byteLength(body), "Cache-Control": "no-store" });
  response.end(request.method === "HEAD" ? undefined : body);
  log.info(`${label} HTTP ${request.method ?? "?"} ${PAC_PATH} 200 (proxy ${proxyAddress}, --bypass ${config.bypass})`);
}
