// A client's one handshake deadline (--handshake-timeout-ms), counted from accept and handed from
// stage to stage with the connection (first byte, greeting, password, request, HTTP head), so a
// client that trickles its bytes gets one deadline for the whole handshake, not a fresh one per
// stage. The stage holding the connection answers the expiry in its own protocol; the hand-off
// to a route ends it.

/** The deadline, as each stage holds it. */
export type HandshakeDeadline = {
  readonly timeoutMs: number;
  /** Replaces what the expiry does: the stage that now holds the connection answers it. */
  onExpiry(handler: () => void): void;
  /** The handshake is over (handed on, refused or closed): the expiry never comes. Idempotent. */
  clear(): void;
};

/** Starts a deadline `timeoutMs` from now that runs the latest `onExpiry` handler, once. */
export function startHandshakeDeadline(timeoutMs: number, onExpiry: () => void): HandshakeDeadline {
  let handler: (() => void) | undefined = onExpiry;
  const timer = setTimeout(() => {
    const expire = handler;
    handler = undefined;
    expire?.();
  }, timeoutMs);
  return {
    timeoutMs,
    onExpiry(next) {
      if (handler !== undefined) handler = next;
    },
    clear() {
      handler = undefined;
      clearTimeout(timer);
    },
  };
}
