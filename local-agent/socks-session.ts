// The SOCKS5 handshake on one client connection: greeting, method choice, request; then the
// connection is handed to an AgentStream. Malformed input closes this connection only.

import type { Socket } from "node:net";
import { AgentStream } from "./agent-stream.ts";
import type { AgentConfig } from "./config.ts";
import type { Logger } from "./log.ts";
import {
  AuthMethod,
  Command,
  MAX_GREETING_BYTES,
  MAX_REQUEST_BYTES,
  Reply,
  Socks5Error,
  encodeMethodSelection,
  encodeReply,
  parseGreeting,
  parseRequest,
} from "./socks5.ts";

/** Serves one accepted client; `onClosed` runs once when the connection is over. */
export function serveSocksClient(client: Socket, config: AgentConfig, log: Logger, onClosed: () => void): void {
  const label = `${client.remoteAddress ?? "?"}:${client.remotePort ?? "?"}`;
  let phase: "greeting" | "request" | "handed-off" | "closed" = "greeting";
  let buffered: Buffer = Buffer.alloc(0);
  const closeOnce = () => {
    if (phase === "closed" || phase === "handed-off") return;
    phase = "closed";
    clearTimeout(timer);
    onClosed();
  };
  const refuse = (reply: Reply | undefined, reason: string) => {
    log.info(`${label} handshake refused: ${reason}`);
    if (reply === undefined) client.destroy();
    else client.end(encodeReply(reply));
    closeOnce();
  };
  const timer = setTimeout(() => {
    log.info(`${label} handshake timed out after ${config.handshakeTimeoutMs} ms`);
    client.destroy();
    closeOnce();
  }, config.handshakeTimeoutMs);

  const onData = (chunk: Buffer) => {
    buffered = buffered.byteLength === 0 ? chunk : Buffer.concat([buffered, chunk]);
    try {
      advance();
    } catch (error) {
      if (!(error instanceof Socks5Error)) throw error;
      refuse(error.reply, error.message);
    }
  };

  // Parses as far as the buffered bytes allow; a client may send greeting and request together.
  const advance = () => {
    if (phase === "greeting") {
      const greeting = parseGreeting(buffered);
      if (greeting === "incomplete") {
        if (buffered.byteLength > MAX_GREETING_BYTES) refuse(undefined, "greeting is longer than SOCKS5 allows");
        return;
      }
      buffered = buffered.subarray(greeting.bytesUsed);
      if (!greeting.value.methods.includes(AuthMethod.NoAuthentication)) {
        log.info(`${label} handshake refused: no acceptable authentication method offered`);
        client.end(encodeMethodSelection(AuthMethod.NoAcceptableMethods));
        closeOnce();
        return;
      }
      client.write(encodeMethodSelection(AuthMethod.NoAuthentication));
      phase = "request";
    }
    if (phase === "request") {
      const request = parseRequest(buffered);
      if (request === "incomplete") {
        if (buffered.byteLength > MAX_REQUEST_BYTES) refuse(Reply.GeneralFailure, "request is longer than SOCKS5 allows");
        return;
      }
      const { command, destination } = request.value;
      if (command !== Command.Connect) {
        refuse(Reply.CommandNotSupported, `command 0x0${command} (${command === Command.Bind ? "BIND" : "UDP ASSOCIATE"}) is not supported`);
        return;
      }
      if (destination.port === 0) {
        refuse(Reply.GeneralFailure, "port 0 cannot be connected to");
        return;
      }
      phase = "handed-off";
      clearTimeout(timer);
      client.off("data", onData);
      client.off("end", onEnd);
      client.off("close", closeOnce);
      new AgentStream(client, destination, Buffer.from(buffered.subarray(request.bytesUsed)), config, log, onClosed).start();
    }
  };

  const onEnd = () => {
    log.debug(`${label} closed during the handshake`);
    client.destroy();
    closeOnce();
  };
  client.on("data", onData);
  client.on("end", onEnd);
  client.on("close", closeOnce);
  client.on("error", (error: NodeJS.ErrnoException) => log.debug(`${label} client socket: ${error.code ?? error.message}`));
}
