// The edge's open timeout (docs/protocol.md §4): a tunnel that carries no OPEN for
// openTimeoutMs, after the upgrade or after its last stream, is closed with 4408. Each test
// waits over 10 s, so they run concurrently, and each closes its own tunnel (a shared
// afterEach would close the others').

import { describe, expect, inject, it } from "vitest";
import { DEFAULT_OPEN_TIMEOUT_MS } from "../../worker/config.ts";
import { CloseCode, StreamStatus, encodeData, encodeEnd } from "../../worker/protocol/index.ts";
import { fromUtf8, loopback, openTunnel, utf8 } from "./tunnel-client.ts";

/** Slack for timers in a busy test run; the edge must not close before the timeout. */
const EARLY_TOLERANCE_MS = 250;
const LATE_TOLERANCE_MS = 3_000;
/** How long the re-arm test keeps its stream open: well over EARLY_TOLERANCE_MS. */
const STREAM_DURATION_MS = 1_500;

describe.concurrent("open timeout", () => {
  it("closes 4408 when no OPEN arrives within the open timeout of the upgrade", { timeout: 20_000 }, async ({ onTestFinished }) => {
    const tunnel = await openTunnel();
    onTestFinished(() => tunnel.close());
    const startedAt = Date.now();
    const close = await tunnel.expectClose(DEFAULT_OPEN_TIMEOUT_MS + LATE_TOLERANCE_MS);
    const elapsedMs = Date.now() - startedAt;
    expect(close).toEqual({ code: CloseCode.Timeout, reason: `no OPEN within ${DEFAULT_OPEN_TIMEOUT_MS} ms` });
    expect(elapsedMs).toBeGreaterThanOrEqual(DEFAULT_OPEN_TIMEOUT_MS - EARLY_TOLERANCE_MS);
  });

  it("does not run the open timeout while a stream is open", { timeout: 20_000 }, async ({ onTestFinished }) => {
    const tunnel = await openTunnel();
    onTestFinished(() => tunnel.close());
    expect((await tunnel.open(loopback(inject("echoPort")))).status).toBe(StreamStatus.Ok);
    await tunnel.expectSilence(DEFAULT_OPEN_TIMEOUT_MS + 1_000);
    tunnel.send(encodeData(utf8("still here")));
    expect(fromUtf8(await tunnel.readData(10))).toBe("still here");
  });

  it("re-arms the open timeout when a stream ends, counting from the end", { timeout: 20_000 }, async ({ onTestFinished }) => {
    const tunnel = await openTunnel();
    onTestFinished(() => tunnel.close());
    expect((await tunnel.open(loopback(inject("countThenReplyPort")))).status).toBe(StreamStatus.Ok);
    // Long enough that a timer counting from the upgrade would fire measurably early.
    await tunnel.expectSilence(STREAM_DURATION_MS);
    tunnel.send(encodeData(utf8("abc")));
    tunnel.send(encodeEnd());
    expect(fromUtf8(await tunnel.readUntilEnd())).toBe("received 3 bytes");
    const streamEndedAt = Date.now();
    const close = await tunnel.expectClose(DEFAULT_OPEN_TIMEOUT_MS + LATE_TOLERANCE_MS);
    expect(close).toEqual({ code: CloseCode.Timeout, reason: `no OPEN within ${DEFAULT_OPEN_TIMEOUT_MS} ms` });
    expect(Date.now() - streamEndedAt).toBeGreaterThanOrEqual(DEFAULT_OPEN_TIMEOUT_MS - EARLY_TOLERANCE_MS);
  });
});
