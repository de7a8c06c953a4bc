// The upstream-proxy handshake (worker/dial/upstream-handshake.ts) against real upstreams on
// loopback: Debian's microsocks (SOCKS5 + RFC 1929) and tinyproxy (HTTP CONNECT + Basic), each
// started by this file and dialed over a Node socket wrapped as web streams, as workerd's
// connect() hands the Worker a socket. Fake upstreams (node:net servers) cover what real ones
// will not do on request: garbage, early closes, resets, bytes past the reply.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { UpstreamError, upstreamHandshake, type ByteChannel } from "../../worker/dial/upstream-handshake.ts";
import { parseUpstreamUrl, type UpstreamProxy } from "../../worker/dial/upstream-url.ts";
import { awaitListening, spawnOwned, type OwnedProcess } from "../upstreams/proxies.ts";
import { AddressType, StreamStatus, type Destination } from "../../worker/protocol/index.ts";

const LOOPBACK = "127.0.0.1";
const USER = "alice";
const PASSWORD = "c0rrect-h0rse";
const WRONG_PASSWORD = "wr0ng-pa55word";

// ---- owned resources -------------------------------------------------------------------------

/** Client sockets a test opened; afterEach destroys them. */
const openSockets = new Set<Socket>();
afterEach(() => {
  for (const socket of openSockets) socket.destroy();
  openSockets.clear();
});

/** A listening node:net server whose close() also ends the connections it accepted. */
type OwnedServer = { port: number; close(): Promise<void> };

async function listen(onConnection: (socket: Socket) => void): Promise<OwnedServer> {
  const accepted = new Set<Socket>();
  const server: Server = createServer((socket) => {
    accepted.add(socket);
    socket.on("close", () => accepted.delete(socket));
    socket.on("error", () => socket.destroy());
    onConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, LOOPBACK, resolve);
  });
  const { port } = server.address() as { port: number };
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of accepted) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A loopback port nothing listens on: bound by the kernel's choice, then released. */
async function unusedPort(): Promise<number> {
  const server = await listen(() => undefined);
  await server.close();
  return server.port;
}

/** A connection to `port` as the ByteChannel a Worker's connect() would give. */
async function dial(port: number): Promise<ByteChannel> {
  const socket = netConnect(port, LOOPBACK);
  openSockets.add(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return Duplex.toWeb(socket) as ByteChannel;
}

// ---- assertions ---------------------------------------------------------------------------------

/** The UpstreamError the handshake rejects with, after checking it released both locks. */
async function handshakeFailure(channel: ByteChannel, proxy: UpstreamProxy, destination: Destination): Promise<UpstreamError> {
  const error: unknown = await upstreamHandshake(channel, proxy, destination).then(
    () => new Error("the handshake succeeded"),
    (rejection: unknown) => rejection,
  );
  expect(error).toBeInstanceOf(UpstreamError);
  expect(channel.readable.locked).toBe(false);
  expect(channel.writable.locked).toBe(false);
  return error as UpstreamError;
}

/** Writes `message` into the open tunnel and expects the echo origin to send the same bytes back. */
async function expectEcho(channel: ByteChannel, message: string): Promise<void> {
  const writer = channel.writable.getWriter();
  const reader = channel.readable.getReader();
  try {
    await writer.write(new TextEncoder().encode(message));
    let received = "";
    const decoder = new TextDecoder();
    while (received.length < message.length) {
      const chunk = await reader.read();
      if (chunk.done) break;
      received += decoder.decode(chunk.value, { stream: true });
    }
    expect(received).toBe(message);
  } finally {
    writer.releaseLock();
    reader.releaseLock();
  }
}

const ipv4 = (port: number): Destination => ({ type: AddressType.IPv4, host: LOOPBACK, port });

// ---- shared origins ------------------------------------------------------------------------------

let echoOrigin: OwnedServer;
/** A loopback port nothing listens on: the destination that refuses. */
let refusingPort: number;

beforeAll(async () => {
  echoOrigin = await listen((socket) => socket.pipe(socket));
  refusingPort = await unusedPort();
});
afterAll(async () => {
  await echoOrigin.close();
});

// ---- microsocks -----------------------------------------------------------------------------------

describe("SOCKS5 through microsocks", () => {
  let withAuth: OwnedProcess;
  let withAuthPort: number;
  let open: OwnedProcess;
  let openPort: number;

  beforeAll(async () => {
    withAuthPort = await unusedPort();
    withAuth = spawnOwned("/usr/bin/microsocks", ["-i", LOOPBACK, "-p", String(withAuthPort), "-u", USER, "-P", PASSWORD]);
    openPort = await unusedPort();
    open = spawnOwned("/usr/bin/microsocks", ["-i", LOOPBACK, "-p", String(openPort)]);
    await Promise.all([awaitListening(withAuth, withAuthPort), awaitListening(open, openPort)]);
  });
  afterAll(async () => {
    await Promise.all([withAuth?.stop(), open?.stop()]);
  });

  const proxy = (userinfo = `${USER}:${PASSWORD}@`, port = withAuthPort) => parseUpstreamUrl(`socks5://${userinfo}${LOOPBACK}:${port}`);

  it("opens a tunnel with the right user name and password; bytes flow both ways and both locks are free again", async () => {
    const channel = await dial(withAuthPort);
    const { leftover } = await upstreamHandshake(channel, proxy(), ipv4(echoOrigin.port));
    expect(leftover.byteLength).toBe(0);
    expect(channel.readable.locked).toBe(false);
    expect(channel.writable.locked).toBe(false);
    await expectEcho(channel, "ping through microsocks");
    await expectEcho(channel, "and again");
  });

  it("sends a domain destination as ATYP 0x03, which the upstream resolves itself", async () => {
    const channel = await dial(withAuthPort);
    await upstreamHandshake(channel, proxy(), { type: AddressType.Domain, host: LOOPBACK, port: echoOrigin.port });
    await expectEcho(channel, "named destination");
  });

  it("opens a tunnel with no credentials through an upstream that asks for none", async () => {
    const channel = await dial(openPort);
    await upstreamHandshake(channel, proxy("", openPort), ipv4(echoOrigin.port));
    await expectEcho(channel, "no auth");
  });

  it("fails with GeneralFailure and a fixed message, never the password, when the password is wrong", async () => {
    const error = await handshakeFailure(await dial(withAuthPort), proxy(`${USER}:${WRONG_PASSWORD}@`), ipv4(echoOrigin.port));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${withAuthPort} refused the user name or password`);
    expect(error.message).not.toContain(WRONG_PASSWORD);
    expect(error.message).not.toContain(USER);
  });

  it("fails saying the upstream accepts none of the offered methods when it requires credentials and has none", async () => {
    const error = await handshakeFailure(await dial(withAuthPort), proxy(""), ipv4(echoOrigin.port));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${withAuthPort} accepts none of the offered methods (offered 0x00 no authentication)`);
  });

  it("fails the same way when it offers only username/password to an upstream without authentication", async () => {
    // microsocks without -u/-P selects only 0x00 (measured with 1.0.3): credentials are not a fallback to none.
    const error = await handshakeFailure(await dial(openPort), proxy(`${USER}:${PASSWORD}@`, openPort), ipv4(echoOrigin.port));
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${openPort} accepts none of the offered methods (offered 0x02 username/password)`);
  });

  it("reports ConnectionRefused when the destination refuses: microsocks answers 0x05", async () => {
    const error = await handshakeFailure(await dial(withAuthPort), proxy(), ipv4(refusingPort));
    expect(error.status).toBe(StreamStatus.ConnectionRefused);
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${withAuthPort} answered 0x05 (connection refused)`);
  });
});

// ---- tinyproxy ------------------------------------------------------------------------------------

describe("HTTP CONNECT through tinyproxy", () => {
  let tinyproxy: OwnedProcess;
  let proxyPort: number;
  let configDir: string;
  /** A port tinyproxy's ConnectPort list leaves out, so a CONNECT to it is forbidden. */
  let forbiddenPort: number;

  beforeAll(async () => {
    proxyPort = await unusedPort();
    forbiddenPort = await unusedPort();
    configDir = mkdtempSync(join(tmpdir(), "edgesocks-tinyproxy-"));
    const configPath = join(configDir, "tinyproxy.conf");
    // No LogFile and Syslog Off: with -d, tinyproxy logs to stdout, which spawnOwned drains.
    // ConnectPort lines allow only the listed ports; with none, tinyproxy allows every port.
    writeFileSync(
      configPath,
      [
        `Listen ${LOOPBACK}`,
        `Port ${proxyPort}`,
        "Timeout 30",
        "MaxClients 20",
        "Syslog Off",
        "LogLevel Warning",
        `Allow ${LOOPBACK}`,
        `BasicAuth ${USER} ${PASSWORD}`,
        `ConnectPort ${echoOrigin.port}`,
        `ConnectPort ${refusingPort}`,
        "",
      ].join("\n"),
    );
    tinyproxy = spawnOwned("tinyproxy", ["-d", "-c", configPath]);
    await awaitListening(tinyproxy, proxyPort);
  });
  afterAll(async () => {
    await tinyproxy?.stop();
    if (configDir) rmSync(configDir, { recursive: true, force: true });
  });

  const proxy = (userinfo = `${USER}:${PASSWORD}@`) => parseUpstreamUrl(`http://${userinfo}${LOOPBACK}:${proxyPort}`);

  it("opens a tunnel with the right credentials; bytes flow both ways and both locks are free again", async () => {
    const channel = await dial(proxyPort);
    const { leftover } = await upstreamHandshake(channel, proxy(), ipv4(echoOrigin.port));
    expect(leftover.byteLength).toBe(0);
    expect(channel.readable.locked).toBe(false);
    expect(channel.writable.locked).toBe(false);
    await expectEcho(channel, "ping through tinyproxy");
    await expectEcho(channel, "and again");
  });

  it("fails with GeneralFailure saying the credentials were refused, never the password, when the password is wrong", async () => {
    const error = await handshakeFailure(await dial(proxyPort), proxy(`${USER}:${WRONG_PASSWORD}@`), ipv4(echoOrigin.port));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    // tinyproxy 1.11.1 answers a wrong Proxy-Authorization with 401, and a missing one with 407.
    expect(error.message).toBe(`upstream http://127.0.0.1:${proxyPort} refused the credentials (401 Unauthorized)`);
    expect(error.message).not.toContain(WRONG_PASSWORD);
  });

  it("fails with GeneralFailure saying the upstream wants credentials when it has none", async () => {
    const error = await handshakeFailure(await dial(proxyPort), proxy(""), ipv4(echoOrigin.port));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream http://127.0.0.1:${proxyPort} wants credentials (407 Proxy Authentication Required)`);
  });

  it("reports GeneralFailure with tinyproxy's 500 when the destination refuses", async () => {
    const error = await handshakeFailure(await dial(proxyPort), proxy(), ipv4(refusingPort));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream http://127.0.0.1:${proxyPort} answered 500 Unable to connect`);
  });

  it("reports NotAllowed when the upstream forbids the port (403)", async () => {
    const error = await handshakeFailure(await dial(proxyPort), proxy(), ipv4(forbiddenPort));
    expect(error.status).toBe(StreamStatus.NotAllowed);
    expect(error.message).toBe(`upstream http://127.0.0.1:${proxyPort} answered 403 Access violation`);
  });
});

// ---- fake upstreams -----------------------------------------------------------------------------

/** A server-side connection read in exact pieces, so a fake upstream can follow a script. */
class ScriptedConnection {
  readonly socket: Socket;
  #buffered = Buffer.alloc(0);
  #waiting: (() => void) | undefined;
  #ended = false;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      this.#waiting?.();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#waiting?.();
    });
  }

  /** The next `byteCount` bytes the client sent. */
  async read(byteCount: number): Promise<Buffer> {
    return this.#until(() => (this.#buffered.byteLength >= byteCount ? byteCount : undefined));
  }

  /** Everything up to and including the first empty line: an HTTP request head. */
  async readHead(): Promise<string> {
    const head = await this.#until(() => {
      const end = this.#buffered.indexOf("\r\n\r\n");
      return end < 0 ? undefined : end + 4;
    });
    return head.toString("latin1");
  }

  async #until(length: () => number | undefined): Promise<Buffer> {
    for (;;) {
      const byteCount = length();
      if (byteCount !== undefined) {
        const piece = this.#buffered.subarray(0, byteCount);
        this.#buffered = this.#buffered.subarray(byteCount);
        return piece;
      }
      if (this.#ended) throw new Error("the client ended first");
      await new Promise<void>((resolve) => (this.#waiting = resolve));
    }
  }
}

/** Fake upstreams started by a test; afterEach closes them. */
const fakeUpstreams = new Set<OwnedServer>();
afterEach(async () => {
  await Promise.all(Array.from(fakeUpstreams, (server) => server.close()));
  fakeUpstreams.clear();
});

/** A fake upstream running `script` on each connection, and a channel dialed to it. */
async function fakeUpstream(script: (connection: ScriptedConnection) => Promise<void>): Promise<{ channel: ByteChannel; port: number }> {
  const server = await listen((socket) => {
    void script(new ScriptedConnection(socket)).catch(() => socket.destroy());
  });
  fakeUpstreams.add(server);
  return { channel: await dial(server.port), port: server.port };
}

const SOCKS_OK_REPLY = Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);

describe("SOCKS5 against fake upstreams", () => {
  const socksProxy = (port: number, userinfo = "") => parseUpstreamUrl(`socks5://${userinfo}${LOOPBACK}:${port}`);

  it("sends the greeting, RFC 1929 request and CONNECT request byte for byte, and returns exactly the bytes sent past the reply", async () => {
    const seen: number[][] = [];
    const early = Buffer.from("\x16\x03\x01 server speaks first");
    const { channel, port } = await fakeUpstream(async (connection) => {
      seen.push([...(await connection.read(3))]);
      connection.socket.write(Buffer.from([5, 2]));
      seen.push([...(await connection.read(3 + 5 + 2))]);
      connection.socket.write(Buffer.from([1, 0]));
      seen.push([...(await connection.read(10))]);
      connection.socket.write(Buffer.concat([SOCKS_OK_REPLY, early]));
    });
    const { leftover } = await upstreamHandshake(channel, socksProxy(port, "alice:pw@"), { type: AddressType.IPv4, host: "192.0.2.9", port: 443 });
    expect(Buffer.from(leftover).equals(early)).toBe(true);
    expect(seen).toEqual([
      [5, 1, 2],
      [1, 5, ...Buffer.from("alice"), 2, ...Buffer.from("pw")],
      [5, 1, 0, 1, 192, 0, 2, 9, 0x01, 0xbb],
    ]);
  });

  it("reassembles a reply that arrives one byte per write, with a domain bound address", async () => {
    const reply = Buffer.from([5, 0, 0, 3, 4, ...Buffer.from("host"), 0x04, 0x38]);
    const { channel, port } = await fakeUpstream(async (connection) => {
      connection.socket.setNoDelay(true);
      await connection.read(3);
      connection.socket.write(Buffer.from([5, 0]));
      await connection.read(10);
      for (const byte of reply) await new Promise<void>((resolve) => connection.socket.write(Buffer.of(byte), () => resolve()));
    });
    const { leftover } = await upstreamHandshake(channel, socksProxy(port), ipv4(443));
    expect(leftover.byteLength).toBe(0);
  });

  it("fails with GeneralFailure naming the version byte when the upstream answers garbage", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.read(3);
      connection.socket.write("SSH-2.0-OpenSSH_9.2\r\n");
    });
    const error = await handshakeFailure(channel, socksProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${port} did not answer as SOCKS5: version byte 0x53, not 0x05`);
  });

  it("fails with GeneralFailure when the upstream closes after the method selection", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.read(3);
      connection.socket.end(Buffer.from([5, 0]));
    });
    const error = await handshakeFailure(channel, socksProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${port} closed the connection during the handshake`);
  });

  it("fails with GeneralFailure when the upstream closes in the middle of its reply", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.read(3);
      connection.socket.write(Buffer.from([5, 0]));
      await connection.read(10);
      connection.socket.end(SOCKS_OK_REPLY.subarray(0, 6));
    });
    const error = await handshakeFailure(channel, socksProxy(port), ipv4(443));
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${port} closed the connection during the handshake`);
  });

  it("fails with GeneralFailure, keeping the socket error as the cause, when the upstream resets the connection", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.read(3);
      connection.socket.resetAndDestroy();
    });
    const error = await handshakeFailure(channel, socksProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${port} closed the connection during the handshake`);
    expect(error.cause).toBeInstanceOf(Error);
  });

  it("maps a failure reply to its status without waiting for the bound address", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.read(3);
      connection.socket.write(Buffer.from([5, 0]));
      await connection.read(10);
      connection.socket.write(Buffer.from([5, 0x04])); // and nothing more; the socket stays open
    });
    const error = await handshakeFailure(channel, socksProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.HostUnreachable);
    expect(error.message).toBe(`upstream socks5://127.0.0.1:${port} answered 0x04 (host unreachable)`);
  });
});

describe("HTTP CONNECT against fake upstreams", () => {
  const httpProxy = (port: number, userinfo = "") => parseUpstreamUrl(`http://${userinfo}${LOOPBACK}:${port}`);

  it("sends CONNECT with Host and Proxy-Authorization, and returns exactly the bytes sent past the head", async () => {
    let request = "";
    const { channel, port } = await fakeUpstream(async (connection) => {
      request = await connection.readHead();
      connection.socket.write("HTTP/1.1 200 Connection established\r\nContent-Length: 99\r\n\r\nserver bytes\r\n\r\nmore");
    });
    const { leftover } = await upstreamHandshake(channel, httpProxy(port, "alice:pw@"), { type: AddressType.IPv6, host: "2001:db8::7", port: 443 });
    expect(new TextDecoder().decode(leftover)).toBe("server bytes\r\n\r\nmore");
    expect(request).toBe(`CONNECT [2001:db8::7]:443 HTTP/1.1\r\nHost: [2001:db8::7]:443\r\nProxy-Authorization: Basic ${Buffer.from("alice:pw").toString("base64")}\r\n\r\n`);
  });

  it("skips an interim 100 response and opens on the 200 after it", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.readHead();
      connection.socket.write("HTTP/1.1 100 Continue\r\n\r\n");
      connection.socket.write("HTTP/1.1 200 OK\r\n\r\nX");
    });
    const { leftover } = await upstreamHandshake(channel, httpProxy(port), ipv4(443));
    expect(new TextDecoder().decode(leftover)).toBe("X");
  });

  it("fails on a non-2xx head without reading the body that follows it", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.readHead();
      // Promises a body it never finishes, and keeps the connection open.
      connection.socket.write("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 100000\r\n\r\n<html>");
    });
    const error = await handshakeFailure(channel, httpProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream http://127.0.0.1:${port} answered 502 Bad Gateway`);
  });

  it("reports Timeout for 504", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.readHead();
      connection.socket.write("HTTP/1.1 504 Gateway Timeout\r\n\r\n");
    });
    const error = await handshakeFailure(channel, httpProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.Timeout);
    expect(error.message).toBe(`upstream http://127.0.0.1:${port} answered 504 Gateway Timeout`);
  });

  it("fails with GeneralFailure when the answer is not HTTP", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.readHead();
      connection.socket.write(Buffer.from([5, 0xff]));
    });
    const error = await handshakeFailure(channel, httpProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream http://127.0.0.1:${port} did not answer as an HTTP proxy: its answer starts "??"`);
  });

  it("fails with GeneralFailure when the head grows past 16 KiB without ending", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.readHead();
      connection.socket.write(`HTTP/1.1 200 OK\r\nX-Pad: ${"a".repeat(20 * 1024)}`);
    });
    const error = await handshakeFailure(channel, httpProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream http://127.0.0.1:${port} sent a response head longer than 16384 bytes`);
  });

  it("counts interim heads against the same 16 KiB bound", async () => {
    const interim = `HTTP/1.1 100 Continue\r\nX-Pad: ${"a".repeat(1000)}\r\n\r\n`;
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.readHead();
      connection.socket.write(interim.repeat(17));
    });
    const error = await handshakeFailure(channel, httpProxy(port), ipv4(443));
    expect(error.message).toBe(`upstream http://127.0.0.1:${port} sent response heads (interim 1xx included) longer than 16384 bytes`);
  });

  it("fails with GeneralFailure when the upstream closes before its head ends", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.readHead();
      connection.socket.end("HTTP/1.1 200 Connection established\r\n");
    });
    const error = await handshakeFailure(channel, httpProxy(port), ipv4(443));
    expect(error.status).toBe(StreamStatus.GeneralFailure);
    expect(error.message).toBe(`upstream http://127.0.0.1:${port} closed the connection during the handshake`);
  });

  it("fails with GeneralFailure when the upstream closes without answering", async () => {
    const { channel, port } = await fakeUpstream(async (connection) => {
      await connection.readHead();
      connection.socket.end();
    });
    const error = await handshakeFailure(channel, httpProxy(port), ipv4(443));
    expect(error.message).toBe(`upstream http://127.0.0.1:${port} closed the connection during the handshake`);
  });
});
