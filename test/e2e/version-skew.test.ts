// Users update the two halves at different times: the agent and the Worker of the previous
// protocol version (v2, release 2b20027, extracted from this repository's history) each work with
// this checkout's other half, and a Cloudflare-hosted destination gets the answer v2 can decode.

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
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

let previous: string;
let stub: DohStub;
let origin: HttpOrigin;
let emulatedOrigin: HttpOrigin;

function curl(agent: RunningAgent, url: string) {
  return runCurl(["--proxy", `socks5h://127.0.0.1:${agent.port}`, url]).then((run) => ({ ...run, body: run.stdout.toString() }));
}

beforeAll(async () => {
  previous = mkdtempSync(join(tmpdir(), "edgesocks-v2-"));
  // The whole release as committed; its dependencies are this checkout's (the same lock file's majors).
  execFileSync("sh", ["-c", `git -C "$0" archive ${V2_RELEASE} | tar -x -C "$1"`, repoRoot, previous]);
  symlinkSync(join(repoRoot, "node_modules"), join(previous, "node_modules"));
  stub = await startDohStub();
  origin = await startHttpOrigin();
  emulatedOrigin = await startHttpOrigin("127.0.0.2");
});
afterAll(async () => {
  await origin?.close();
  await emulatedOrigin?.close();
  await stub?.close();
  if (previous) rmSync(previous, { recursive: true, force: true });
});

describe("a v2 agent against this (v3) Worker", () => {
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

describe("this (v3) agent against a v2 Worker", () => {
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
    await agent.waitForLog(/the edge speaks protocol 2, an older version this agent still speaks/);
  });
});
