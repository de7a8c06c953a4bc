// Request framing at the HTTP front door (RFC 9112 section 6), against the real agent and edge:
// 501 for a transfer coding the agent does not implement, 400 for invalid or ambiguous framing,
// each before any tunnel opens and each closing the connection after its answer. The agent's
// tunnels pass through an upgrade recorder, so "no tunnel" is read from the upgrades it saw.

import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { freePort, startAgent, type RunningAgent } from "./processes.ts";
import { startUpgradeRecorder, type UpgradeRecorder } from "./upgrade-recorder.ts";

let origin: HttpOrigin;
let recorder: UpgradeRecorder;
let agent: RunningAgent;
/** Where every refused request is addressed: no tunnel may ever name it. */
let refusedPort: number;

beforeAll(async () => {
  origin = await startHttpOrigin();
  refusedPort = await freePort();
  recorder = await startUpgradeRecorder(Number(new URL(inject("edgeUrl")).port));
  // No warm pool: the first stream opens a tunnel whose upgrade names its destination, and later
  // ones send their OPEN on it (or on a tunnel of their own); the recorder sees every OPEN.
  agent = await startAgent(`http://127.0.0.1:${recorder.port}`, inject("edgeToken"), ["--pool-size", "0"]);
});
afterAll(async () => {
  await agent?.stop();
  await recorder?.close();
  await origin?.close();
});

/** Writes `request` on a raw connection; resolves with the answer and whether the agent ended the connection with a FIN. */
function exchange(request: string): Promise<{ answer: string; endedByAgent: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect(agent.port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let endedByAgent = false;
    socket.setTimeout(10_000, () => socket.destroy(new Error("the agent did not close the connection")));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => (endedByAgent = true));
    socket.on("error", reject);
    socket.on("close", () => resolve({ answer: Buffer.concat(chunks).toString("latin1"), endedByAgent }));
    socket.write(request);
  });
}

/** The destination port of every OPEN the agent has sent so far, in an upgrade or on an open tunnel. */
function tunnelPorts(): number[] {
  return recorder.opens().map((open) => open.destination.port);
}

/**
 * Sends a request the agent serves, waits for its tunnel, and checks that no tunnel names the
 * refused port: the refused request came first on a connection that is now closed, so a tunnel
 * opened for it would have been recorded before this one.
 */
async function expectNoTunnelForRefused(): Promise<void> {
  const before = recorder.opens().length;
  const served = await exchange(`GET http://127.0.0.1:${origin.port}/data.json HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nConnection: close\r\n\r\n`);
  expect(served.answer).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\{"answer":42\}/);
  await recorder.waitForOpens(before + 1);
  expect(tunnelPorts()).toContain(origin.port);
  expect(tunnelPorts()).not.toContain(refusedPort);
}

const target = () => `http://127.0.0.1:${refusedPort}/upload`;
const hostLine = () => `Host: 127.0.0.1:${refusedPort}\r\n`;

describe("transfer codings the agent does not implement", () => {
  it("answers 501 naming xchunked, closes the connection, and opens no tunnel", async () => {
    const { answer, endedByAgent } = await exchange(`POST ${target()} HTTP/1.1\r\n${hostLine()}Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 501 Not Implemented\r\n/);
    expect(answer).toContain("\r\nConnection: close\r\n");
    expect(answer).toMatch(/\r\n\r\ntransfer coding "xchunked" is not implemented: the proxy decodes chunked only \(RFC 9112 section 6\.1\)\n$/);
    expect(endedByAgent).toBe(true);
    await agent.waitForLog(/HTTP POST refused 501: transfer coding "xchunked" is not implemented/);
    await expectNoTunnelForRefused();
  });

  it("answers 501 for gzip before chunked (which node:http's parser lets through)", async () => {
    const { answer, endedByAgent } = await exchange(`POST ${target()} HTTP/1.1\r\n${hostLine()}Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 501 Not Implemented\r\n[\s\S]*\r\n\r\ntransfer coding "gzip" is not implemented/);
    expect(endedByAgent).toBe(true);
    await expectNoTunnelForRefused();
  });

  it("answers 501 for a CONNECT with an unknown coding, without opening it", async () => {
    const { answer, endedByAgent } = await exchange(`CONNECT 127.0.0.1:${refusedPort} HTTP/1.1\r\n${hostLine()}Transfer-Encoding: xchunked\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 501 Not Implemented\r\n[\s\S]*\r\n\r\ntransfer coding "xchunked" is not implemented/);
    expect(endedByAgent).toBe(true);
    await expectNoTunnelForRefused();
  });
});

describe("invalid or ambiguous framing", () => {
  it.each([
    ["both Transfer-Encoding and Content-Length", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", /Transfer-Encoding can't be present with Content-Length/],
    ["conflicting Content-Length values", "Content-Length: 3\r\nContent-Length: 4\r\n", /Duplicate Content-Length/],
    ["a Content-Length that is no number", "Content-Length: +3\r\n", /Invalid character in Content-Length/],
    ["chunked not last", "Transfer-Encoding: chunked, gzip\r\n", /Invalid Transfer-Encoding header value/],
    ["chunked twice", "Transfer-Encoding: chunked, chunked\r\n", /Invalid Transfer-Encoding header value/],
  ])("answers 400 for %s, naming it, and opens no tunnel", async (_name, framing, named) => {
    const { answer, endedByAgent } = await exchange(`POST ${target()} HTTP/1.1\r\n${hostLine()}${framing}\r\nabc`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(answer).toContain("\r\nConnection: close\r\n");
    const body = answer.slice(answer.indexOf("\r\n\r\n") + 4);
    expect(body).toMatch(/^the body's length cannot be known: /);
    expect(body).toMatch(named);
    expect(endedByAgent).toBe(true);
    await expectNoTunnelForRefused();
  });

  it("answers 400 for Transfer-Encoding in an HTTP/1.0 request, even chunked (RFC 9112 section 6.1)", async () => {
    const { answer, endedByAgent } = await exchange(`POST ${target()} HTTP/1.0\r\n${hostLine()}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*\r\n\r\nTransfer-Encoding in an HTTP\/1\.0 request \(RFC 9112 section 6\.1\)\n$/);
    expect(endedByAgent).toBe(true);
    await expectNoTunnelForRefused();
  });

  it("answers 400 where node:http's parser reads chunked differently from the header value (chunked and a tab), before any tunnel", async () => {
    const { answer, endedByAgent } = await exchange(`POST ${target()} HTTP/1.1\r\n${hostLine()}Transfer-Encoding: chunked\t\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*\r\n\r\nthe body's length cannot be known: Request has invalid Transfer-Encoding \(HPE_INVALID_TRANSFER_ENCODING/);
    expect(endedByAgent).toBe(true);
    await expectNoTunnelForRefused();
  });

  it("answers 400 for a CONNECT that announces content", async () => {
    const { answer } = await exchange(`CONNECT 127.0.0.1:${refusedPort} HTTP/1.1\r\n${hostLine()}Content-Length: 5\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*a CONNECT request has no content/);
    await expectNoTunnelForRefused();
  });

  it("still forwards a chunked upload (the held turn delays it, nothing more)", async () => {
    const { answer } = await exchange(
      `POST http://127.0.0.1:${origin.port}/upload?id=framing-chunked HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(origin.received.get("framing-chunked")?.bytes).toBe(5);
  });
});
