// The masking key of the agent's WebSocket frames. RFC 6455 section 5.3 wants an unpredictable
// key per frame so that a proxy in the path which does not understand WebSockets cannot be fed
// bytes of the client's choosing (cache poisoning). That cannot happen inside TLS, nor on a
// loopback edge; there an all-zero key leaves the payload as it is, and both ends skip the XOR:
// `ws` when the key is zero, and workerd's kj (`if (!mask.isZero())` in kj/compat/http.c++),
// where unmasking byte by byte was 27% of workerd's CPU on upload. wstunnel sends unmasked frames
// by default for the same reason. A plain ws:// edge on another host keeps random keys.

import { isIP } from "node:net";

/** ws's generateMask option: fills the 4-byte key in place. */
export type MaskGenerator = (mask: Buffer) => void;

const zeroMask: MaskGenerator = (mask) => {
  mask.fill(0);
};

/** The key generator for tunnels to `tunnelUrl` (ws:// or wss://): zero inside TLS and on loopback, ws's random default elsewhere. */
export function maskGeneratorFor(tunnelUrl: string): MaskGenerator | undefined {
  const url = new URL(tunnelUrl);
  return url.protocol === "wss:" || isLoopbackHost(url.hostname) ? zeroMask : undefined;
}

/** A host name or literal that can only mean this machine: localhost, 127.0.0.0/8, ::1. */
function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || host === "0:0:0:0:0:0:0:1";
  return false;
}
