// Reading an HTTP answer without trusting it: its body no larger than the caller allows (a DNS
// message is at most 65,535 bytes, and a peer that streams more, with no Content-Length or a false
// one, must not be read into an isolate whose 128 MB every tunnel shares), and a fetch's timeout
// told from its other failures.

/** Whether `error` is a fetch's (or its body's) AbortSignal.timeout firing. */
export function isTimeout(error: unknown): boolean {
  return error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError");
}

/** The body's bytes, or "too large" as soon as it passes maxBytes (the rest is not read). */
export async function readAtMost(message: Request | Response, maxBytes: number): Promise<Uint8Array | "too large"> {
  const declared = Number(message.headers.get("Content-Length") ?? "0");
  if (declared > maxBytes) {
    await message.body?.cancel();
    return "too large";
  }
  if (!message.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = message.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      return "too large";
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}
