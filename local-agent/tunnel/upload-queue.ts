// The client bytes a stream has read and not yet sent to the edge, in order, with their count.

/** A FIFO of byte chunks from which frames are cut without copying. */
export class UploadQueue {
  #chunks: Uint8Array[] = [];
  #byteLength = 0;

  /** Bytes queued. */
  get byteLength(): number {
    return this.#byteLength;
  }

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.#chunks.push(chunk);
    this.#byteLength += chunk.byteLength;
  }

  /** Up to maxBytes from the front, as views of the queued chunks (no copy), in order. */
  take(maxBytes: number): Uint8Array[] {
    const pieces: Uint8Array[] = [];
    let takenBytes = 0;
    while (this.#chunks.length > 0 && takenBytes < maxBytes) {
      const chunk = this.#chunks[0] as Uint8Array;
      const pieceBytes = Math.min(chunk.byteLength, maxBytes - takenBytes);
      pieces.push(chunk.subarray(0, pieceBytes));
      takenBytes += pieceBytes;
      if (pieceBytes === chunk.byteLength) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(pieceBytes);
    }
    this.#byteLength -= takenBytes;
    return pieces;
  }

  /** Puts `chunks` back in front of what is queued, in their order. */
  unshift(chunks: readonly Uint8Array[]): void {
    const kept = chunks.filter((chunk) => chunk.byteLength > 0);
    this.#chunks = [...kept, ...this.#chunks];
    this.#byteLength += kept.reduce((total, chunk) => total + chunk.byteLength, 0);
  }

  /** Drops everything queued. */
  clear(): void {
    this.#chunks = [];
    this.#byteLength = 0;
  }
}
