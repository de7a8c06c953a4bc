// The SOCKS5 handshake on one client connection: greeting, method choice, RFC 1929
// username/password when users are configured, request; then the connection is handed to a
// route (CONNECT) or to a UDP association. Malformed input closes this connection only.

import type { Socket } from "node:net";
import type { AgentConfig } from "../config/config.ts";
import { openStream } from "../tunnel/dialer.ts";
import type { HandshakeDeadline } from "./handshake-deadline.ts";
import type { Logger } from "../log.ts";
import {
  AuthMethod,
  Command,
  MAX_GREETING_BYTES,
  MAX_REQUEST_BYTES,
  MAX_USER_PASS_BYTES,
  REPLY_FOR_STATUS,
  Reply,
  Socks5Error,
  encodeMethodSelection,
  encodeReply,
  encodeUserPassStatus,
  parseGreeting,
  parseRequest,
  parseUserPass,
} from "./socks5.ts";
import type { OpenAnswer } from "../tunnel/stream-request.ts";
import { startUdpAssociation } from "./udp-associate.ts";
import { checkCredentials } from "../config/users.ts";

/** Success is reply 0x00; each failure status maps to its RFC 1928 reply. */
const SOCKS5_ANSWER: OpenAnswer = {
  succeeded: () => encodeReply(Reply.Succeeded),
  failed: (status) => encodeReply(REPLY_FOR_STATUS[status]),
};

type Phase = "greeting" | "authentication" | "request" | "handed-off" | "closed";

/**
 * Serves one client whose first byte was 5; `firstChunk` holds the bytes read so far, and
 * `deadline` (armed at accept) bounds the whole handshake until the hand-off.
 */
export function serveSocks5Client(
  client: Socket,
  firstChunk: Buffer,
  label: string,
  deadline: HandshakeDeadline,
  config: AgentConfig,
  log: Logger,
  onClosed: () => void,
): void {
  let phase: Phase = "greeting";
  let buffered: Buffer = firstChunk;
  let userLabel = label;
  const detach = () => {
    deadline.clear();
    client.off("data", onData);
    client.off("end", onEnd);
    client.off("close", closeOnce);
  };
  const closeOnce = () => {
    if (phase === "closed" || phase === "handed-off") return;
    phase = "closed";
    detach();
    onClosed();
  };
  // The listener is half-open (allowHalfOpen), so end() alone would wait for the client's FIN
  // forever; a refused client is closed outright once the answer is written (RFC 1929: the
  // server MUST close the connection after a failure status).
  const answerAndClose = (bytes: Uint8Array) => client.end(bytes, () => client.destroy());
  const refuse = (reply: Reply | undefined, reason: string) => {
    log.info(`${userLabel} handshake refused: ${reason}`);
    if (reply === undefined) client.destroy();
    else answerAndClose(encodeReply(reply));
    closeOnce();
  };
  // RFC 1928 has no reply for a client too slow to finish its own message, so none is sent.
  deadline.onExpiry(() => {
    log.info(`${userLabel} SOCKS5 handshake not finished within ${deadline.timeoutMs} ms of connecting`);
    client.destroy();
    closeOnce();
  });

  const handOff = (start: () => void) => {
    phase = "handed-off";
    detach();
    start();
  };

  // Parses as far as the buffered bytes allow; a client may send several messages together.
  const advance = () => {
    if (phase === "greeting") {
      const greeting = parseGreeting(buffered);
      if (greeting === "incomplete") {
        if (buffered.byteLength > MAX_GREETING_BYTES) refuse(undefined, "greeting is longer than SOCKS5 allows");
        return;
      }
      buffered = buffered.subarray(greeting.bytesUsed);
      // With users configured, no-auth is never offered back: a password is the only way in.
      const wanted = config.users.size > 0 ? AuthMethod.UsernamePassword : AuthMethod.NoAuthentication;
      if (!greeting.value.methods.includes(wanted)) {
        const need = wanted === AuthMethod.UsernamePassword ? "username/password (0x02)" : "no authentication (0x00)";
        log.info(`${userLabel} handshake refused: the client did not offer ${need}`);
        answerAndClose(encodeMethodSelection(AuthMethod.NoAcceptableMethods));
        closeOnce();
        return;
      }
      client.write(encodeMethodSelection(wanted));
      phase = wanted === AuthMethod.UsernamePassword ? "authentication" : "request";
    }
    if (phase === "authentication") {
      const credentials = parseUserPass(buffered);
      if (credentials === "incomplete") {
        if (buffered.byteLength > MAX_USER_PASS_BYTES) refuse(undefined, "username/password request is longer than RFC 1929 allows");
        return;
      }
      buffered = buffered.subarray(credentials.bytesUsed);
      const { name, password } = credentials.value;
      if (!checkCredentials(config.users, name, password)) {
        // RFC 1929: a failure status, then the server must close the connection.
        log.info(`${userLabel} handshake refused: wrong user name or password for "${printableName(name)}"`);
        answerAndClose(encodeUserPassStatus(false));
        closeOnce();
        return;
      }
      client.write(encodeUserPassStatus(true));
      userLabel = `${label} (${printableName(name)})`;
      phase = "request";
    }
    if (phase === "request") {
      const request = parseRequest(buffered);
      if (request === "incomplete") {
        if (buffered.byteLength > MAX_REQUEST_BYTES) refuse(Reply.GeneralFailure, "request is longer than SOCKS5 allows");
        return;
      }
      const { command, destination } = request.value;
      const earlyBytes = Buffer.from(buffered.subarray(request.bytesUsed));
      if (command === Command.UdpAssociate) {
        handOff(() => startUdpAssociation({ control: client, clientLabel: userLabel, requested: destination }, config, log, onClosed));
        return;
      }
      if (command !== Command.Connect) {
        refuse(Reply.CommandNotSupported, `command 0x0${command} (BIND) is not supported`);
        return;
      }
      if (destination.port === 0) {
        refuse(Reply.GeneralFailure, "port 0 cannot be connected to");
        return;
      }
      handOff(() => openStream({ client, clientLabel: userLabel, destination, earlyBytes, answer: SOCKS5_ANSWER, onClosed }, config, log));
    }
  };

  const onData = (chunk: Buffer) => {
    buffered = buffered.byteLength === 0 ? chunk : Buffer.concat([buffered, chunk]);
    step();
  };
  const step = () => {
    try {
      advance();
    } catch (error) {
      if (error instanceof Socks5Error) {
        refuse(error.reply, error.message);
        return;
      }
      // A bug must cost this one connection, never the agent and every other connection with it.
      log.error(`${userLabel} SOCKS5 internal error: ${error instanceof Error ? error.message : String(error)}`);
      client.destroy();
      closeOnce();
    }
  };
  const onEnd = () => {
    log.debug(`${userLabel} closed during the handshake`);
    client.destroy();
    closeOnce();
  };
  client.on("data", onData);
  client.on("end", onEnd);
  client.on("close", closeOnce);
  step();
}

/** A user name as it may appear in a log line: printable, short. */
function printableName(name: string): string {
  return name.replace(/[^\x20-\x7e]/g, "?").slice(0, 64);
}
