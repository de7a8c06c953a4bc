// Over --max-connections: rather than dropping a connection unanswered (node:net's
// server.maxConnections), the listener accepts it and refuses it here in the client's own
// protocol, once the client has said enough to tell which within a short wait: SOCKS5 reply 0x01
// (general SOCKS server failure), SOCKS4 0x5B, HTTP 503 with Retry-After. Anything else is reset.
// Refusals are logged at most once per interval, with a count, so a flood cannot flood the log.

import type { Socket } from "node:net";
import type { Logger } from "../log.ts";
import { Socks4Reply, encodeSocks4Reply, parseSocks4Request } from "./socks4.ts";
import { AuthMethod, Reply, encodeMethodSelection, encodeReply, encodeUserPassStatus, parseGreeting, parseRequest, parseUserPass } from "./socks5.ts";
import { encodeClosingResponse } from "./http-proxy.ts";
import { checkCredentials, type Users } from "../config/users.ts";

/** Longest an over-capacity connection is held, from accept to close, answer included. */
export const REFUSAL_WAIT_MS = 1_000;
/**
 * Most bytes read from an over-capacity client before it is answered or reset. A SOCKS5 greeting
 * and request name a destination in a few dozen bytes, as does a SOCKS4 request; an HTTP request
 * is known as one from its first word, so a longer head is answered from what came so far.
 */
export const REFUSAL_READ_BYTES = 512;
/** What a 503 asks the client to wait: a connection is usually free again within seconds. */
export const RETRY_AFTER_SECONDS = 1;
/** Most refusals in progress at once; past that, new over-capacity connections are reset at accept. */
export const MAX_PENDING_REFUSALS = 64;
/** Least time between two log lines about refusals. */
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

/** How an over-capacity connection ended. */
export const RefusalOutcome = {
  /** Refused in SOCKS5: reply 0x01 to its request (or the greeting's or RFC 1929's own refusal). */
  Socks5: "socks5",
  /** Refused in SOCKS4: reply 0x5B. */
  Socks4: "socks4",
  /** Refused in HTTP: 503 with Retry-After. */
  Http: "http",
  /** Reset: the client said too little, too late, too much, or nothing the agent serves. */
  Reset: "reset",
  /** The client closed before it said enough to answer. */
  Gone: "gone",
} as const;
export type RefusalOutcome = (typeof RefusalOutcome)[keyof typeof RefusalOutcome];

const OUTCOME_NAMES: Readonly<Record<RefusalOutcome, string>> = {
  socks5: "SOCKS5 refusal",
  socks4: "SOCKS4 0x5B",
  http: "HTTP 503",
  reset: "reset",
  gone: "closed by the client",
};

const SOCKS5_FIRST_BYTE = 0x05;
const SOCKS4_FIRST_BYTE = 0x04;
/** An HTTP request line's method and the space after it (RFC 9110 section 5.6.2 token). */
const HTTP_METHOD = /^[A-Za-z][!#$%&'*+.^_`|~0-9A-Za-z-]* /;
const HEAD_END = "\r\n\r\n";

export type RefusalOptions = {
  /** The agent's users: a SOCKS5 client is asked for its password when there are any, as when serving it. */
  users: Users;
  waitMs?: number;
  maxReadBytes?: number;
};

/**
 * Refuses an over-capacity `socket` in its own protocol once it has said enough to tell which,
 * within `waitMs` and `maxReadBytes`; resets it otherwise. Resolves once the socket is closed.
 */
export function refuseOverCapacity(socket: Socket, options: RefusalOptions): Promise<RefusalOutcome> {
  const waitMs = options.waitMs ?? REFUSAL_WAIT_MS;
  const maxReadBytes = options.maxReadBytes ?? REFUSAL_READ_BYTES;
  return new Promise((resolve) => {
    if (socket.closed) {
      resolve(RefusalOutcome.Gone);
      return;
    }
    let outcome: RefusalOutcome | undefined;
    let buffered = Buffer.alloc(0);
    let readBytes = 0;
    /** Told by the connection's first byte, once: later messages (RFC 1929's) start with other bytes. */
    let protocol: "socks5" | "socks4" | "other" | undefined;
    let socks5Phase: "greeting" | "authentication" | "request" = "greeting";

    const reset = () => {
      outcome ??= RefusalOutcome.Reset;
      socket.resetAndDestroy();
    };
    // Written, then FIN; the client's own close (or the deadline) ends it. Closing at once could
    // reset a client still sending, and a reset can discard the answer before it is read.
    const answer = (kind: RefusalOutcome, bytes: Uint8Array) => {
      outcome = kind;
      buffered = Buffer.alloc(0);
      socket.end(bytes);
    };
    const answerHttp = () =>
      answer(RefusalOutcome.Http, encodeClosingResponse(503, "the proxy is serving as many connections as it may (--max-connections); retry shortly", { "Retry-After": String(RETRY_AFTER_SECONDS) }));
    const looksLikeHttp = () => protocol === "other" && HTTP_METHOD.test(buffered.subarray(0, 32).toString("latin1"));

    /** Answers as far as the buffered bytes allow; a client may send several messages in one write. */
    const advance = () => {
      protocol ??= buffered[0] === SOCKS5_FIRST_BYTE ? "socks5" : buffered[0] === SOCKS4_FIRST_BYTE ? "socks4" : "other";
      if (protocol === "socks5") advanceSocks5();
      else if (protocol === "socks4") {
        if (parseSocks4Request(buffered) !== "incomplete") answer(RefusalOutcome.Socks4, encodeSocks4Reply(Socks4Reply.RejectedOrFailed));
      } else if (looksLikeHttp()) {
        if (buffered.includes(HEAD_END)) answerHttp();
      } else if (!/^[A-Za-z]*$/.test(buffered.toString("latin1"))) {
        reset(); // starts no protocol the agent serves
      }
    };
    // The handshake of socks-session.ts, with the request refused instead of opened.
    const advanceSocks5 = () => {
      if (socks5Phase === "greeting") {
        const greeting = parseGreeting(buffered);
        if (greeting === "incomplete") return;
        buffered = buffered.subarray(greeting.bytesUsed);
        const wanted = options.users.size > 0 ? AuthMethod.UsernamePassword : AuthMethod.NoAuthentication;
        if (!greeting.value.methods.includes(wanted)) {
          answer(RefusalOutcome.Socks5, encodeMethodSelection(AuthMethod.NoAcceptableMethods));
          return;
        }
        socket.write(encodeMethodSelection(wanted));
        socks5Phase = wanted === AuthMethod.UsernamePassword ? "authentication" : "request";
      }
      if (socks5Phase === "authentication") {
        const credentials = parseUserPass(buffered);
        if (credentials === "incomplete") return;
        buffered = buffered.subarray(credentials.bytesUsed);
        if (!checkCredentials(options.users, credentials.value.name, credentials.value.password)) {
          answer(RefusalOutcome.Socks5, encodeUserPassStatus(false));
          return;
        }
        socket.write(encodeUserPassStatus(true));
        socks5Phase = "request";
      }
      if (parseRequest(buffered) !== "incomplete") answer(RefusalOutcome.Socks5, encodeReply(Reply.GeneralFailure));
    };

    const onData = (chunk: Buffer) => {
      if (outcome !== undefined) return; // answered: the rest is read and dropped until the close
      readBytes += chunk.byteLength;
      buffered = Buffer.concat([buffered, chunk]);
      try {
        advance();
      } catch {
        // Malformed (Socks5Error, Socks4Error), or a bug: either costs this connection, never the agent.
        reset();
        return;
      }
      if (outcome === undefined && readBytes >= maxReadBytes) {
        if (looksLikeHttp()) answerHttp();
        else reset();
      }
    };
    const onEnd = () => {
      // The client has said all it will: an HTTP request line is enough to answer.
      if (outcome === undefined && looksLikeHttp()) answerHttp();
      if (outcome === undefined) {
        outcome = RefusalOutcome.Gone;
        socket.destroy();
        return;
      }
      socket.destroySoon(); // once the answer is written
    };
    const deadline = setTimeout(() => {
      if (outcome !== undefined) socket.destroy();
      else if (looksLikeHttp()) {
        answerHttp();
        socket.destroySoon();
      } else reset();
    }, waitMs);

    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("error", () => {}); // a client reset ends it like any close
    socket.once("close", () => {
      clearTimeout(deadline);
      socket.off("data", onData);
      socket.off("end", onEnd);
      resolve(outcome ?? RefusalOutcome.Gone);
    });
  });
}

/**
 * Refusal log lines, at most one per `intervalMs`: the first refusal after a quiet interval is
 * logged at once, the ones after it are counted and logged together when the interval ends.
 */
export class RefusalLog {
  readonly #log: Logger;
  readonly #maxConnections: number;
  readonly #intervalMs: number;
  #counts = new Map<RefusalOutcome, number>();
  #windowStartedAtMs = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(log: Logger, maxConnections: number, intervalMs = REFUSAL_LOG_INTERVAL_MS) {
    this.#log = log;
    this.#maxConnections = maxConnections;
    this.#intervalMs = intervalMs;
  }

  /** Counts one refusal; writes its line now when none was written in the last interval. */
  refused(outcome: RefusalOutcome, clientLabel: string): void {
    if (this.#timer !== undefined) {
      this.#counts.set(outcome, (this.#counts.get(outcome) ?? 0) + 1);
      return;
    }
    this.#log.warn(
      `${clientLabel} refused (${OUTCOME_NAMES[outcome]}): --max-connections ${this.#maxConnections} reached; further refusals are counted, one line per ${this.#intervalMs / 1000} s at most`,
    );
    this.#openWindow();
  }

  /** Writes the count not yet logged, if any, and stops the interval's timer. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#flush();
  }

  #openWindow(): void {
    this.#windowStartedAtMs = Date.now();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      // Refusals in this interval: logged now, and the next interval counts again. A quiet
      // interval closes the window, so the next refusal is logged the moment it happens.
      if (this.#flush()) this.#openWindow();
    }, this.#intervalMs);
    // A pending count must not keep a stopping agent alive; close() writes it.
    this.#timer.unref();
  }

  /** Logs the counted refusals; true when there were any. */
  #flush(): boolean {
    const total = [...this.#counts.values()].reduce((sum, count) => sum + count, 0);
    if (total === 0) return false;
    const seconds = ((Date.now() - this.#windowStartedAtMs) / 1000).toFixed(1);
    const breakdown = [...this.#counts].map(([outcome, count]) => `${count} ${OUTCOME_NAMES[outcome]}`).join(", ");
    this.#log.warn(`refused ${total} more connection${total === 1 ? "" : "s"} in ${seconds} s (${breakdown}): --max-connections ${this.#maxConnections} reached`);
    this.#counts = new Map();
    return true;
  }
}

/** The over-capacity refusals of one listener: each answered, their number bounded, their lines rate-limited. */
export class OverCapacity {
  readonly #options: RefusalOptions;
  readonly #log: RefusalLog;
  readonly #maxPending: number;
  /** Refusals in progress, with their client labels. */
  readonly #pending = new Map<Socket, string>();

  constructor(config: { maxConnections: number; users: Users }, log: Logger, options: { waitMs?: number; maxPending?: number; logIntervalMs?: number } = {}) {
    this.#options = { users: config.users, waitMs: options.waitMs };
    this.#maxPending = options.maxPending ?? MAX_PENDING_REFUSALS;
    this.#log = new RefusalLog(log, config.maxConnections, options.logIntervalMs);
  }

  /** Refuses `socket`, accepted over capacity: in its protocol when it can be told, else with a reset. */
  refuse(socket: Socket): void {
    const label = socket.remoteFamily === "IPv6" ? `[${socket.remoteAddress}]:${socket.remotePort}` : `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    if (this.#pending.size >= this.#maxPending) {
      // Past the bound a flood costs one reset each, never a held socket and timer.
      socket.on("error", () => {});
      socket.resetAndDestroy();
      this.#log.refused(RefusalOutcome.Reset, label);
      return;
    }
    this.#pending.set(socket, label);
    void refuseOverCapacity(socket, this.#options).then((outcome) => {
      // Gone from the map already when close() reset it and counted it.
      if (this.#pending.delete(socket)) this.#log.refused(outcome, label);
    });
  }

  /** Refusals in progress now. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Resets the refusals in progress and writes the count not yet logged (the listener is stopping). */
  close(): void {
    for (const [socket, label] of this.#pending) {
      socket.resetAndDestroy();
      this.#log.refused(RefusalOutcome.Reset, label);
    }
    this.#pending.clear();
    this.#log.close();
  }
}
