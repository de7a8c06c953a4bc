// The SOCKS4/4a handshake on one client connection: one request, then the connection is handed
// to a route. SOCKS4 carries no password, so it is refused when users are configured.

import type { Socket } from "node:net";
import type { AgentConfig } from "../config/config.ts";
import { openStream } from "../tunnel/dialer.ts";
import type { HandshakeDeadline } from "./handshake-deadline.ts";
import type { Logger } from "../log.ts";
import { MAX_SOCKS4_REQUEST_BYTES, Socks4Command, Socks4Error, Socks4Reply, encodeSocks4Reply, parseSocks4Request } from "./socks4.ts";
import type { OpenAnswer } from "../tunnel/stream-request.ts";

/** SOCKS4 has one failure code: every failed open is 0x5B. */
const SOCKS4_ANSWER: OpenAnswer = {
  succeeded: () => encodeSocks4Reply(Socks4Reply.Granted),
  failed: () => encodeSocks4Reply(Socks4Reply.RejectedOrFailed),
};

/**
 * Serves one client whose first byte was 4; `firstChunk` holds the bytes read so far, and
 * `deadline` (armed at accept) bounds the request until the hand-off.
 */
export function serveSocks4Client(
  client: Socket,
  firstChunk: Buffer,
  label: string,
  deadline: HandshakeDeadline,
  config: AgentConfig,
  log: Logger,
  onClosed: () => void,
): void {
  let done = false;
  let buffered = firstChunk;
  const stop = () => {
    if (done) return;
    done = true;
    deadline.clear();
    client.off("data", onData);
    client.off("end", onEnd);
    client.off("close", onClose);
  };
  const refuse = (reply: Socks4Reply | undefined, reason: string) => {
    log.info(`${label} SOCKS4 handshake refused: ${reason}`);
    stop();
    if (reply === undefined) client.destroy();
    // Closed outright once written: the listener is half-open, so end() alone would wait for the client's FIN.
    else client.end(encodeSocks4Reply(reply), () => client.destroy());
    onClosed();
  };
  // 0x5B would claim the request was read and refused; it was never finished, so no reply.
  deadline.onExpiry(() => refuse(undefined, `not finished within ${deadline.timeoutMs} ms of connecting`));

  const advance = () => {
    let request;
    try {
      request = parseSocks4Request(buffered);
    } catch (error) {
      if (!(error instanceof Socks4Error)) throw error;
      refuse(error.reply, error.message);
      return;
    }
    if (request === "incomplete") {
      if (buffered.byteLength > MAX_SOCKS4_REQUEST_BYTES) refuse(Socks4Reply.RejectedOrFailed, "request is longer than SOCKS4a allows");
      return;
    }
    if (config.users.size > 0) {
      refuse(Socks4Reply.RejectedOrFailed, "SOCKS4 cannot authenticate and users are configured; use SOCKS5 or HTTP with a password");
      return;
    }
    const { command, destination } = request.value;
    if (command !== Socks4Command.Connect) {
      refuse(Socks4Reply.RejectedOrFailed, command === Socks4Command.Bind ? "BIND is not supported" : `command 0x${command.toString(16)} is not SOCKS4`);
      return;
    }
    if (destination.port === 0) {
      refuse(Socks4Reply.RejectedOrFailed, "port 0 cannot be connected to");
      return;
    }
    stop();
    const earlyBytes = Buffer.from(buffered.subarray(request.bytesUsed));
    openStream({ client, clientLabel: label, destination, earlyBytes, answer: SOCKS4_ANSWER, onClosed }, config, log);
  };
  // A bug must cost this one connection, never the agent and every other connection with it.
  const step = () => {
    try {
      advance();
    } catch (error) {
      log.error(`${label} SOCKS4 internal error: ${error instanceof Error ? error.message : String(error)}`);
      client.destroy();
      if (!done) {
        stop();
        onClosed();
      }
    }
  };
  const onData = (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    step();
  };
  const onEnd = () => refuse(undefined, "client closed during the handshake");
  const onClose = () => {
    if (done) return;
    stop();
    onClosed();
  };
  client.on("data", onData);
  client.on("end", onEnd);
  client.on("close", onClose);
  step();
}
