// The agent as an HTTP proxy (curl -x http://...): forwarded http:// requests with keep-alive and
// chunked bodies, CONNECT to a TLS origin, proxy authentication, and each refusal's status.

import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHttpOrigin, startTcpOrigin, type HttpOrigin } from "./origins.ts";
import { freePort, startAgent, type RunningAgent } from "./processes.ts";
import { runCurl, type CurlRun } from "./curl-run.ts";

const MIB = 1024 * 1024;

/** curl with a 60 s limit: these tests move several MiB. */
function curl(args: string[]): Promise<CurlRun> {
  return runCurl(args, 60);
}

/** Sends `request` on a raw TCP connection to the agent; resolves with everything before the agent closes. */
function rawExchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.setTimeout(15_000, () => socket.destroy(new Error("the agent did not close the connection")));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("latin1")));
    socket.write(request);
  });
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** Waits until the agent's log after `offset` (characters) has a line matching each pattern; resolves with those lines. */
async function logLinesSince(running: RunningAgent, offset: number, patterns: RegExp[], timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lines = running.log().slice(offset).split("\n");
    const found = patterns.map((pattern) => lines.find((line) => pattern.test(line)));
    if (found.every((line) => line !== undefined)) return found as string[];
    if (Date.now() > deadline) throw new Error(`agent log lacks ${patterns.join(", ")}:\n${running.log().slice(offset)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

let agent: RunningAgent;
let authAgent: RunningAgent;
let origin: HttpOrigin;
let tlsOrigin: HttpsServer;
let tlsPort: number;
let blockedPort: number;
let dir: string;
let caFile: string;
const PASSWORD = "looking-glass-7";

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "edgesocks-http-proxy-"));
  // A self-signed certificate for 127.0.0.1, made now so no key lives in the repository.
  caFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  const openssl = spawnSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", caFile, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]);
  if (openssl.status !== 0) throw new Error(`openssl failed: ${openssl.stderr.toString()}`);
  tlsOrigin = createHttpsServer({ key: readFileSync(keyFile), cert: readFileSync(caFile) }, (request, response) => {
    response.writeHead(200, { "Content-Type": "text/plain" });
    response.end(`tls origin saw ${request.method} ${request.url}\n`);
  });
  await new Promise<void>((resolve) => tlsOrigin.listen(0, "127.0.0.1", resolve));
  tlsPort = (tlsOrigin.address() as { port: number }).port;
  origin = await startHttpOrigin();
  blockedPort = await freePort();
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--rule", `block:port=${blockedPort}`]);
  authAgent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--user", `alice:${PASSWORD}`, "--handshake-timeout-ms", "1000"]);
});
afterAll(async () => {
  await agent?.stop();
  await authAgent?.stop();
  await origin?.close();
  tlsOrigin?.closeAllConnections();
  await new Promise<void>((resolve) => (tlsOrigin ? tlsOrigin.close(() => resolve()) : resolve()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("curl -x http:// through agent and edge", () => {
  it("forwards a GET and streams 8 MiB back with the SHA-256 the origin sent", async () => {
    const result = await curl(["-x", `http://127.0.0.1:${agent.port}`, `http://127.0.0.1:${origin.port}/blob?bytes=${8 * MIB}&id=http-down`]);
    expect(result.stderr).toBe("");
    expect(result.exitCode).toBe(0);
    expect(result.stdout.byteLength).toBe(8 * MIB);
    expect(sha256(result.stdout)).toBe(origin.sentHashes.get("http-down"));
    await agent.waitForLog(new RegExp(`HTTP GET -> 127\\.0\\.0\\.1:${origin.port} via edge up=\\S+ down=8\\.0MiB .* ok$`));
  });

  it("forwards a POST with a chunked body that the origin receives whole", async () => {
    const body = randomBytes(3 * MIB + 17);
    const file = join(dir, "chunked.bin");
    writeFileSync(file, body);
    const result = await curl(["-x", `http://127.0.0.1:${agent.port}`, "-H", "Transfer-Encoding: chunked", "--data-binary", `@${file}`, `http://127.0.0.1:${origin.port}/upload?id=http-chunked`]);
    expect(result.exitCode).toBe(0);
    const expected = { bytes: body.byteLength, sha256: sha256(body) };
    expect(JSON.parse(result.stdout.toString())).toEqual(expected);
    expect(origin.received.get("http-chunked")).toEqual(expected);
    await agent.waitForLog(new RegExp(`HTTP POST -> 127\\.0\\.0\\.1:${origin.port} via edge .* ok$`));
  });

  it("keeps the client connection alive across requests to different hosts", async () => {
    const logOffset = agent.log().length;
    const result = await curl([
      "-x",
      `http://127.0.0.1:${agent.port}`,
      "-w",
      "[connects=%{num_connects}]",
      `http://127.0.0.1:${origin.port}/data.json`,
      `http://localhost:${origin.port}/data.json`,
    ]);
    expect(result.exitCode).toBe(0);
    // curl connects once, then reuses that connection to the proxy for the second URL.
    expect(result.stdout.toString()).toBe('{"answer":42}[connects=1]{"answer":42}[connects=0]');
    const [first = "", second = ""] = await logLinesSince(agent, logOffset, [
      new RegExp(`HTTP GET -> 127\\.0\\.0\\.1:${origin.port} via edge .* ok$`),
      new RegExp(`HTTP GET -> localhost:${origin.port} via edge .* ok$`),
    ]);
    const clientOf = (line: string) => /(\S+) HTTP GET/.exec(line)?.[1];
    expect(clientOf(second)).toBe(clientOf(first));
  });

  it("tunnels https:// with CONNECT to a TLS origin, certificate checked end to end", async () => {
    const result = await curl(["-x", `http://127.0.0.1:${agent.port}`, "--cacert", caFile, "-w", "[connect=%{http_connect}]", `https://127.0.0.1:${tlsPort}/secret?q=1`]);
    expect(result.stderr).toBe("");
    expect(result.exitCode).toBe(0);
    expect(result.stdout.toString()).toBe("tls origin saw GET /secret?q=1\n[connect=200]");
    await agent.waitForLog(new RegExp(`HTTP CONNECT -> 127\\.0\\.0\\.1:${tlsPort} via edge .* ok$`));
  });

  it("answers 403 for a destination a block rule names, plain and CONNECT, without opening it", async () => {
    const plain = await curl(["-x", `http://127.0.0.1:${agent.port}`, "-w", "[%{http_code}]", `http://127.0.0.1:${blockedPort}/`]);
    expect(plain.stdout.toString()).toMatch(/^not allowed: blocked by rule block:port=\d+\n\[403\]$/);
    const tunnel = await curl(["-x", `http://127.0.0.1:${agent.port}`, "-w", "[%{http_connect}]", `https://127.0.0.1:${blockedPort}/`]);
    expect(tunnel.exitCode).toBe(56); // CURLE_RECV_ERROR: the proxy refused the CONNECT
    expect(tunnel.stdout.toString()).toBe("[403]");
    await agent.waitForLog(new RegExp(`HTTP CONNECT -> 127\\.0\\.0\\.1:${blockedPort} block: blocked by rule`));
  });

  it("answers 502 for a refused port, plain and CONNECT", async () => {
    const closedPort = await freePort();
    const plain = await curl(["-x", `http://127.0.0.1:${agent.port}`, "-w", "[%{http_code}]", `http://127.0.0.1:${closedPort}/`]);
    expect(plain.stdout.toString()).toMatch(/^connection refused: .*\n\[502\]$/);
    const tunnel = await curl(["-x", `http://127.0.0.1:${agent.port}`, "-w", "[%{http_connect}]", `https://127.0.0.1:${closedPort}/`]);
    expect(tunnel.stdout.toString()).toBe("[502]");
    await agent.waitForLog(new RegExp(`HTTP GET -> 127\\.0\\.0\\.1:${closedPort} via edge .*connection refused`));
  });

  it("resets the client when the origin ends short of its Content-Length, so the truncation shows", async () => {
    const truncating = await startTcpOrigin((socket) => {
      socket.once("data", () => {
        socket.end(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${"x".repeat(1000)}`);
      });
    });
    try {
      const result = await curl(["-x", `http://127.0.0.1:${agent.port}`, `http://127.0.0.1:${truncating.port}/`]);
      // CURLE_RECV_ERROR: the agent passes the cut on as a TCP reset, never a clean end (before,
      // a FIN: curl's 18 relied on the Content-Length, which an HTTP/1.0 client does not get).
      expect(result.exitCode).toBe(56);
      expect(result.stderr).toMatch(/reset/i);
      expect(result.stdout.byteLength).toBe(1000);
    } finally {
      await truncating.close();
    }
  });

  it("answers 400 and closes for a request that is not HTTP", async () => {
    const answer = await rawExchange(agent.port, "GARBAGE / HTTP/1.1\r\n\r\n");
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(answer).toContain("Connection: close\r\n");
    expect(answer).toMatch(/\r\n\r\nmalformed HTTP request \(HPE_INVALID_METHOD\)\n$/);
  });

  it("answers 400 for an https:// absolute URI (HTTPS must use CONNECT)", async () => {
    const answer = await rawExchange(agent.port, `GET https://127.0.0.1:${tlsPort}/ HTTP/1.1\r\nHost: 127.0.0.1:${tlsPort}\r\nConnection: close\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(answer).toMatch(/\r\n\r\nhttps:\/\/ URLs go through CONNECT: configure this proxy for HTTPS too\n$/);
  });

  it("answers 400 for an origin-form request other than /proxy.pac (the agent is no web server)", async () => {
    const answer = await rawExchange(agent.port, "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*\r\n\r\nthis is a proxy: it serves \/proxy\.pac, CONNECT, and absolute http:\/\/ URLs\n$/);
  });

  it("answers 400 for a CONNECT target without a port", async () => {
    const answer = await rawExchange(agent.port, "CONNECT 127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*names no port\n$/);
  });
});

describe("request head deadline (--handshake-timeout-ms)", () => {
  it("answers 408 and closes when the request head does not arrive in time", async () => {
    const startedAtMs = Date.now();
    const answer = await rawExchange(authAgent.port, `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n[\s\S]*request head not received within 1000 ms\n$/);
    expect(Date.now() - startedAtMs).toBeGreaterThanOrEqual(1000);
  });
});

describe("proxy authentication (--user)", () => {
  const proxy = () => `http://127.0.0.1:${authAgent.port}`;

  it("answers 407 with a Basic challenge when credentials are missing", async () => {
    const result = await curl(["-x", proxy(), "-D", "-", "-o", "/dev/null", `http://127.0.0.1:${origin.port}/data.json`]);
    const head = result.stdout.toString();
    expect(head).toMatch(/^HTTP\/1\.1 407 Proxy Authentication Required\r\n/);
    expect(head).toContain('Proxy-Authenticate: Basic realm="edgesocks"\r\n');
  });

  it("answers 407 for a wrong password, plain and CONNECT", async () => {
    const plain = await curl(["-x", proxy(), "--proxy-user", "alice:not-the-password-93", "-w", "[%{http_code}]", "-o", "/dev/null", `http://127.0.0.1:${origin.port}/data.json`]);
    expect(plain.stdout.toString()).toBe("[407]");
    const tunnel = await curl(["-x", proxy(), "--proxy-user", "alice:not-the-password-93", "--cacert", caFile, "-w", "[%{http_connect}]", `https://127.0.0.1:${tlsPort}/`]);
    expect(tunnel.stdout.toString()).toBe("[407]");
    await authAgent.waitForLog(/HTTP CONNECT refused 407/);
    // The password never reaches the log, nor does the header carrying it.
    expect(authAgent.log()).not.toContain("not-the-password-93");
    expect(authAgent.log()).not.toMatch(/Basic [A-Za-z0-9+/=]{8,}/);
  });

  it("serves the right user, plain and CONNECT", async () => {
    const plain = await curl(["-x", proxy(), "--proxy-user", `alice:${PASSWORD}`, `http://127.0.0.1:${origin.port}/data.json`]);
    expect(plain.stdout.toString()).toBe('{"answer":42}');
    const tunnel = await curl(["-x", proxy(), "--proxy-user", `alice:${PASSWORD}`, "--cacert", caFile, `https://127.0.0.1:${tlsPort}/ok`]);
    expect(tunnel.stdout.toString()).toBe("tls origin saw GET /ok\n");
    expect(authAgent.log()).not.toContain(PASSWORD);
  });

  it("serves /proxy.pac without credentials, offering the HTTP proxy first (browsers answer 407, not a SOCKS5 password)", async () => {
    const result = await curl(["-w", "[%{http_code}]", `${proxy()}/proxy.pac`]);
    const address = `127.0.0.1:${authAgent.port}`;
    expect(result.stdout.toString()).toContain(`return "PROXY ${address}; SOCKS5 ${address}";`);
    expect(result.stdout.toString()).toMatch(/\[200\]$/);
  });

  it("does not forward the Proxy-Authorization header to the origin", async () => {
    const echo = await startHttpOrigin();
    const headersSeen: string[] = [];
    echo.server.prependListener("request", (request) => headersSeen.push(...Object.keys(request.headers)));
    try {
      const result = await curl(["-x", proxy(), "--proxy-user", `alice:${PASSWORD}`, "-H", "Connection: keep-alive, X-Hop", "-H", "X-Hop: 1", "-H", "X-Kept: 2", `http://127.0.0.1:${echo.port}/data.json`]);
      expect(result.exitCode).toBe(0);
      expect(headersSeen).toContain("x-kept");
      expect(headersSeen).not.toContain("proxy-authorization");
      expect(headersSeen).not.toContain("x-hop");
      expect(headersSeen).not.toContain("proxy-connection");
    } finally {
      await echo.close();
    }
  });
});
