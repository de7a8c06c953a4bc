// `edgesocks doctor` against real edges (wrangler dev), loopback only: a DoH stub as the edges'
// resolver, a TCP origin as --target, production's refusal of Cloudflare's addresses emulated
// for 127.0.0.2 (EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS), one edge with a TCP relay as its fallback
// for them and one without. The doctor runs as its own process, as a user runs it.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { createServer as createTlsServer } from "node:tls";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STUB_RECORDS } from "../dns/dns-message.ts";
import { DohStubPath, startDohStub, type DohStub } from "../dns/doh-stub.ts";
import { echo, startTcpOrigin, type Listening } from "./origins.ts";
import { freePort, repoRoot, startEdge, type RunningEdge } from "./processes.ts";

const EMULATED = "127.0.0.2";
/** On Cloudflare's network as the emulating edges see it, at a port Cloudflare proxies (so a relay may carry it). Nothing listens there: a relay carries it or nothing does. */
const CLOUDFLARE_TARGET = `${EMULATED}:443`;
/** Longest a doctor run may take here: every check on loopback answers in milliseconds. */
const DOCTOR_RUN_TIMEOUT_MS = 60_000;

/** The doctor's home: empty, so no config file of this machine's user is read. */
const home = mkdtempSync(join(tmpdir(), "edgesocks-e2e-doctor-"));
afterAll(() => rmSync(home, { recursive: true, force: true }));

type DoctorRun = { status: number | null; stdout: string; stderr: string };

/** Runs `edgesocks doctor ARGS` with the token in its environment; the process is killed if it outlives DOCTOR_RUN_TIMEOUT_MS. */
function runDoctor(args: string[], token: string | undefined, extraEnv: Record<string, string> = {}): Promise<DoctorRun> {
  const child = spawn(process.execPath, [join(repoRoot, "local-agent", "cli", "main.ts"), "doctor", ...args], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH ?? "", HOME: home, XDG_CONFIG_HOME: home, ...extraEnv, ...(token === undefined ? {} : { EDGESOCKS_TOKEN: token }) },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), DOCTOR_RUN_TIMEOUT_MS);
  return new Promise((resolve) => {
    child.once("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The table rows of the edge headed `heading` (the lines after it up to the blank line), by check name. */
function rowsOf(stdout: string, heading: string): Map<string, { result: string; detail: string; fix?: string }> {
  const lines = stdout.split("\n");
  const start = lines.indexOf(heading);
  expect(start, `no heading "${heading}" in:\n${stdout}`).toBeGreaterThanOrEqual(0);
  const rows = new Map<string, { result: string; detail: string; fix?: string }>();
  let last: { result: string; detail: string; fix?: string } | undefined;
  for (const line of lines.slice(start + 2)) {
    if (line === "") break;
    const fix = /^\s+fix: (.*)$/.exec(line);
    if (fix && last) {
      last.fix = fix[1];
      continue;
    }
    const match = /^ {2}(.+?)\s{2,}(pass|warn|FAIL|skip)\s+(.*)$/.exec(line);
    expect(match, `not a table row: ${line}`).not.toBeNull();
    last = { result: match?.[2] ?? "", detail: match?.[3] ?? "" };
    rows.set(match?.[1] ?? "", last);
  }
  return rows;
}

const ROW_NAMES = ["name resolves", "TCP connect", "TLS handshake", "healthz/protocol", "token accepted", "test stream", "DNS over edge", "Cloudflare-hosted", "clock"];

/** A loopback port where nothing listens: bound by the kernel's choice, then released. */
const closedPort = freePort;

/**
 * An HTTP front for `edge` that stamps every answer with a Date `skewMs` off this machine's
 * clock, as Cloudflare's edge dates every answer (wrangler dev sends none). WebSocket upgrades
 * pass through as bytes, so every check works through it.
 */
async function startDatingFront(edge: RunningEdge, skewMs: number): Promise<{ url: string; close(): Promise<void> }> {
  const edgePort = Number(new URL(edge.url).port);
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("error", () => socket.destroy());
    socket.on("close", () => sockets.delete(socket));
  };
  const front = createHttpServer((request, response) => {
    const upstream = httpRequest({ host: "127.0.0.1", port: edgePort, method: request.method, path: request.url, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, { ...answer.headers, date: new Date(Date.now() + skewMs).toUTCString() });
      answer.pipe(response);
    });
    upstream.on("error", () => response.destroy());
    request.pipe(upstream);
  });
  front.on("connection", track);
  front.on("upgrade", (request, client: Socket, head: Buffer) => {
    const upstream = netConnect(edgePort, "127.0.0.1");
    track(upstream);
    const lines = [`${request.method} ${request.url} HTTP/1.1`];
    for (let index = 0; index < request.rawHeaders.length; index += 2) lines.push(`${request.rawHeaders[index]}: ${request.rawHeaders[index + 1]}`);
    upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
    upstream.write(head);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(front.address() as { port: number }).port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
}

/**
 * A TLS front for `edge` on localhost with a self-signed certificate made now (no key lives in
 * the repository): an https:// edge, as a deployed Worker is, whose CA the doctor is given
 * with NODE_EXTRA_CA_CERTS, or not.
 */
async function startTlsFront(edge: RunningEdge): Promise<{ url: string; caFile: string; close(): Promise<void> }> {
  const caFile = join(home, "front-cert.pem");
  const keyFile = join(home, "front-key.pem");
  const openssl = spawnSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", caFile, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]);
  if (openssl.status !== 0) throw new Error(`openssl failed: ${openssl.stderr.toString()}`);
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("error", () => socket.destroy());
    socket.on("close", () => sockets.delete(socket));
  };
  const front = createTlsServer({ key: readFileSync(keyFile), cert: readFileSync(caFile) }, (client) => {
    const upstream = netConnect(Number(new URL(edge.url).port), "127.0.0.1");
    track(client);
    track(upstream);
    client.pipe(upstream).pipe(client);
  });
  front.on("connection", track);
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
  return {
    url: `https://localhost:${(front.address() as { port: number }).port}`,
    caFile,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
}

let stub: DohStub;
let target: Listening<Server>;
/** The fallback edge's relay for "Cloudflare-hosted" destinations: accepts, counts, closes. */
let relay: Listening<Server>;
let relayConnections = 0;
/** Emulated Cloudflare with a relay as its fallback: every check passes against it. */
let fallbackEdge: RunningEdge;
/** Emulated Cloudflare and no fallback at the edge. */
let bareEdge: RunningEdge;

beforeAll(async () => {
  // localhost as /etc/hosts has it: the --target the edge dials by name, and the name the DNS row asks for.
  stub = await startDohStub({ ...STUB_RECORDS, localhost: { a: ["127.0.0.1"] } });
  target = await startTcpOrigin(echo);
  relay = await startTcpOrigin((socket: Socket) => {
    relayConnections++;
    socket.end();
  });
  const emulated = { EDGESOCKS_DOH_URL: stub.url(DohStubPath.Answer), EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: `${EMULATED}/32` };
  fallbackEdge = await startEdge({ ...emulated, EDGESOCKS_CLOUDFLARE_RELAY: `127.0.0.1:${relay.port}` });
  bareEdge = await startEdge(emulated);
});
afterAll(async () => {
  await fallbackEdge?.stop();
  await bareEdge?.stop();
  await relay?.close();
  await target?.close();
  await stub?.close();
});

/** The fallback edge by name (`localhost`), as the name-resolution check needs one. */
function byName(edge: RunningEdge): string {
  return edge.url.replace("127.0.0.1", "localhost");
}

function targets(): string[] {
  return ["--target", `localhost:${target.port}`, "--cloudflare-target", CLOUDFLARE_TARGET];
}

describe("edgesocks doctor", () => {
  it("passes every check against a working edge, prints the table and exits 0", async () => {
    const relayedBefore = relayConnections;
    const run = await runDoctor(["--edge", byName(fallbackEdge), ...targets()], fallbackEdge.token);
    expect(run.stderr).toBe("");
    const rows = rowsOf(run.stdout, `edge ${byName(fallbackEdge)}`);
    expect([...rows.keys()]).toEqual(ROW_NAMES);
    // TLS: an http:// edge has none; clock: wrangler dev sends no Date header (Cloudflare's edge does).
    for (const [name, row] of rows) expect({ name, ...row }).toMatchObject({ name, result: name === "TLS handshake" || name === "clock" ? "skip" : "pass" });
    expect(rows.get("name resolves")?.detail).toBe("localhost: 127.0.0.1");
    expect(rows.get("healthz/protocol")?.detail).toMatch(/^edgesocks \S+, protocol 4 /);
    expect(rows.get("test stream")?.detail).toMatch(new RegExp(`^the edge opened localhost:${target.port} in \\d+ ms \\(protocol v4\\)$`));
    expect(rows.get("DNS over edge")?.detail).toMatch(/^localhost: 127\.0\.0\.1 /);
    expect(rows.get("Cloudflare-hosted")?.detail).toContain(`the edge opened ${CLOUDFLARE_TARGET}`);
    // The Cloudflare-hosted stream went through the edge's fallback, not to 127.0.0.2.
    expect(relayConnections).toBeGreaterThan(relayedBefore);
    expect(stub.queriesFor("localhost")).toBeGreaterThan(0);
    expect(run.stdout).toMatch(/\nedgesocks doctor: no check failed on 1 edge \(7 passed, 0 warnings, 0 failed, 2 skipped\)\n$/);
    expect(run.stdout).not.toContain(fallbackEdge.token);
    expect(run.status).toBe(0);
  });

  it("fails the token row with its fix for a wrong token, skips what needs the token, and exits 1", async () => {
    const wrongToken = "doctor-wrong-token-0123456789";
    const run = await runDoctor(["--edge", fallbackEdge.url, ...targets()], wrongToken);
    const rows = rowsOf(run.stdout, `edge ${fallbackEdge.url}`);
    expect(rows.get("healthz/protocol")?.result).toBe("pass");
    expect(rows.get("token accepted")).toEqual({
      result: "FAIL",
      detail: "the edge refused the token (HTTP 401 wrong token)",
      fix: "set EDGESOCKS_TOKEN or --token-file to one of the Worker's tokens (npx wrangler secret put EDGESOCKS_TOKEN sets them)",
    });
    for (const name of ["test stream", "DNS over edge", "Cloudflare-hosted"]) expect(rows.get(name)).toEqual({ result: "skip", detail: "needs an accepted token" });
    expect(rows.get("clock")?.result).toBe("skip");
    expect(`${run.stdout}${run.stderr}`).not.toContain(wrongToken);
    expect(run.status).toBe(1);
  });

  it("fails the TCP row of an edge that is down, skips every later row, and exits 1", async () => {
    const down = `http://127.0.0.1:${await closedPort()}`;
    const run = await runDoctor(["--edge", down, ...targets()], fallbackEdge.token);
    const rows = rowsOf(run.stdout, `edge ${down}`);
    expect(rows.get("name resolves")).toEqual({ result: "pass", detail: "127.0.0.1 (an IP literal, nothing to resolve)" });
    expect(rows.get("TCP connect")?.result).toBe("FAIL");
    expect(rows.get("TCP connect")?.detail).toMatch(/refused the connection/);
    expect(rows.get("TCP connect")?.fix).toBe("start the edge (npm start runs a local one) or correct the port in --edge");
    for (const name of ROW_NAMES.slice(2)) expect(rows.get(name)).toEqual({ result: "skip", detail: "needs a TCP connection to the edge" });
    expect(run.status).toBe(1);
  });

  it("warns on the Cloudflare-hosted row with its fix when the edge has no fallback, and exits 0", async () => {
    const run = await runDoctor(["--edge", bareEdge.url, ...targets()], bareEdge.token);
    const rows = rowsOf(run.stdout, `edge ${bareEdge.url}`);
    expect(rows.get("Cloudflare-hosted")).toEqual({
      result: "warn",
      detail: `sites hosted on Cloudflare will be refused: ${CLOUDFLARE_TARGET} is on Cloudflare's network and no fallback at the edge applies`,
      fix: `configure a fallback at the Worker (README: "Sites hosted on Cloudflare") or run the agent with --on-cloudflare direct`,
    });
    expect(rows.get("test stream")?.result).toBe("pass");
    expect(run.stdout).toMatch(/no check failed on 1 edge \(6 passed, 1 warning, 0 failed, 2 skipped\)/);
    expect(run.status).toBe(0);

    // With --on-cloudflare direct the agent opens such sites itself: nothing to warn of.
    const direct = await runDoctor(["--edge", bareEdge.url, "--on-cloudflare", "direct", ...targets()], bareEdge.token);
    expect(rowsOf(direct.stdout, `edge ${bareEdge.url}`).get("Cloudflare-hosted")?.result).toBe("pass");
    expect(direct.status).toBe(0);
  });

  it("reports two edges in the order given when the first is down, and exits 1", async () => {
    const down = `http://127.0.0.1:${await closedPort()}`;
    const run = await runDoctor(["--edge", down, "--edge", fallbackEdge.url, ...targets()], fallbackEdge.token);
    const first = run.stdout.indexOf(`edge 1 of 2: ${down}\n`);
    const second = run.stdout.indexOf(`edge 2 of 2: ${fallbackEdge.url}\n`);
    expect(first).toBeGreaterThanOrEqual(0);
    expect(second).toBeGreaterThan(first);
    expect(rowsOf(run.stdout, `edge 1 of 2: ${down}`).get("TCP connect")?.result).toBe("FAIL");
    const working = rowsOf(run.stdout, `edge 2 of 2: ${fallbackEdge.url}`);
    expect([...working.entries()].filter(([, row]) => row.result !== "pass").map(([name]) => name)).toEqual(["TLS handshake", "clock"]);
    expect(run.stdout).toContain(`edgesocks doctor: checks failed on 1 of 2 edges: ${down} (`);
    expect(run.status).toBe(1);
  });

  it("fails the test stream when the target refuses, and still checks DNS and Cloudflare-hosted", async () => {
    const refusing = await closedPort();
    const run = await runDoctor(["--edge", fallbackEdge.url, "--target", `127.0.0.1:${refusing}`, "--cloudflare-target", CLOUDFLARE_TARGET], fallbackEdge.token);
    const rows = rowsOf(run.stdout, `edge ${fallbackEdge.url}`);
    expect(rows.get("test stream")?.result).toBe("FAIL");
    expect(rows.get("test stream")?.detail).toMatch(new RegExp(`^the edge could not open 127\\.0\\.0\\.1:${refusing} \\(connection refused`));
    expect(rows.get("test stream")?.fix).toBe("the edge works but could not reach the target: check --target, or try another");
    // An IP literal as --target: the DNS row asks for a fixed name, which the stub does not know.
    expect(rows.get("DNS over edge")).toMatchObject({ result: "pass", detail: expect.stringMatching(/^example\.com does not exist \(NXDOMAIN/) });
    expect(rows.get("Cloudflare-hosted")?.result).toBe("pass");
    expect(run.status).toBe(1);
  });

  it("compares the clock with the edge's Date: passes in step, fails 10 minutes off with the fix", async () => {
    const inStep = await startDatingFront(fallbackEdge, 0);
    const tenMinutesAhead = await startDatingFront(fallbackEdge, 10 * 60_000);
    try {
      const good = await runDoctor(["--edge", inStep.url, ...targets()], fallbackEdge.token);
      expect(rowsOf(good.stdout, `edge ${inStep.url}`).get("clock")).toEqual({ result: "pass", detail: expect.stringMatching(/^within \d\.\d s of the edge's clock$/) });
      expect(good.status).toBe(0);
      const off = await runDoctor(["--edge", tenMinutesAhead.url, ...targets()], fallbackEdge.token);
      const rows = rowsOf(off.stdout, `edge ${tenMinutesAhead.url}`);
      // The edge's clock is ahead, so this machine's is behind it.
      expect(rows.get("clock")).toEqual({
        result: "FAIL",
        detail: expect.stringMatching(/^this machine's clock is (599|600) s behind the edge's clock \(more than 300 s\)$/),
        fix: "set this machine's clock from the network (timedatectl set-ntp true, or the system's date and time settings)",
      });
      expect([...rows.entries()].filter(([, row]) => row.result === "FAIL").map(([name]) => name)).toEqual(["clock"]);
      expect(off.status).toBe(1);
    } finally {
      await inStep.close();
      await tenMinutesAhead.close();
    }
  });

  it("gives up on an edge that accepts TCP and never answers, within the check's timeout", async () => {
    const held = new Set<Socket>();
    const silent = createServer((socket) => {
      held.add(socket);
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const edge = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
      const startedMs = Date.now();
      const run = await runDoctor(["--edge", edge, ...targets()], fallbackEdge.token);
      const rows = rowsOf(run.stdout, `edge ${edge}`);
      expect(rows.get("TCP connect")?.result).toBe("pass");
      expect(rows.get("healthz/protocol")).toEqual({
        result: "FAIL",
        detail: `GET ${edge}/healthz: no answer within 5000 ms`,
        fix: "the edge takes TCP connections but does not answer HTTP: check the scheme and port in --edge",
      });
      for (const name of ["token accepted", "test stream", "DNS over edge", "Cloudflare-hosted"]) expect(rows.get(name)?.detail).toBe("needs /healthz to answer as edgesocks");
      expect(rows.get("clock")).toEqual({ result: "skip", detail: "needs an HTTP answer from the edge" });
      expect(run.status).toBe(1);
      // One check's 5 s timeout and the process's start: no check waited on the silence twice.
      expect(Date.now() - startedMs).toBeLessThan(15_000);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it("checks an https:// edge over TLS: passes with the CA trusted, and names interception when it is not", async () => {
    const front = await startTlsFront(fallbackEdge);
    try {
      const trusted = await runDoctor(["--edge", front.url, ...targets()], fallbackEdge.token, { NODE_EXTRA_CA_CERTS: front.caFile });
      const rows = rowsOf(trusted.stdout, `edge ${front.url}`);
      expect(rows.get("TLS handshake")).toEqual({ result: "pass", detail: expect.stringMatching(/^TLSv1\.3 in \d+ ms, certificate valid until \d{4}-\d\d-\d\d$/) });
      // Every check over TLS, the tunnels as wss://.
      expect([...rows.entries()].filter(([, row]) => row.result !== "pass").map(([name]) => name)).toEqual(["clock"]);
      expect(trusted.status).toBe(0);

      const untrusted = await runDoctor(["--edge", front.url, ...targets()], fallbackEdge.token);
      const refused = rowsOf(untrusted.stdout, `edge ${front.url}`).get("TLS handshake");
      expect(refused).toEqual({
        result: "FAIL",
        detail: expect.stringMatching(/\(DEPTH_ZERO_SELF_SIGNED_CERT\)$/),
        fix: "something on this network intercepts TLS (a company proxy, antivirus): use another network, or give Node its CA with NODE_EXTRA_CA_CERTS",
      });
      expect(untrusted.status).toBe(1);
    } finally {
      await front.close();
    }
  });

  it("fails the TLS row of an https:// edge whose port does not speak TLS", async () => {
    // A plain TCP server that answers with text, as a local edge would to a TLS ClientHello.
    const sockets = new Set<Socket>();
    const plain = createServer((socket) => {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
      socket.end("HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    await new Promise<void>((resolve) => plain.listen(0, "127.0.0.1", resolve));
    try {
      const edge = `https://127.0.0.1:${(plain.address() as { port: number }).port}`;
      const run = await runDoctor(["--edge", edge, ...targets()], fallbackEdge.token);
      const rows = rowsOf(run.stdout, `edge ${edge}`);
      expect(rows.get("TCP connect")?.result).toBe("pass");
      expect(rows.get("TLS handshake")?.result).toBe("FAIL");
      expect(rows.get("TLS handshake")?.fix).toBe("the port does not speak TLS: a local edge (wrangler dev) is http://, a deployed Worker https://");
      for (const name of ROW_NAMES.slice(3)) expect(rows.get(name)?.result).toBe("skip");
      expect(run.status).toBe(1);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => plain.close(() => resolve()));
    }
  });

  it.each([
    [["--edge", "http://127.0.0.1:1", "--target", "nope"], /^edgesocks doctor: --target "nope" names no port; expected HOST:PORT, e\.g\. example\.com:443$/],
    [["--edge", "http://127.0.0.1:1", "--targte", "x:1"], /^edgesocks doctor: unknown option --targte \(did you mean --target\?\); see edgesocks doctor --help$/],
    [["--target", "localhost:1"], /^edgesocks doctor: --edge URL is required\b/],
  ])("exits 2 with one line for a bad command line: %j", async (args, message) => {
    const run = await runDoctor(args, "doctor-usage-token-0123456789");
    expect(run.stderr.split("\n")).toHaveLength(2);
    expect(run.stderr.trimEnd()).toMatch(message);
    expect(run.stdout).toBe("");
    expect(run.status).toBe(2);
  });

  it("exits 2 naming the token's sources when there is no token", async () => {
    const run = await runDoctor(["--edge", fallbackEdge.url], undefined);
    expect(run.stderr).toBe("edgesocks doctor: no token: set EDGESOCKS_TOKEN in the environment or pass --token-file PATH\n");
    expect(run.status).toBe(2);
  });
});
