// The agent's upload queue (local-agent/tunnel/upload-queue.ts): frames are cut from it in order, across
// chunk boundaries, without copying.

import { describe, expect, it } from "vitest";
import { UploadQueue } from "../../local-agent/tunnel/upload-queue.ts";
import { FrameType, decodeFrame, encodeData } from "../../worker/protocol/index.ts";

const bytesOf = (pieces: Uint8Array[]): number[] => pieces.flatMap((piece) => Array.from(piece));

describe("UploadQueue", () => {
  it("takes across chunk boundaries, in order, and counts what is left", () => {
    const queue = new UploadQueue();
    queue.push(Uint8Array.of(1, 2, 3));
    queue.push(Uint8Array.of(4, 5));
    queue.push(Uint8Array.of(6));
    expect(queue.byteLength).toBe(6);
    expect(bytesOf(queue.take(4))).toEqual([1, 2, 3, 4]);
    expect(queue.byteLength).toBe(2);
    expect(bytesOf(queue.take(10))).toEqual([5, 6]);
    expect(queue.byteLength).toBe(0);
    expect(queue.take(10)).toEqual([]);
  });

  it("hands out views of the queued chunks, not copies", () => {
    const chunk = Uint8Array.of(9, 8, 7, 6);
    const queue = new UploadQueue();
    queue.push(chunk);
    const [first] = queue.take(2);
    expect(first?.buffer).toBe(chunk.buffer);
    const [rest] = queue.take(2);
    expect(rest?.byteOffset).toBe(chunk.byteOffset + 2);
  });

  it("ignores empty chunks and empties on clear", () => {
    const queue = new UploadQueue();
    queue.push(new Uint8Array(0));
    expect(queue.take(1)).toEqual([]);
    queue.push(Uint8Array.of(1));
    queue.clear();
    expect(queue.byteLength).toBe(0);
    expect(queue.take(1)).toEqual([]);
  });

  it("feeds encodeData, which joins the pieces behind one type byte", () => {
    const queue = new UploadQueue();
    queue.push(Uint8Array.of(1, 2));
    queue.push(Uint8Array.of(3));
    const frame = encodeData(queue.take(3));
    expect(Array.from(frame)).toEqual([FrameType.Data, 1, 2, 3]);
    expect(decodeFrame(frame)).toEqual({ type: FrameType.Data, payload: Uint8Array.of(1, 2, 3) });
    expect(() => encodeData([])).toThrow(/DATA payload is 0 bytes/);
  });
});
