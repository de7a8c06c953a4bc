// Sites hosted on Cloudflare, end to end: the real Worker under wrangler dev with production's
// refusal emulated for 127.0.0.2 (EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS), a DoH stub that maps
// CLOUDFLARE_HOSTED_NAME there, the real agent, curl as the client, and real upstreams
// (microsocks, tinyproxy) and a TCP relay as the fallbacks. Loopback only.
//
// NAT64 runs under the prefix ::ffff:0:0/96: the edge dials [::ffff:127.0.0.2], an IPv4-mapped
// address local workerd reaches over loopback and the emulation does not count as 127.0.0.2
// (docs/protocol.md §11), so a page that loads under NAT64 alone came through NAT64.

import { createServer, connect as netConnect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOUDFLARE_PROXIED_PORTS } from "../../worker/dial/relay.ts";
import { CLOUDFLARE_HOSTED_NAME, STUB_RECORDS } from "../dns/dns-message.ts";
import { DohStubPath, startDohStub, type DohStub } from "../dns/doh-stub.ts";
import { startMicrosocks, startTinyproxy, type RunningProxy } from "../upstreams/proxies.ts";
import { runCurl } from "./curl-run.ts";
import { exchange } from "./raw-socket.ts";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";

const EMULATED = "127.0.0.2";
const USER = "edgeuser";
const PASSWORD = "edge-upstream-secret";
/** A second Cloudflare-hosted name, asked by one test only, so the resolver's count of it is that test's own. */
const REMEMBERED_NAME = "cf-remembered.edgesocks.test";
/** The NAT64 prefix whose addresses are IPv4-mapped: prefix + 127.0.0.2 is loopback. */
const MAPPED_NAT64_PREFIX = "::ffff:0:0/96";

let stub: DohStub;
/** The "Cloudflare-hosted" origin: bound on the emulated address, at a port Cloudflare proxies (for the relay). */
let origin: HttpOrigin;

/** Vars of an edge that refuses 127.0.0.2 as production refuses Cloudflare's addresses. */
function emulatedVars(extra: Record<string, string> = {}): Record<string, string> {
  return { EDGESOCKS_DOH_URL: stub.url(DohStubPath.Answer), EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: `${EMULATED}/32`, ...extra };
}

function urlOf(host: string): string {
  return `http://${host}:${origin.port}/data.json`;
}

function socks5(agent: RunningAgent, url: string) {
  return runCurl(["--proxy", `socks5h://127.0.0.1:${agent.port}`, url]).then((run) => ({ ...run, body: run.stdout.toString() }));
}

/** A loopback port on `host` where nothing listens: bound by the kernel's choice, then released. */
async function closedPort(host: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** How long a page through the agent may take on loopback before the test calls it lost. */
const ANSWER_WITHIN_MS = 10_000;

/** `promise`, or a rejection once `ms` have passed without it settling. */
async function withinMs<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  promise.catch(() => {}); // settled after the deadline (the agent stopped): the test has its answer already
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** How many times `text` occurs in `haystack`: an upstream's log lines for one destination. */
function occurrences(haystack: string, text: string): number {
  return haystack.split(text).length - 1;
}

/** A TCP relay outside "Cloudflare" that forwards to its anycast: here, to the emulated origin. */
type Relay = { port: number; connections(): number; close(): Promise<void> };

async function startRelay(): Promise<Relay> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const relay = createServer((inbound) => {
    connections++;
    const outbound = netConnect(origin.port, EMULATED);
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on("error", () => socket.destroy());
      socket.on("close", () => sockets.delete(socket));
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  return {
    port: (relay.address() as { port: number }).port,
    connections: () => connections,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
    },
  };
}

/** An edge with `vars` (on top of the emulation) and an agent in front of it, stopped together. */
async function edgeAndAgent(vars: Record<string, string>, agentArgs: string[] = []): Promise<{ agent: RunningAgent; stop(): Promise<void> }> {
  const edge = await startEdge(emulatedVars(vars));
  const agent = await startAgent(edge.url, edge.token, agentArgs).catch(async (error: unknown) => {
    await edge.stop();
    throw error;
  });
  return {
    agent,
    stop: async () => {
      await agent.stop();
      await edge.stop();
    },
  };
}

beforeAll(async () => {
  // localhost as /etc/hosts has it, so the name workerd dials is the name the edge classifies
  // (and workerd's own lookup of it stays on this machine, as in curl.test.ts).
  stub = await startDohStub({ ...STUB_RECORDS, [REMEMBERED_NAME]: { a: [EMULATED], ttlSeconds: 300 }, localhost: { a: ["127.0.0.1"] } });
  for (const port of [...CLOUDFLARE_PROXIED_PORTS].filter((each) => each > 1024)) {
    try {
      origin = await startHttpOrigin(EMULATED, port);
      break;
    } catch {
      // taken on this machine: the next proxied port
    }
  }
  if (!origin) throw new Error(`no Cloudflare-proxied port is free on ${EMULATED}`);
});
afterAll(async () => {
  await origin?.close();
  await stub?.close();
});

describe("no fallback configured", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  beforeAll(async () => {
    edge = await startEdge(emulatedVars());
    agent = await startAgent(edge.url, edge.token);
  });
  afterAll(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  it("answers SOCKS5 0x02 for an IP literal on Cloudflare's network", async () => {
    const result = await socks5(agent, urlOf(EMULATED));
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(2)");
  });

  it("answers SOCKS5 0x02 for a name that resolves to Cloudflare, and hints once per destination", async () => {
    for (let round = 0; round < 2; round++) {
      const result = await socks5(agent, urlOf(CLOUDFLARE_HOSTED_NAME));
      expect(result.exitCode).toBe(97);
      expect(result.stderr).toContain("(2)");
    }
    await agent.waitForLog(new RegExp(`-> ${CLOUDFLARE_HOSTED_NAME.replaceAll(".", "\\.")}:${origin.port} via edge .* on Cloudflare's network: `));
    const hints = agent.log().split("\n").filter((line) => line.includes(" warn ") && line.includes(`${CLOUDFLARE_HOSTED_NAME}:${origin.port}: `));
    expect(hints).toHaveLength(1);
    expect(hints[0]).toContain("--on-cloudflare direct");
  });

  it("answers SOCKS4a 0x5B", async () => {
    const result = await runCurl(["--socks4a", `127.0.0.1:${agent.port}`, urlOf(CLOUDFLARE_HOSTED_NAME)]);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(91)");
  });

  it("answers an HTTP proxy request with 502 naming Cloudflare and the options", async () => {
    const result = await runCurl(["--proxy", `http://127.0.0.1:${agent.port}`, "--write-out", "%{http_code}", urlOf(CLOUDFLARE_HOSTED_NAME)]);
    const text = result.stdout.toString();
    expect(text.endsWith("502")).toBe(true);
    expect(text).toContain("on Cloudflare's network");
    expect(text).toContain("EDGESOCKS_UPSTREAM, EDGESOCKS_CLOUDFLARE_RELAY or EDGESOCKS_NAT64_PREFIX");
    expect(text).toContain("--on-cloudflare direct");
  });

  it("answers HTTP CONNECT with 502", async () => {
    const result = await runCurl(["--proxytunnel", "--proxy", `http://127.0.0.1:${agent.port}`, urlOf(EMULATED)]);
    expect(result.exitCode).toBe(56);
    expect(result.stderr).toContain("CONNECT tunnel failed, response 502");
  });

  it("answers SOCKS5 0x04 and HTTP 502 'does not resolve' for a name under .invalid, through the edge", async () => {
    const viaSocks = await socks5(agent, "http://nothing.invalid:8880/");
    expect(viaSocks.exitCode).toBe(97);
    expect(viaSocks.stderr).toContain("(4)");
    const viaHttp = await runCurl(["--proxy", `http://127.0.0.1:${agent.port}`, "--write-out", "%{http_code}", "http://nothing.invalid:8880/"]);
    expect(viaHttp.stdout.toString()).toBe("host unreachable: nothing.invalid does not resolve (no A or AAAA record)\n502");
    const viaSocks4a = await runCurl(["--socks4a", `127.0.0.1:${agent.port}`, "http://nothing.invalid:8880/"]);
    expect(viaSocks4a.exitCode).toBe(97);
    expect(viaSocks4a.stderr).toContain("(91)");
  });

  it("remembers a name's verdict in the isolate: a repeated connection asks the resolver nothing", async () => {
    expect(stub.queriesFor(REMEMBERED_NAME)).toBe(0);
    const first = await socks5(agent, urlOf(REMEMBERED_NAME));
    expect(first.stderr).toContain("(2)");
    // A and AAAA, once: the emulation's lookup and the classification share the isolate's cache.
    expect(stub.queriesFor(REMEMBERED_NAME)).toBe(2);
    const repeated = await socks5(agent, urlOf(REMEMBERED_NAME));
    expect(repeated.stderr).toContain("(2)");
    expect(stub.queriesFor(REMEMBERED_NAME)).toBe(2);
  });

  it("answers SOCKS5 0x05 for a refused name whose addresses are not Cloudflare's", async () => {
    const refusing = await closedPort("127.0.0.1");
    const result = await socks5(agent, `http://localhost:${refusing}/`);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(5)");
  });

  it("still reaches an ordinary loopback origin", async () => {
    const plain = await startHttpOrigin();
    try {
      expect(await socks5(agent, `http://127.0.0.1:${plain.port}/data.json`)).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
    } finally {
      await plain.close();
    }
  });
});

describe("a resolver that gives no answer", () => {
  it("leaves a refused name a refusal (0x05, HTTP 502), saying the edge could not tell why", async () => {
    const running = await edgeAndAgent({ EDGESOCKS_DOH_URL: stub.url(DohStubPath.Unavailable) });
    const refusing = await closedPort("127.0.0.1");
    try {
      const viaSocks = await socks5(running.agent, `http://localhost:${refusing}/`);
      expect(viaSocks.exitCode).toBe(97);
      expect(viaSocks.stderr).toContain("(5)");
      const viaHttp = await runCurl(["--proxy", `http://127.0.0.1:${running.agent.port}`, "--write-out", "%{http_code}", `http://localhost:${refusing}/`]);
      expect(viaHttp.stdout.toString()).toBe(`connection refused: proxy request failed, cannot connect to the specified address (the edge could not tell why: resolver answered HTTP 503)\n502`);
    } finally {
      await running.stop();
    }
  });
});

describe("--on-cloudflare direct", () => {
  let edge: RunningEdge;
  beforeAll(async () => {
    edge = await startEdge(emulatedVars());
  });
  afterAll(() => edge?.stop());

  it("opens the site from the agent's machine, says why, and goes straight there the next time", async () => {
    const agent = await startAgent(edge.url, edge.token, ["--on-cloudflare", "direct"]);
    try {
      expect(await socks5(agent, urlOf(EMULATED))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      await agent.waitForLog(new RegExp(`-> ${EMULATED.replaceAll(".", "\\.")}:${origin.port} direct \\(on Cloudflare's network: --on-cloudflare direct\\) .* ok$`));
      expect(await socks5(agent, urlOf(EMULATED))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      await agent.waitForLog(/direct \(on Cloudflare's network, remembered: --on-cloudflare direct\) .* ok$/);
    } finally {
      await agent.stop();
    }
  });

  it("replays the bytes a --zero-rtt client already sent, so the page still loads", async () => {
    const agent = await startAgent(edge.url, edge.token, ["--on-cloudflare", "direct", "--zero-rtt"]);
    try {
      expect(await socks5(agent, urlOf(EMULATED))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      await agent.waitForLog(/direct \(on Cloudflare's network: --on-cloudflare direct\) up=\d+B .* ok$/);
    } finally {
      await agent.stop();
    }
  });

  it("replays a request the client sent in the same write as its SOCKS5 request, before any answer", async () => {
    // Greeting, CONNECT and the HTTP request in one write: every request byte is in the agent
    // before the edge's OnCloudflare arrives, so the page loads only if the agent replays them.
    const agent = await startAgent(edge.url, edge.token, ["--on-cloudflare", "direct", "--zero-rtt"]);
    try {
      const request = Buffer.from(`GET /data.json HTTP/1.0\r\nHost: ${EMULATED}:${origin.port}\r\nConnection: close\r\n\r\n`);
      const connect = [0x05, 0x01, 0x00, 0x01, ...EMULATED.split(".").map(Number), origin.port >> 8, origin.port & 0xff];
      const answer = Buffer.from(await withinMs(ANSWER_WITHIN_MS, exchange(agent.port, [0x05, 0x01, 0x00, ...connect, ...request])));
      expect([...answer.subarray(0, 4)]).toEqual([0x05, 0x00, 0x05, 0x00]);
      expect(answer.toString("latin1")).toMatch(/^[^]{12}HTTP\/1\.1 200 [^]*\r\n\r\n\{"answer":42\}$/);
      await agent.waitForLog(new RegExp(`direct \\(on Cloudflare's network: --on-cloudflare direct\\) up=${request.byteLength}B .* ok$`));
    } finally {
      await agent.stop();
    }
  });
});

describe("EDGESOCKS_UPSTREAM", () => {
  const agentFor = (vars: Record<string, string>) => edgeAndAgent(vars);
  let microsocks: RunningProxy;
  let tinyproxy: RunningProxy;
  beforeAll(async () => {
    microsocks = await startMicrosocks({ user: USER, password: PASSWORD });
    tinyproxy = await startTinyproxy({ credentials: { user: USER, password: PASSWORD } });
  });
  afterAll(async () => {
    await microsocks?.stop();
    await tinyproxy?.stop();
  });

  it("loads a Cloudflare-hosted page through a SOCKS5 upstream with a password, by name and by IP", async () => {
    const running = await agentFor({ EDGESOCKS_UPSTREAM: `socks5://${USER}:${PASSWORD}@127.0.0.1:${microsocks.port}` });
    const logLine = `connected to ${EMULATED}:${origin.port}`;
    try {
      const before = occurrences(microsocks.output(), logLine);
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(await socks5(running.agent, urlOf(EMULATED))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      // microsocks logs each connection it makes: the upstream, asked for the address the edge classified.
      expect(occurrences(microsocks.output(), logLine)).toBe(before + 2);
    } finally {
      await running.stop();
    }
  });

  it("loads it through an HTTP CONNECT upstream, whose log shows the connection", async () => {
    const running = await agentFor({ EDGESOCKS_UPSTREAM: `http://${USER}:${PASSWORD}@127.0.0.1:${tinyproxy.port}` });
    try {
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(tinyproxy.output()).toContain(`${EMULATED}`);
    } finally {
      await running.stop();
    }
  });

  it("answers SOCKS5 0x01 for a wrong upstream password, naming the upstream without its credentials", async () => {
    const running = await agentFor({ EDGESOCKS_UPSTREAM: `socks5://${USER}:wrong-${PASSWORD}@127.0.0.1:${microsocks.port}` });
    try {
      const result = await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME));
      expect(result.exitCode).toBe(97);
      expect(result.stderr).toContain("(1)");
      const line = await running.agent.waitForLog(new RegExp(`-> ${CLOUDFLARE_HOSTED_NAME.replaceAll(".", "\\.")}:${origin.port} via edge .* general failure: `));
      expect(line).toContain(`socks5://127.0.0.1:${microsocks.port}`);
      expect(line).not.toContain(PASSWORD);
      expect(line).not.toContain(USER);
    } finally {
      await running.stop();
    }
  });

  it("answers SOCKS5 0x01 at once when the upstream is down, and nothing hangs", async () => {
    const down = await startMicrosocks();
    const port = down.port;
    await down.stop();
    const running = await agentFor({ EDGESOCKS_UPSTREAM: `socks5://127.0.0.1:${port}` });
    try {
      const startedAtMs = Date.now();
      const result = await socks5(running.agent, urlOf(EMULATED));
      expect(result.exitCode).toBe(97);
      expect(result.stderr).toContain("(1)");
      expect(Date.now() - startedAtMs).toBeLessThan(5_000);
      await running.agent.waitForLog(/general failure: .*upstream socks5:\/\/127\.0\.0\.1:\d+ unreachable/);
    } finally {
      await running.stop();
    }
  });

  it("passes on the upstream's own refusal: SOCKS5 0x05 and HTTP 502 when the destination refuses it", async () => {
    const refusing = await closedPort(EMULATED);
    const running = await agentFor({ EDGESOCKS_UPSTREAM: `socks5://${USER}:${PASSWORD}@127.0.0.1:${microsocks.port}` });
    try {
      const viaSocks = await socks5(running.agent, `http://${EMULATED}:${refusing}/`);
      expect(viaSocks.exitCode).toBe(97);
      expect(viaSocks.stderr).toContain("(5)");
      const viaHttp = await runCurl(["--proxy", `http://127.0.0.1:${running.agent.port}`, "--write-out", "%{http_code}", `http://${EMULATED}:${refusing}/`]);
      expect(viaHttp.stdout.toString()).toMatch(new RegExp(`^connection refused: .*upstream socks5://127\\.0\\.0\\.1:${microsocks.port} answered 0x05 \\(connection refused\\)\n502$`));
      expect(viaHttp.stdout.toString()).not.toContain(PASSWORD);
    } finally {
      await running.stop();
    }
  });

  it("with EDGESOCKS_UPSTREAM_FOR=all, sends a destination not on Cloudflare through the upstream too", async () => {
    const plain = await startHttpOrigin();
    const running = await agentFor({ EDGESOCKS_UPSTREAM: `socks5://${USER}:${PASSWORD}@127.0.0.1:${microsocks.port}`, EDGESOCKS_UPSTREAM_FOR: "all" });
    try {
      expect(await socks5(running.agent, `http://127.0.0.1:${plain.port}/data.json`)).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(microsocks.output()).toContain(`connected to 127.0.0.1:${plain.port}`);
    } finally {
      await running.stop();
      await plain.close();
    }
  });
});

describe("EDGESOCKS_CLOUDFLARE_RELAY", () => {
  let relay: Relay;
  beforeAll(async () => {
    relay = await startRelay();
  });
  afterAll(() => relay?.close());

  it("loads a Cloudflare-hosted page through the relay, passing the bytes unchanged, and only on a port Cloudflare proxies", async () => {
    const running = await edgeAndAgent({ EDGESOCKS_CLOUDFLARE_RELAY: `127.0.0.1:${relay.port}` });
    try {
      const before = relay.connections();
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(relay.connections()).toBe(before + 1);
      // An ephemeral port is none Cloudflare proxies: no relay can carry it, so OnCloudflare.
      const unproxied = await closedPort(EMULATED);
      const refused = await socks5(running.agent, `http://${EMULATED}:${unproxied}/`);
      expect(refused.exitCode).toBe(97);
      expect(refused.stderr).toContain("(2)");
      expect(relay.connections()).toBe(before + 1);
    } finally {
      await running.stop();
    }
  });
});

describe("EDGESOCKS_NAT64_PREFIX", () => {
  it("loads a Cloudflare-hosted page through [prefix + its IPv4 address]", async () => {
    const running = await edgeAndAgent({ EDGESOCKS_NAT64_PREFIX: MAPPED_NAT64_PREFIX });
    try {
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(await socks5(running.agent, urlOf(EMULATED))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
    } finally {
      await running.stop();
    }
  });
});

// README "Sites hosted on Cloudflare" and docs/protocol.md §10: upstream, then each relay, then
// NAT64; the first that opens carries the stream; when all fail, the first one's failure.
describe("the order of the fallbacks", () => {
  let microsocks: RunningProxy;
  let relay: Relay;
  let downUpstream: string;
  let downRelay: string;
  beforeAll(async () => {
    microsocks = await startMicrosocks({ user: USER, password: PASSWORD });
    relay = await startRelay();
    downUpstream = `socks5://127.0.0.1:${await closedPort("127.0.0.1")}`;
    downRelay = `127.0.0.1:${await closedPort("127.0.0.1")}`;
  });
  afterAll(async () => {
    await microsocks?.stop();
    await relay?.close();
  });

  it("tries the upstream first: with upstream and relay both working, the relay sees nothing", async () => {
    const running = await edgeAndAgent({ EDGESOCKS_UPSTREAM: `socks5://${USER}:${PASSWORD}@127.0.0.1:${microsocks.port}`, EDGESOCKS_CLOUDFLARE_RELAY: `127.0.0.1:${relay.port}` });
    const logLine = `connected to ${EMULATED}:${origin.port}`;
    try {
      const [relayedBefore, upstreamBefore] = [relay.connections(), occurrences(microsocks.output(), logLine)];
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(occurrences(microsocks.output(), logLine)).toBe(upstreamBefore + 1);
      expect(relay.connections()).toBe(relayedBefore);
    } finally {
      await running.stop();
    }
  });

  it("goes on to each relay in turn when the upstream is down", async () => {
    const running = await edgeAndAgent({ EDGESOCKS_UPSTREAM: downUpstream, EDGESOCKS_CLOUDFLARE_RELAY: `${downRelay},127.0.0.1:${relay.port}` });
    try {
      const before = relay.connections();
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(relay.connections()).toBe(before + 1);
    } finally {
      await running.stop();
    }
  });

  it("goes on to NAT64 when the relay is down", async () => {
    const running = await edgeAndAgent({ EDGESOCKS_CLOUDFLARE_RELAY: downRelay, EDGESOCKS_NAT64_PREFIX: MAPPED_NAT64_PREFIX });
    try {
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
    } finally {
      await running.stop();
    }
  });

  it("answers the first fallback's failure when all fail, with every attempt in the reason, in order", async () => {
    const running = await edgeAndAgent({ EDGESOCKS_UPSTREAM: downUpstream, EDGESOCKS_CLOUDFLARE_RELAY: downRelay });
    try {
      const result = await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME));
      expect(result.exitCode).toBe(97);
      // 0x01 is the upstream's (down: general failure); the relay's alone would be 0x05.
      expect(result.stderr).toContain("(1)");
      const line = await running.agent.waitForLog(/ general failure: .* is on Cloudflare's network/);
      expect(line).toMatch(new RegExp(`upstream ${downUpstream.replaceAll(".", "\\.")} unreachable: .*; via relay ${downRelay.replaceAll(".", "\\.")}: `));
    } finally {
      await running.stop();
    }
  });

  it("leaves --on-cloudflare direct for last: a configured edge fallback carries the stream first", async () => {
    const running = await edgeAndAgent({ EDGESOCKS_CLOUDFLARE_RELAY: `127.0.0.1:${relay.port}` }, ["--on-cloudflare", "direct"]);
    try {
      const before = relay.connections();
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(relay.connections()).toBe(before + 1);
      await running.agent.waitForLog(new RegExp(`-> ${CLOUDFLARE_HOSTED_NAME.replaceAll(".", "\\.")}:${origin.port} via edge .* ok$`));
      expect(running.agent.log()).not.toContain("on Cloudflare's network: --on-cloudflare direct");
    } finally {
      await running.stop();
    }
  });
});
