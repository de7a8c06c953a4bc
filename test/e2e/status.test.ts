// The status on the agent's own port (local-agent/status/): headless Chromium opens
// http://127.0.0.1:PORT/status directly while a download drips through the agent and the real
// edge, and the page shows that connection, its bytes growing; /status.json and /metrics report
// the same; a foreign Host header is refused (DNS rebinding); with users, credentials are asked
// for. Nothing in any answer is a secret.
//
// Chromium never proxies loopback (its implicit bypass rules), so the page loads directly; every
// other request it might make goes to its "proxy", a loopback port that drops each connection:
// nothing leaves this machine. A screenshot of the page is kept in test-results/status.png.

import { mkdirSync } from "node:fs";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { StatusSnapshot } from "../../local-agent/status/agent-status.ts";
import { checkEdgesocksConventions, parsePrometheusText } from "../unit/status-prometheus.ts";
import { launchChromium } from "./chromium-launch.ts";
import { runCurl } from "./curl-run.ts";
import { startDripOrigin, type DripOrigin } from "./drip-origin.ts";
import { repoRoot, startAgent, type RunningAgent } from "./processes.ts";
import { socksConnect } from "./socks-client.ts";

const USER_PASSWORD = "status-e2e-password-0123";

let agent: RunningAgent;
let origin: DripOrigin;
let browser: Browser;
let deadProxy: Server;
const deadProxySockets = new Set<Socket>();
/** The download in progress through the agent, and the bytes it has received. */
let download: Socket;
let downloadedBytes = 0;

beforeAll(async () => {
  origin = await startDripOrigin();
  agent = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--rule", `edge:host=127.0.0.1,port=${origin.port}`, "--rule", "block:port=1-65535"]);
  deadProxy = createServer((socket) => {
    deadProxySockets.add(socket);
    socket.destroy();
  });
  await new Promise<void>((resolve) => deadProxy.listen(0, "127.0.0.1", resolve));
  browser = await launchChromium([`--proxy-server=socks5://127.0.0.1:${(deadProxy.address() as AddressInfo).port}`]);
  download = await socksConnect(agent.port, "127.0.0.1", origin.port);
  download.on("data", (chunk: Buffer) => (downloadedBytes += chunk.byteLength));
  download.on("error", () => {});
  download.write(`GET /drip HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nConnection: close\r\n\r\n`);
});
afterAll(async () => {
  download?.destroy();
  await browser?.close();
  await agent?.stop();
  await origin?.close();
  for (const socket of deadProxySockets) socket.destroy();
  await new Promise<void>((resolve) => (deadProxy ? deadProxy.close(() => resolve()) : resolve()));
});

/** Bytes from the page's human units ("1.5 MiB"). */
function parseShownBytes(text: string): number {
  const match = /^([\d.]+) (B|KiB|MiB|GiB|TiB)$/.exec(text.trim());
  if (!match) throw new Error(`not a byte count: "${text}"`);
  return Number(match[1]) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].indexOf(match[2] ?? "B");
}

describe("the status page in headless Chromium", () => {
  it("shows the live connection of a transfer in progress, its destination, route, edge and growing bytes, loading nothing from anywhere else", async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const requested: string[] = [];
    const problems: string[] = [];
    page.on("request", (request) => requested.push(request.url()));
    page.on("console", (message) => {
      if (message.type() === "error" || message.type() === "warning") problems.push(message.text());
    });
    page.on("pageerror", (error) => problems.push(error.message));
    const statusUrl = `http://127.0.0.1:${agent.port}/status`;
    const response = await page.goto(statusUrl);
    expect(response?.status()).toBe(200);

    const row = page.locator("#connections tbody tr", { hasText: `127.0.0.1:${origin.port}` });
    await row.waitFor({ timeout: 10_000 });
    expect(await row.locator("td.route").textContent()).toBe("edge");
    expect(await row.locator("td.edge").textContent()).toBe(inject("edgeUrl"));
    const firstShown = parseShownBytes((await row.locator("td.down").textContent()) ?? "");
    expect(firstShown).toBeGreaterThan(0);
    // The drip sends ~1.6 MB/s: the page, refreshed every second, soon shows a megabyte more.
    let shown = firstShown;
    for (const deadline = Date.now() + 15_000; shown <= firstShown + 1_000_000 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      shown = parseShownBytes((await row.locator("td.down").textContent()) ?? "");
    }
    expect(shown).toBeGreaterThan(firstShown + 1_000_000);
    expect(downloadedBytes).toBeGreaterThan(firstShown);
    expect(await page.locator("#edges tbody tr td.edge").first().textContent()).toBe(inject("edgeUrl"));
    expect(Number((await page.locator("#edges tbody tr td.requests").first().textContent())?.replaceAll(",", ""))).toBeGreaterThanOrEqual(1);
    // The chart has a line for each direction over the last 10 minutes' buckets; once a 5 s bucket
    // of the download is whole, its rate is the chart's peak.
    expect((await page.locator("#chart-down").getAttribute("points"))?.split(" ")).toHaveLength(120);
    await page.locator("#chart-peak").filter({ hasNotText: /^0 B\/s$/ }).waitFor({ timeout: 12_000 });
    expect(parseShownBytes((await page.locator("#chart-peak").textContent())?.replace(/\/s$/, "") ?? "")).toBeGreaterThan(1_000);
    expect(await page.locator("#summary").textContent()).toContain(`on 127.0.0.1:${agent.port},`);

    mkdirSync(join(repoRoot, "test-results"), { recursive: true });
    await page.screenshot({ path: join(repoRoot, "test-results", "status.png"), fullPage: true });
    // Only the agent was asked for anything: the page, then /status.json again and again.
    expect(new Set(requested)).toEqual(new Set([statusUrl, `http://127.0.0.1:${agent.port}/status.json`]));
    expect(problems).toEqual([]);
    await page.close();
  });
});

describe("/status.json and /metrics", () => {
  it("report the transfer on the edge route, the edge's Worker requests, and no secret, never to be cached", async () => {
    const base = `http://127.0.0.1:${agent.port}`;
    const json = await fetch(`${base}/status.json`);
    expect(json.status).toBe(200);
    expect(json.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(json.headers.get("cache-control")).toBe("no-store");
    expect(json.headers.get("content-security-policy")).toMatch(/^default-src 'none'; /);
    const jsonText = await json.text();
    const status = JSON.parse(jsonText) as StatusSnapshot;
    const transfer = status.connections.listed.find((connection) => connection.destination === `127.0.0.1:${origin.port}`);
    if (!transfer) throw new Error(`no open connection to 127.0.0.1:${origin.port} in ${jsonText}`);
    expect(transfer).toMatchObject({ route: "edge", edgeLabel: inject("edgeUrl"), upBytes: expect.any(Number) });
    expect(transfer.downBytes).toBeGreaterThan(0);
    expect(transfer.upBytes).toBeGreaterThan(40); // the GET request
    expect(status.pool).toMatchObject({ size: 4, tunnelsInUse: 1 });
    expect(status.edges).toHaveLength(1);
    const [edge] = status.edges;
    expect(edge?.edge).toBe(inject("edgeUrl"));
    // The agent's edge set feeds the health, the streams and the spares.
    expect(edge).toMatchObject({ health: "healthy", consecutiveFailures: 0, openStreams: 1 });
    expect(edge?.poolSpares).toBeGreaterThanOrEqual(1);
    // The pool's spares and the transfer's tunnel: each upgrade the edge answered is a request.
    expect(edge?.workerRequestsToday).toBeGreaterThanOrEqual(1);
    expect(status.workerRequests).toMatchObject({ freePlanDailyLimit: 100_000, day: new Date().toISOString().slice(0, 10) });

    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const metricsText = await metrics.text();
    const families = parsePrometheusText(metricsText);
    checkEdgesocksConventions(families);
    const sample = (name: string, labels: Record<string, string>) => families.get(name)?.samples.find((candidate) => JSON.stringify(candidate.labels) === JSON.stringify(labels))?.value;
    expect(sample("edgesocks_connections_open", { route: "edge" })).toBe(1);
    expect(sample("edgesocks_bytes_total", { direction: "down" })).toBeGreaterThanOrEqual(transfer.downBytes);
    expect(sample("edgesocks_worker_requests_today", { edge: inject("edgeUrl") })).toBeGreaterThanOrEqual(edge?.workerRequestsToday ?? Number.NaN);

    const page = await (await fetch(`${base}/status`)).text();
    for (const body of [jsonText, metricsText, page]) expect(body).not.toContain(inject("edgeToken"));
  });

  it("count the transfer as client_closed once the client resets it, as the agent's log line says", async () => {
    download.resetAndDestroy();
    const deadline = Date.now() + 10_000;
    let status: StatusSnapshot;
    do {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = (await (await fetch(`http://127.0.0.1:${agent.port}/status.json`)).json()) as StatusSnapshot;
    } while (status.connections.open > 0 && Date.now() < deadline);
    expect(status.connections.open).toBe(0);
    expect(status.connections.ended).toMatchObject({ client_closed: 1, ok: 0 });
    expect(status.connections.errors).toEqual({});
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} via edge .* client closed the connection$`));
  });
});

describe("who may read the status", () => {
  it("answers 403 to a request whose Host header names another site (DNS rebinding)", async () => {
    for (const path of ["/status", "/status.json", "/metrics"]) {
      const result = await runCurl(["-D", "-", "-H", "Host: evil.example", `http://127.0.0.1:${agent.port}${path}`]);
      const answer = result.stdout.toString();
      expect(answer).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
      expect(answer).toMatch(/\r\nCache-Control: no-store\r\n/i);
      expect(answer).toContain('Host "evil.example" is not this agent\'s address');
    }
    // The agent's own names pass.
    for (const host of ["localhost", "127.0.0.1"]) {
      const result = await runCurl(["-o", "/dev/null", "-w", "%{http_code}", "-H", `Host: ${host}:${agent.port}`, `http://127.0.0.1:${agent.port}/status.json`]);
      expect(result.stdout.toString()).toBe("200");
    }
  });

  it("with users, answers 401 without a user's credentials and 200 with them, in Authorization or Proxy-Authorization, never showing the password", async () => {
    const guarded = await startAgent(inject("edgeUrl"), inject("edgeToken"), ["--user", `alice:${USER_PASSWORD}`, "--pool-size", "0"]);
    try {
      const url = `http://127.0.0.1:${guarded.port}/status.json`;
      const bare = await runCurl(["-D", "-", url]);
      expect(bare.stdout.toString()).toMatch(/^HTTP\/1\.1 401 Unauthorized\r\n/);
      expect(bare.stdout.toString()).toMatch(/\r\nWWW-Authenticate: Basic realm="edgesocks status", charset="UTF-8"\r\n/i);
      const wrong = await runCurl(["-o", "/dev/null", "-w", "%{http_code}", "-u", "alice:not-the-password", url]);
      expect(wrong.stdout.toString()).toBe("401");
      const asUser = await runCurl(["-w", "\n%{http_code}", "-u", `alice:${USER_PASSWORD}`, url]);
      expect(asUser.stdout.toString()).toMatch(/\n200$/);
      const asProxyUser = await runCurl(["-o", "/dev/null", "-w", "%{http_code}", "-H", `Proxy-Authorization: Basic ${Buffer.from(`alice:${USER_PASSWORD}`).toString("base64")}`, url]);
      expect(asProxyUser.stdout.toString()).toBe("200");
      const metrics = await runCurl(["-u", `alice:${USER_PASSWORD}`, `http://127.0.0.1:${guarded.port}/metrics`]);
      for (const body of [asUser.stdout.toString(), metrics.stdout.toString(), guarded.log()]) {
        expect(body).not.toContain(USER_PASSWORD);
        expect(body).not.toContain(inject("edgeToken"));
      }
    } finally {
      await guarded.stop();
    }
  });
});
