// Test payloads whose every byte depends on its offset, shared by the Node servers of
// global-setup.ts and the tests inside workerd (so this module imports nothing).

/** Bytes the source server (sourcePort) sends on every connection before its FIN. */
export const SOURCE_BYTES = 2 * 1024 * 1024;

/** `byteCount` bytes of a pattern with period 251 (prime): any shift, loss or reordering shows. */
export function patternBytes(byteCount: number, startOffset = 0): Uint8Array {
  const bytes = new Uint8Array(byteCount);
  for (let index = 0; index < byteCount; index++) bytes[index] = (startOffset + index) % 251;
  return bytes;
}
