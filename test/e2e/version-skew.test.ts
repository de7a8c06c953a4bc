// Users update the two halves at different times: the agents and Workers of the previous protocol
// versions (v3, release 25a4ba0; v2, release 2b20027; extracted from this repository's history)
// each work with this checkout's other half: transfers byte-exact with windows that do not grow on
// an older peer's tunnel, and a Cloudflare-hosted destination gets the answer v2 can decode.

import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOUDFLARE_HOSTED_NAME } from "../dns/dns-message.ts";
import { DohStubPath, startDohStub, type DohStub } from "../dns/doh-stub.ts";
import { runCurl } from "./curl-run.ts";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { repoRoot, startAgent, startEdge, type RunningAgent, type RunningEdge } from "./processes.ts";

/** The last release that speaks only edgesocks.v2. */
const V2_RELEASE = "2b20027cfe899e7dc63f693063a20caae028eb7f";
/** The last release whose newest version is edgesocks.v3. */
const V3_RELEASE = "25a4ba089820a9c46a7cefe8d1d9bca0d6ea55ae";

let previous: string;
let v3Release: string;
let stub: DohStub;
let origin: HttpOrigin;
let emulatedOrigin: HttpOrigin;

function curl(agent: RunningAgent, url: string) {
  return runCurl(["--proxy", `socks5h://127.0.0.1:${agent.port}`, url]).then((run) => ({ ...run, body: run.stdout.toString() }));
}

/** The whole release as committed, in a temporary directory; its dependencies are this checkout's (the same lock file's majors). */
function extractRelease(commit: string, prefix: string): string {
  const root = mkdtempSync(join(tmpdir(), prefix));
  execFileSync("sh", ["-c", `git -C "$0" archive ${commit} | tar -x -C "$1"`, repoRoot, root]);
  symlinkSync(join(repoRoot, "node_modules"), join(root, "node_modules"));
  return root;
}

/** A 24 MiB download and a 16 MiB upload through `agent`, each checked by SHA-256 at the other end. */
async function expectTransfersIntact(agent: RunningAgent): Promise<void> {
  const proxy = ["--proxy", `socks5h://127.0.0.1:${agent.port}`];
  const download = await runCurl([...proxy, `http://127.0.0.1:${origin.port}/blob?bytes=${24 * 1024 * 1024}&id=skew-down`]);
  expect(download.exitCode).toBe(0);
  expect(createHash("sha256").update(download.stdout).digest("hex")).toBe(origin.sentHashes.get("skew-down"));
  const body = randomBytes(16 * 1024 * 1024);
  const bodyFile = join(previous, "upload.bin");
  writeFileSync(bodyFile, body);
  const upload = await runCurl([...proxy, "--data-binary", `@${bodyFile}`, `http://127.0.0.1:${origin.port}/upload?id=skew-up`]);
  expect(upload.exitCode).toBe(0);
  expect(JSON.parse(upload.stdout.toString())).toEqual({ bytes: body.byteLength, sha256: createHash("sha256").update(body).digest("hex") });
}

beforeAll(async () => {
  previous = extractRelease(V2_RELEASE, "edgesocks-v2-");
  v3Release = extractRelease(V3_RELEASE, "edgesocks-v3-");
  stub = await startDohStub();
  origin = await startHttpOrigin();
  emulatedOrigin = await startHttpOrigin("127.0.0.2");
});
afterAll(async () => {
  await origin?.close();
  await emulatedOrigin?.close();
  await stub?.close();
  if (previous) rmSync(previous, { recursive: true, force: true });
  if (v3Release) rmSync(v3Release, { recursive: true, force: true });
});

describe("a v3 agent against this (v4) Worker", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  beforeAll(async () => {
    edge = await startEdge({ EDGESOCKS_DOH_URL: stub.url(DohStubPath.Answer), EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: "127.0.0.2/32" });
    agent = await startAgent(edge.url, edge.token, [], join(v3Release, "local-agent", "cli.ts"));
  });
  afterAll(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  it("moves a download and an upload byte-exact, the edge sending no frame v3 lacks", async () => {
    await expectTransfersIntact(agent);
    // A v3 agent closes the tunnel with 4400 on GROW, PING or PONG: one would show here.
    expect(agent.log()).not.toMatch(/broke the protocol|4400/);
  });

  it("hears OnCloudflare (SOCKS5 0x02) for a Cloudflare-hosted site", async () => {
    const result = await curl(agent, `http://${CLOUDFLARE_HOSTED_NAME}:${emulatedOrigin.port}/data.json`);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(2)");
  });
});

describe("this (v4) agent against a v3 Worker", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  beforeAll(async () => {
    edge = await startEdge({}, v3Release);
    agent = await startAgent(edge.url, edge.token);
  });
  afterAll(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  it("negotiates edgesocks.v3 and moves a download and an upload byte-exact, sending no frame v3 lacks", async () => {
    const healthz = (await (await fetch(`${edge.url}/healthz`)).json()) as { protocol: number };
    expect(healthz.protocol).toBe(3);
    await expectTransfersIntact(agent);
    // The v3 edge closes the tunnel with 4400 on GROW or PING, which the agent would log as a reset.
    expect(agent.log()).not.toMatch(/reset|4400/);
  });

  it("warns once at start that the Worker is older, and that its windows do not grow", async () => {
    const line = await agent.waitForLog(/the edge speaks protocol 3, an older version this agent still speaks/);
    expect(line).toContain("its windows do not grow to the path");
    expect(line).not.toContain("does not classify");
  });
});

describe("a v2 agent against this (v4) Worker", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  beforeAll(async () => {
    edge = await startEdge({ EDGESOCKS_DOH_URL: stub.url(DohStubPath.Answer), EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: "127.0.0.2/32" });
    agent = await startAgent(edge.url, edge.token, [], join(previous, "local-agent", "cli.ts"));
  });
  afterAll(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  it("relays a page", async () => {
    expect(await curl(agent, `http://127.0.0.1:${origin.port}/data.json`)).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
  });

  it("hears NotAllowed (SOCKS5 0x02) for a Cloudflare-hosted site, not the status v2 cannot decode", async () => {
    const result = await curl(agent, `http://${CLOUDFLARE_HOSTED_NAME}:${emulatedOrigin.port}/data.json`);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(2)");
    const line = await agent.waitForLog(new RegExp(`-> ${CLOUDFLARE_HOSTED_NAME.replaceAll(".", "\\.")}:\\d+ via edge .* not allowed: `));
    expect(line).toContain("on Cloudflare's network");
    expect(agent.log()).not.toMatch(/broke the protocol|4400/);
  });
});

describe("this (v4) agent against a v2 Worker", () => {
  let edge: RunningEdge;
  let agent: RunningAgent;
  beforeAll(async () => {
    edge = await startEdge({}, previous);
    agent = await startAgent(edge.url, edge.token);
  });
  afterAll(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  it("negotiates edgesocks.v2 and relays a page, on warm and cold tunnels", async () => {
    const healthz = (await (await fetch(`${edge.url}/healthz`)).json()) as { protocol: number };
    expect(healthz.protocol).toBe(2);
    for (let round = 0; round < 6; round++) {
      expect(await curl(agent, `http://127.0.0.1:${origin.port}/data.json`)).toMatchObject({ exitCode: 0, body: '{"answer":42}' });
    }
  });

  it("warns once at start that the Worker is older, and what that costs", async () => {
    const line = await agent.waitForLog(/the edge speaks protocol 2, an older version this agent still speaks/);
    expect(line).toContain("does not classify its refused dials");
  });
});
