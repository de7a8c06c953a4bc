// Credit-based flow control at the edge (docs/protocol.md §5): the edge sends the agent no more
// than the window it announced in OPEN plus the WINDOW credit it returned, and it closes 4429 on
// an agent that overruns the edge's window or grants credit beyond its own.

import { afterEach, describe, expect, inject, it } from "vitest";
import { DEFAULT_READ_BYTES } from "../../worker/config.ts";
import {
  CloseCode,
  FrameType,
  MAX_EARLY_DATA_BYTES,
  MIN_WINDOW_BYTES,
  StreamStatus,
  encodeData,
  encodeEnd,
  encodeWindow,
} from "../../worker/protocol/index.ts";
import { SOURCE_BYTES, patternBytes } from "./pattern.ts";
import {
  TEST_TOKEN,
  TunnelClient,
  closeAllTunnels,
  concatBytes,
  describeFrame,
  firstDifference,
  fromUtf8,
  loopback,
  openTunnel,
} from "./tunnel-client.ts";

afterEach(closeAllTunnels);

/** A small window: the edge's reads and our grants cross it many times per test. */
const SMALL_WINDOW_BYTES = MIN_WINDOW_BYTES;
/** Bindings for an edge whose own (upload) window is SMALL_WINDOW_BYTES. */
const SMALL_WINDOW_ENV = { EDGESOCKS_TOKEN: TEST_TOKEN, EDGESOCKS_WINDOW_BYTES: String(SMALL_WINDOW_BYTES) };

type ExchangeResult = {
  downloaded: Uint8Array;
  /** Every WINDOW the edge sent for the upload direction. */
  edgeGrants: number[];
  /** Most download bytes the edge had sent us beyond our returned credit at any moment. */
  peakUngrantedBytes: number;
};

/**
 * Plays a conformant agent on an opened stream: uploads `upload` in `chunkBytes` pieces within
 * the edge's credit, then END; reads DATA until the edge's END, returning credit in batches of
 * half our window; and checks every frame against the credit each side holds.
 */
async function exchange(
  tunnel: TunnelClient,
  upload: Uint8Array,
  windows: { ourWindowBytes: number; edgeWindowBytes: number },
  chunkBytes: number,
): Promise<ExchangeResult> {
  const chunks: Uint8Array[] = [];
  const edgeGrants: number[] = [];
  let uploadCreditBytes = windows.edgeWindowBytes;
  let uploadedBytes = 0;
  let endSent = false;
  let ungrantedBytes = 0;
  let peakUngrantedBytes = 0;
  for (;;) {
    while (uploadedBytes < upload.byteLength && uploadCreditBytes > 0) {
      const byteCount = Math.min(chunkBytes, uploadCreditBytes, upload.byteLength - uploadedBytes);
      tunnel.send(encodeData(upload.subarray(uploadedBytes, uploadedBytes + byteCount)));
      uploadedBytes += byteCount;
      uploadCreditBytes -= byteCount;
    }
    if (uploadedBytes === upload.byteLength && !endSent) {
      tunnel.send(encodeEnd());
      endSent = true;
    }
    const frame = await tunnel.nextFrame();
    if (frame.type === FrameType.End) break;
    if (frame.type === FrameType.Window) {
      edgeGrants.push(frame.bytes);
      uploadCreditBytes += frame.bytes;
      if (uploadCreditBytes > windows.edgeWindowBytes) throw new Error(`edge granted credit up to ${uploadCreditBytes} bytes`);
      continue;
    }
    if (frame.type !== FrameType.Data) throw new Error(`unexpected ${describeFrame(frame)}`);
    if (frame.payload.byteLength > DEFAULT_READ_BYTES) throw new Error(`DATA of ${frame.payload.byteLength} bytes`);
    chunks.push(frame.payload.slice());
    ungrantedBytes += frame.payload.byteLength;
    peakUngrantedBytes = Math.max(peakUngrantedBytes, ungrantedBytes);
    if (ungrantedBytes >= windows.ourWindowBytes / 2) {
      tunnel.send(encodeWindow(ungrantedBytes));
      ungrantedBytes = 0;
    }
  }
  return { downloaded: concatBytes(chunks), edgeGrants, peakUngrantedBytes };
}

describe("download: the edge within the agent's window", () => {
  it("sends exactly the window announced in OPEN, then nothing until a WINDOW arrives", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open(loopback(inject("sourcePort")), SMALL_WINDOW_BYTES);
    expect(opened.status).toBe(StreamStatus.Ok);
    const first = await tunnel.readData(SMALL_WINDOW_BYTES);
    expect(firstDifference(first, patternBytes(SMALL_WINDOW_BYTES))).toBeUndefined();
    // The origin has megabytes more ready; without credit the edge must hold them back.
    await tunnel.expectSilence(1_000);
  });

  it("sends exactly what each WINDOW grants, continuing the byte stream", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("sourcePort")), SMALL_WINDOW_BYTES);
    await tunnel.readData(SMALL_WINDOW_BYTES);
    await tunnel.expectSilence(200);
    tunnel.send(encodeWindow(1_000));
    const second = await tunnel.readData(1_000);
    expect(firstDifference(second, patternBytes(1_000, SMALL_WINDOW_BYTES))).toBeUndefined();
    await tunnel.expectSilence(300);
    tunnel.send(encodeWindow(SMALL_WINDOW_BYTES));
    const third = await tunnel.readData(SMALL_WINDOW_BYTES);
    expect(firstDifference(third, patternBytes(SMALL_WINDOW_BYTES, SMALL_WINDOW_BYTES + 1_000))).toBeUndefined();
    await tunnel.expectSilence(300);
  });

  it("streams a whole origin response through a small window as credit returns", async () => {
    const tunnel = await openTunnel();
    const ourWindowBytes = 64 * 1024;
    const opened = await tunnel.open(loopback(inject("sourcePort")), ourWindowBytes);
    // An empty upload: END at once, then download only.
    const result = await exchange(tunnel, new Uint8Array(0), { ourWindowBytes, edgeWindowBytes: opened.windowBytes }, 1);
    expect(firstDifference(result.downloaded, patternBytes(SOURCE_BYTES))).toBeUndefined();
    expect(result.peakUngrantedBytes).toBeLessThanOrEqual(ourWindowBytes);
  });

  it("closes 4429 on a WINDOW that would raise the edge's credit above the agent's window", async () => {
    const tunnel = await openTunnel();
    // The echo server sends nothing unprompted, so the edge still holds the full window.
    await tunnel.open(loopback(inject("echoPort")), SMALL_WINDOW_BYTES);
    tunnel.send(encodeWindow(1));
    expect(await tunnel.expectClose()).toEqual({
      code: CloseCode.WindowExceeded,
      reason: `peer granted 1 bytes beyond its ${SMALL_WINDOW_BYTES}-byte window`,
    });
  });

  it("closes 4429 on a WINDOW of 2^32-1 bytes", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("sourcePort")), SMALL_WINDOW_BYTES);
    await tunnel.readData(SMALL_WINDOW_BYTES);
    tunnel.send(encodeWindow(0xffffffff));
    expect((await tunnel.expectClose()).code).toBe(CloseCode.WindowExceeded);
  });

  it("closes 4400 on a WINDOW of 0 bytes", async () => {
    const tunnel = await openTunnel();
    await tunnel.open(loopback(inject("echoPort")), SMALL_WINDOW_BYTES);
    tunnel.send(Uint8Array.of(FrameType.Window, 0, 0, 0, 0));
    expect(await tunnel.expectClose()).toEqual({ code: CloseCode.MalformedFrame, reason: "WINDOW grants 0 bytes" });
  });
});

describe("upload: the agent within the edge's window", () => {
  it("announces EDGESOCKS_WINDOW_BYTES in OPENED and returns credit once the bytes are delivered", async () => {
    const tunnel = await openTunnel(SMALL_WINDOW_ENV);
    const opened = await tunnel.open(loopback(inject("countThenReplyPort")));
    expect(opened.windowBytes).toBe(SMALL_WINDOW_BYTES);
    tunnel.send(encodeData(patternBytes(SMALL_WINDOW_BYTES)));
    expect(await tunnel.expectFrame(FrameType.Window)).toEqual({ type: FrameType.Window, bytes: SMALL_WINDOW_BYTES });
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe(`received ${SMALL_WINDOW_BYTES} bytes`);
  });

  it("closes 4429 on DATA one byte larger than the edge's window", async () => {
    const tunnel = await openTunnel(SMALL_WINDOW_ENV);
    await tunnel.open(loopback(inject("countThenReplyPort")));
    tunnel.send(encodeData(new Uint8Array(SMALL_WINDOW_BYTES + 1)));
    expect(await tunnel.expectClose()).toEqual({
      code: CloseCode.WindowExceeded,
      reason: `peer sent ${SMALL_WINDOW_BYTES + 1} bytes with ${SMALL_WINDOW_BYTES} bytes of credit`,
    });
  });

  // Under a quarter window delivered earns no credit back, so what is left is exact however
  // fast the destination takes the first bytes.
  const underQuarterBytes = SMALL_WINDOW_BYTES / 4 - 1;

  it("accepts DATA that uses exactly the credit left after earlier DATA", async () => {
    const tunnel = await openTunnel(SMALL_WINDOW_ENV);
    await tunnel.open(loopback(inject("countThenReplyPort")));
    tunnel.send(encodeData(new Uint8Array(underQuarterBytes)));
    tunnel.send(encodeData(new Uint8Array(SMALL_WINDOW_BYTES - underQuarterBytes)));
    expect(await tunnel.expectFrame(FrameType.Window)).toEqual({ type: FrameType.Window, bytes: SMALL_WINDOW_BYTES });
  });

  it("closes 4429 on DATA one byte beyond the credit left after earlier DATA", async () => {
    const tunnel = await openTunnel(SMALL_WINDOW_ENV);
    await tunnel.open(loopback(inject("countThenReplyPort")));
    tunnel.send(encodeData(new Uint8Array(underQuarterBytes)));
    await tunnel.expectSilence(100);
    const overBytes = SMALL_WINDOW_BYTES - underQuarterBytes + 1;
    tunnel.send(encodeData(new Uint8Array(overBytes)));
    expect(await tunnel.expectClose()).toEqual({
      code: CloseCode.WindowExceeded,
      reason: `peer sent ${overBytes} bytes with ${overBytes - 1} bytes of credit`,
    });
  });

  it("does not count OPEN's early data against the edge's window", async () => {
    const tunnel = await openTunnel(SMALL_WINDOW_ENV);
    await tunnel.open(loopback(inject("countThenReplyPort")), SMALL_WINDOW_BYTES, new Uint8Array(MAX_EARLY_DATA_BYTES));
    tunnel.send(encodeData(new Uint8Array(SMALL_WINDOW_BYTES)));
    expect(await tunnel.expectFrame(FrameType.Window)).toEqual({ type: FrameType.Window, bytes: SMALL_WINDOW_BYTES });
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe(`received ${MAX_EARLY_DATA_BYTES + SMALL_WINDOW_BYTES} bytes`);
  });

  it("returns credit in batches of at least a quarter window while a long upload runs", async () => {
    const tunnel = await openTunnel(SMALL_WINDOW_ENV);
    await tunnel.open(loopback(inject("countThenReplyPort")));
    const uploadBytes = 256 * 1024;
    const result = await exchange(tunnel, patternBytes(uploadBytes), { ourWindowBytes: SMALL_WINDOW_BYTES, edgeWindowBytes: SMALL_WINDOW_BYTES }, 3_000);
    expect(fromUtf8(result.downloaded)).toBe(`received ${uploadBytes} bytes`);
    expect(result.edgeGrants.length).toBeGreaterThanOrEqual((uploadBytes - SMALL_WINDOW_BYTES) / SMALL_WINDOW_BYTES);
    for (const grant of result.edgeGrants) expect(grant).toBeGreaterThanOrEqual(SMALL_WINDOW_BYTES / 4);
  });
});

describe("both directions at once", () => {
  it("echoes 2 MiB byte-exact through small windows both ways", async () => {
    const tunnel = await openTunnel(SMALL_WINDOW_ENV);
    await tunnel.open(loopback(inject("echoPort")), SMALL_WINDOW_BYTES);
    const upload = patternBytes(2 * 1024 * 1024);
    const result = await exchange(tunnel, upload, { ourWindowBytes: SMALL_WINDOW_BYTES, edgeWindowBytes: SMALL_WINDOW_BYTES }, 5_000);
    expect(firstDifference(result.downloaded, upload)).toBeUndefined();
    expect(result.peakUngrantedBytes).toBeLessThanOrEqual(SMALL_WINDOW_BYTES);
  });

  it("echoes 3 MiB byte-exact with the default windows, in frames larger than a read", async () => {
    const tunnel = await openTunnel();
    const opened = await tunnel.open(loopback(inject("echoPort")));
    const upload = patternBytes(3 * 1024 * 1024);
    const result = await exchange(tunnel, upload, { ourWindowBytes: opened.windowBytes, edgeWindowBytes: opened.windowBytes }, 600 * 1024);
    expect(firstDifference(result.downloaded, upload)).toBeUndefined();
  });
});
