// Sites hosted on Cloudflare, end to end: the real Worker under wrangler dev with production's
// refusal emulated for 127.0.0.2 (EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS), a DoH stub that maps
// CLOUDFLARE_HOSTED_NAME there, the real agent, curl as the client, and real upstreams
// (microsocks, tinyproxy) and a TCP relay as the fallbacks. Loopback only.

import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOUDFLARE_PROXIED_PORTS } from "../../worker/dial/relay.ts";
import { CLOUDFLARE_HOSTED_NAME } from "../dns/dns-message.ts";
import { DohStubPath, startDohStub, type DohStub } from "../dns/doh-stub.ts";
import { startMicrosocks, startTinyproxy, type RunningProxy } from "../upstreams/proxies.ts";
import { runCurl } from "./curl-run.ts";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";

const EMULATED = "127.0.0.2";
const USER = "edgeuser";
const PASSWORD = "edge-upstream-secret";

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

beforeAll(async () => {
  stub = await startDohStub();
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
});

describe("EDGESOCKS_UPSTREAM", () => {
  let agentFor: (vars: Record<string, string>) => Promise<{ agent: RunningAgent; stop(): Promise<void> }>;
  let microsocks: RunningProxy;
  let tinyproxy: RunningProxy;
  beforeAll(async () => {
    microsocks = await startMicrosocks({ user: USER, password: PASSWORD });
    tinyproxy = await startTinyproxy({ credentials: { user: USER, password: PASSWORD } });
    agentFor = async (vars) => {
      const edge = await startEdge(emulatedVars(vars));
      const agent = await startAgent(edge.url, edge.token);
      return {
        agent,
        stop: async () => {
          await agent.stop();
          await edge.stop();
        },
      };
    };
  });
  afterAll(async () => {
    await microsocks?.stop();
    await tinyproxy?.stop();
  });

  it("loads a Cloudflare-hosted page through a SOCKS5 upstream with a password, by name and by IP", async () => {
    const running = await agentFor({ EDGESOCKS_UPSTREAM: `socks5://${USER}:${PASSWORD}@127.0.0.1:${microsocks.port}` });
    try {
      expect(await socks5(running.agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(await socks5(running.agent, urlOf(EMULATED))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
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
});

describe("EDGESOCKS_CLOUDFLARE_RELAY", () => {
  let relay: Server;
  let relayPort: number;
  let relayedConnections = 0;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    // A relay outside "Cloudflare" that forwards to its anycast: here, to the emulated origin.
    relay = createServer((inbound) => {
      relayedConnections++;
      const outbound = netConnect(origin.port, EMULATED);
      for (const socket of [inbound, outbound]) {
        sockets.add(socket);
        socket.on("error", () => socket.destroy());
        socket.on("close", () => sockets.delete(socket));
      }
      inbound.pipe(outbound).pipe(inbound);
    });
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    relayPort = (relay.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => relay?.close(() => resolve()));
  });

  it("loads a Cloudflare-hosted page through the relay, passing the bytes unchanged", async () => {
    const edge = await startEdge(emulatedVars({ EDGESOCKS_CLOUDFLARE_RELAY: `127.0.0.1:${relayPort}` }));
    const agent = await startAgent(edge.url, edge.token);
    try {
      const before = relayedConnections;
      expect(await socks5(agent, urlOf(CLOUDFLARE_HOSTED_NAME))).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
      expect(relayedConnections).toBe(before + 1);
    } finally {
      await agent.stop();
      await edge.stop();
    }
  });
});
