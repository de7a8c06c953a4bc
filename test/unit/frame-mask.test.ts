// Which tunnels carry an all-zero masking key (local-agent/tunnel/frame-mask.ts): inside TLS and on
// loopback, where RFC 6455's reason for random keys cannot arise; a plain ws:// edge elsewhere
// keeps ws's random keys.

import { describe, expect, it } from "vitest";
import { maskGeneratorFor } from "../../local-agent/tunnel/frame-mask.ts";

function keyFor(tunnelUrl: string): string | undefined {
  const generate = maskGeneratorFor(tunnelUrl);
  if (!generate) return undefined;
  const mask = Buffer.from([0xde, 0xad, 0xbe, 0xef]); // what a reused buffer may hold
  generate(mask);
  return mask.toString("hex");
}

describe("maskGeneratorFor", () => {
  it.each([
    "wss://edgesocks.example.workers.dev/tunnel",
    "wss://203.0.113.7:8443/tunnel",
    "ws://127.0.0.1:8787/tunnel",
    "ws://127.20.30.40:8787/tunnel",
    "ws://[::1]:8787/tunnel",
    "ws://localhost:8787/tunnel",
    "ws://edge.localhost:8787/tunnel",
  ])("zeroes the key for %s", (url) => {
    expect(keyFor(url)).toBe("00000000");
  });

  it.each(["ws://192.168.1.5:8787/tunnel", "ws://edge.example.net/tunnel", "ws://[2001:db8::1]:8787/tunnel", "ws://128.0.0.1/tunnel", "ws://localhost.example.net/tunnel"])(
    "leaves ws's random key for plain %s",
    (url) => {
      expect(maskGeneratorFor(url)).toBeUndefined();
    },
  );
});
