// Over-capacity refusals (local-agent/front/capacity.ts) on real loopback sockets: each protocol's own
// refusal once the client has said enough (SOCKS5 0x01, SOCKS4 0x5B, HTTP 503 with Retry-After),
// a reset otherwise, every connection held a bounded time; and the refusal log, one line per
// interval with a count.

import { request as httpRequest } from "node:http";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { SocksClient } from "socks";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { OverCapacity, RefusalLog, RefusalOutcome, refuseOverCapacity } from "../../local-agent/front/capacity.ts";
import { createLogger } from "../../local-agent/log.ts";
import type { Users } from "../../local-agent/config/users.ts";

const WAIT_MS = 300;
const PASSWORD = "over-capacity-password-1";

type Listener = { server: Server; port: number; outcomes: Promise<RefusalOutcome>[] };

/** A loopback listener, half-open like the agent's, that refuses every connection it accepts. */
async function refusingListener(users: Users): Promise<Listener> {
  const outcomes: Promise<RefusalOutcome>[] = [];
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    outcomes.push(refuseOverCapacity(socket, { users, waitMs: WAIT_MS }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port, outcomes };
}

/** Writes each of `writes` in turn (each after the answer to the one before, when `stepwise`), and resolves with how the connection ended. */
function converse(port: number, writes: number[][] | string, options: { stepwise?: boolean } = {}): Promise<{ answer: Buffer; how: string; elapsedMs: number }> {
  return new Promise((resolve) => {
    const startedAtMs = Date.now();
    const socket: Socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const chunks: Buffer[] = [];
    const queue = typeof writes === "string" ? [Buffer.from(writes, "latin1")] : writes.map((bytes) => Buffer.from(bytes));
    const writeNext = () => {
      const next = queue.shift();
      if (next) socket.write(next);
    };
    let how = "close";
    socket.on("connect", () => {
      if (options.stepwise) writeNext();
      else while (queue.length > 0) writeNext();
    });
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      if (options.stepwise) writeNext();
    });
    socket.on("end", () => {
      how = "end";
      socket.end();
    });
    socket.on("error", (error: NodeJS.ErrnoException) => (how = error.code ?? error.message));
    socket.on("close", () => resolve({ answer: Buffer.concat(chunks), how, elapsedMs: Date.now() - startedAtMs }));
  });
}

const SOCKS5_CONNECT_REQUEST = [0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0x00, 0x50];
const SOCKS5_GENERAL_FAILURE = [0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0];

describe("refuseOverCapacity without users", () => {
  let listener: Listener;
  beforeAll(async () => {
    listener = await refusingListener(new Map());
  });
  afterAll(() => new Promise<void>((resolve) => listener.server.close(() => resolve())));

  it("answers a SOCKS5 client's greeting, then its request with 0x01 (general SOCKS server failure)", async () => {
    const { answer, how } = await converse(listener.port, [[0x05, 0x01, 0x00], SOCKS5_CONNECT_REQUEST], { stepwise: true });
    expect([...answer]).toEqual([0x05, 0x00, ...SOCKS5_GENERAL_FAILURE]);
    expect(how).toBe("end");
    expect(await listener.outcomes.at(-1)).toBe(RefusalOutcome.Socks5);
  });

  it("answers greeting and request sent in one write alike", async () => {
    const { answer } = await converse(listener.port, [[0x05, 0x01, 0x00, ...SOCKS5_CONNECT_REQUEST]]);
    expect([...answer]).toEqual([0x05, 0x00, ...SOCKS5_GENERAL_FAILURE]);
  });

  it("is what the socks client reports as a general failure", async () => {
    await expect(
      SocksClient.createConnection({ proxy: { host: "127.0.0.1", port: listener.port, type: 5 }, command: "connect", destination: { host: "example.com", port: 80 }, timeout: 5_000 }),
    ).rejects.toThrow(/Socks5 proxy rejected connection - Failure/);
  });

  it("answers a SOCKS4 request with 0x5B", async () => {
    const { answer, how } = await converse(listener.port, [[0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, 0x00]]);
    expect([...answer]).toEqual([0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
    expect(how).toBe("end");
    expect(await listener.outcomes.at(-1)).toBe(RefusalOutcome.Socks4);
    await expect(
      SocksClient.createConnection({ proxy: { host: "127.0.0.1", port: listener.port, type: 4 }, command: "connect", destination: { host: "192.0.2.1", port: 80 }, timeout: 5_000 }),
    ).rejects.toThrow(/Socks4 Proxy rejected connection/);
  });

  it("answers an HTTP request 503 with Retry-After, as node:http's client reads it", async () => {
    const response = await new Promise<{ statusCode: number | undefined; retryAfter: string | undefined; body: string }>((resolve, reject) => {
      const request = httpRequest({ host: "127.0.0.1", port: listener.port, path: "http://example.com/", headers: { Host: "example.com" } }, (res) => {
        let body = "";
        res.on("data", (chunk: Buffer) => (body += chunk.toString()));
        res.on("end", () => resolve({ statusCode: res.statusCode, retryAfter: res.headers["retry-after"], body }));
      });
      request.on("error", reject);
      request.end();
    });
    expect(response).toEqual({ statusCode: 503, retryAfter: "1", body: "the proxy is serving as many connections as it may (--max-connections); retry shortly\n" });
    expect(await listener.outcomes.at(-1)).toBe(RefusalOutcome.Http);
  });

  it("answers a CONNECT 503 too, and closes", async () => {
    const { answer, how } = await converse(listener.port, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    const head = answer.toString("latin1");
    expect(head).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/);
    expect(head).toContain("\r\nRetry-After: 1\r\n");
    expect(head).toContain("\r\nConnection: close\r\n");
    expect(how).toBe("end");
  });

  it("answers an HTTP head longer than the read bound from what came so far", async () => {
    const { answer } = await converse(listener.port, `GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Long: ${"a".repeat(2000)}`);
    expect(answer.toString("latin1")).toMatch(/^HTTP\/1\.1 503 /);
  });

  it("answers an unfinished HTTP head 503 at the deadline: its first word said enough", async () => {
    const { answer, elapsedMs } = await converse(listener.port, "GET http://example.com/ HTTP/1.1\r\n");
    expect(answer.toString("latin1")).toMatch(/^HTTP\/1\.1 503 /);
    expect(elapsedMs).toBeGreaterThanOrEqual(WAIT_MS - 20);
  });

  it("resets a client that sends nothing, once the wait is over", async () => {
    const { answer, how, elapsedMs } = await converse(listener.port, []);
    expect(answer.byteLength).toBe(0);
    expect(how).toBe("ECONNRESET");
    expect(elapsedMs).toBeGreaterThanOrEqual(WAIT_MS - 20);
    expect(elapsedMs).toBeLessThan(WAIT_MS + 500);
    expect(await listener.outcomes.at(-1)).toBe(RefusalOutcome.Reset);
  });

  it("resets a SOCKS5 client that stops after its greeting, once the wait is over", async () => {
    const { answer, how, elapsedMs } = await converse(listener.port, [[0x05, 0x01, 0x00]]);
    expect([...answer]).toEqual([0x05, 0x00]);
    expect(how).toBe("ECONNRESET");
    expect(elapsedMs).toBeGreaterThanOrEqual(WAIT_MS - 20);
  });

  it("resets at once a client whose first byte starts no protocol the agent serves", async () => {
    const { how, elapsedMs } = await converse(listener.port, [[0x16, 0x03, 0x01, 0x00, 0x05]]);
    expect(how).toBe("ECONNRESET");
    expect(elapsedMs).toBeLessThan(WAIT_MS);
  });

  it("resets a SOCKS4 request that runs past the read bound without ending", async () => {
    const { how, elapsedMs } = await converse(listener.port, [[0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, ...Array<number>(600).fill(0x61)]]);
    expect(how).toBe("ECONNRESET");
    expect(elapsedMs).toBeLessThan(WAIT_MS);
  });

  it("resets malformed SOCKS5", async () => {
    const { how } = await converse(listener.port, [[0x05, 0x00, 0x05, 0x01, 0x00, 0x09]]);
    expect(how).toBe("ECONNRESET");
  });
});

describe("refuseOverCapacity with users (SOCKS5 asks for the password, as when serving)", () => {
  let listener: Listener;
  beforeAll(async () => {
    listener = await refusingListener(new Map([["alice", PASSWORD]]));
  });
  afterAll(() => new Promise<void>((resolve) => listener.server.close(() => resolve())));

  const userPass = (name: string, password: string) => [0x01, name.length, ...Buffer.from(name), password.length, ...Buffer.from(password)];

  it("answers the right password's request with 0x01", async () => {
    const { answer } = await converse(listener.port, [[0x05, 0x01, 0x02], userPass("alice", PASSWORD), SOCKS5_CONNECT_REQUEST], { stepwise: true });
    expect([...answer]).toEqual([0x05, 0x02, 0x01, 0x00, ...SOCKS5_GENERAL_FAILURE]);
  });

  it("answers a wrong password with RFC 1929's failure status, never 'success'", async () => {
    const { answer, how } = await converse(listener.port, [[0x05, 0x01, 0x02], userPass("alice", "wrong-password-000")], { stepwise: true });
    expect([...answer]).toEqual([0x05, 0x02, 0x01, 0x01]);
    expect(how).toBe("end");
  });

  it("answers a client offering no password 0xFF (no acceptable methods)", async () => {
    const { answer } = await converse(listener.port, [[0x05, 0x01, 0x00]]);
    expect([...answer]).toEqual([0x05, 0xff]);
  });
});

describe("OverCapacity", () => {
  let server: Server | undefined;
  afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

  it("resets at once past its bound on refusals in progress, and resets those in progress on close", async () => {
    const lines: string[] = [];
    const overCapacity = new OverCapacity({ maxConnections: 1, users: new Map() }, createLogger("info", (line) => lines.push(line)), { waitMs: 5_000, maxPending: 2 });
    server = createServer({ allowHalfOpen: true }, (socket) => overCapacity.refuse(socket));
    await new Promise<void>((resolve) => server?.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    // Two silent clients fill the bound (each would be held 5 s); the third is reset at accept.
    const held = [converse(port, []), converse(port, [])];
    await vi.waitFor(() => expect(overCapacity.pending).toBe(2));
    const third = await converse(port, []);
    expect(third.how).toBe("ECONNRESET");
    expect(third.elapsedMs).toBeLessThan(1_000);
    overCapacity.close();
    for (const ending of await Promise.all(held)) expect(ending.how).toBe("ECONNRESET");
    expect(lines.filter((line) => / warn /.test(line))).toHaveLength(2);
    expect(lines[0]).toMatch(/127\.0\.0\.1:\d+ refused \(reset\): --max-connections 1 reached; further refusals are counted, one line per 10 s at most\n$/);
    expect(lines[1]).toMatch(/refused 2 more connections in \d+\.\d s \(2 reset\): --max-connections 1 reached\n$/);
  });
});

describe("RefusalLog", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("logs the first refusal at once, then one line per interval with the count since the last line", () => {
    vi.useFakeTimers();
    const lines: string[] = [];
    const refusals = new RefusalLog(createLogger("info", (line) => lines.push(line)), 5, 10_000);
    refusals.refused(RefusalOutcome.Http, "192.0.2.1:1000");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ warn 192\.0\.2\.1:1000 refused \(HTTP 503\): --max-connections 5 reached; further refusals are counted, one line per 10 s at most\n$/);
    for (let index = 0; index < 1_000; index++) refusals.refused(index % 4 === 0 ? RefusalOutcome.Reset : RefusalOutcome.Socks5, "192.0.2.1:1001");
    vi.advanceTimersByTime(9_999);
    expect(lines).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/ warn refused 1000 more connections in 10\.0 s \(250 reset, 750 SOCKS5 refusal\): --max-connections 5 reached\n$/);
    // A quiet interval writes nothing, and closes the window: the next refusal is logged at once.
    vi.advanceTimersByTime(30_000);
    expect(lines).toHaveLength(2);
    refusals.refused(RefusalOutcome.Socks4, "192.0.2.2:2000");
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatch(/192\.0\.2\.2:2000 refused \(SOCKS4 0x5B\)/);
    refusals.close();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("writes the count not yet logged on close", () => {
    vi.useFakeTimers();
    const lines: string[] = [];
    const refusals = new RefusalLog(createLogger("info", (line) => lines.push(line)), 5, 10_000);
    refusals.refused(RefusalOutcome.Http, "192.0.2.1:1000");
    refusals.refused(RefusalOutcome.Gone, "192.0.2.1:1001");
    vi.advanceTimersByTime(2_500);
    refusals.close();
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/refused 1 more connection in 2\.5 s \(1 closed by the client\)/);
    expect(vi.getTimerCount()).toBe(0);
  });
});
