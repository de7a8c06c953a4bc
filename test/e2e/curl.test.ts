// curl (a client nobody here wrote) through the real agent and the real Worker under wrangler dev.

import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { freePort, startAgent, type RunningAgent } from "./processes.ts";
import { startUpgradeRecorder, type UpgradeRecorder } from "./upgrade-recorder.ts";
import { AddressType } from "../../worker/protocol/index.ts";

const MIB = 1024 * 1024;

type CurlResult = { exitCode: number; stdoutSha256: string; stdoutBytes: number; stdout: string; stderr: string };

function curl(args: string[]): Promise<CurlResult> {
  return new Promise((resolve) => {
    const child = spawn("curl", ["--silent", "--show-error", "--max-time", "120", ...args]);
    const hash = createHash("sha256");
    let stdoutBytes = 0;
    let head = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      stdoutBytes += chunk.byteLength;
      if (head.length < 4096) head += chunk.toString("latin1");
    });
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("close", (code) => resolve({ exitCode: code ?? -1, stdoutSha256: hash.digest("hex"), stdoutBytes, stdout: head, stderr }));
  });
}

let agent: RunningAgent;
let origin: HttpOrigin;
let originV6: HttpOrigin;
let proxy: string;
/** Between agent and edge: what the agent put on the wire. */
let recorder: UpgradeRecorder;

beforeAll(async () => {
  recorder = await startUpgradeRecorder(Number(new URL(inject("edgeUrl")).port));
  agent = await startAgent(`http://127.0.0.1:${recorder.port}`, inject("edgeToken"));
  origin = await startHttpOrigin();
  originV6 = await startHttpOrigin("::1");
  proxy = `socks5h://127.0.0.1:${agent.port}`;
});
afterAll(async () => {
  await agent?.stop();
  await origin?.close();
  await originV6?.close();
  await recorder?.close();
});

describe("curl --socks5-hostname through agent and edge", () => {
  it("downloads 64 MiB with the SHA-256 the origin sent", async () => {
    const result = await curl(["--proxy", proxy, `http://127.0.0.1:${origin.port}/blob?bytes=${64 * MIB}&id=curl-down`]);
    expect(result.stderr).toBe("");
    expect(result.exitCode).toBe(0);
    expect(result.stdoutBytes).toBe(64 * MIB);
    expect(result.stdoutSha256).toBe(origin.sentHashes.get("curl-down"));
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} via edge up=\\S+ down=64\\.0MiB .* ok$`));
  });

  it("uploads 64 MiB that the origin receives with the same SHA-256", async () => {
    const dir = mkdtempSync(join(tmpdir(), "edgesocks-upload-"));
    try {
      const body = randomBytes(64 * MIB);
      const file = join(dir, "body.bin");
      writeFileSync(file, body);
      const result = await curl(["--proxy", proxy, "--upload-file", file, `http://127.0.0.1:${origin.port}/upload?id=curl-up`]);
      expect(result.exitCode).toBe(0);
      const expected = { bytes: body.byteLength, sha256: createHash("sha256").update(body).digest("hex") };
      expect(JSON.parse(result.stdout)).toEqual(expected);
      expect(origin.received.get("curl-up")).toEqual(expected);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("resolves a domain name at the edge (localhost), not in the agent", async () => {
    const before = recorder.opens().length;
    const result = await curl(["--proxy", proxy, `http://localhost:${origin.port}/data.json`]);
    expect(result.exitCode).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ answer: 42 });
    // The agent logged the name as it received it from curl...
    await agent.waitForLog(new RegExp(`-> localhost:${origin.port} .* ok$`));
    // ...and the OPEN it sent the edge names it too: an address type of name, not an address
    // the agent resolved. (On a warm tunnel it is a frame; on a cold one, the upgrade's header.)
    const opens = (await recorder.waitForOpens(before + 1)).slice(before);
    expect(opens.map((open) => open.destination)).toEqual([{ type: AddressType.Domain, host: "localhost", port: origin.port }]);
  });

  it("reaches an IPv6 destination ([::1])", async () => {
    const result = await curl(["--proxy", proxy, `http://[::1]:${originV6.port}/blob?bytes=${MIB}&id=curl-v6`]);
    expect(result.exitCode).toBe(0);
    expect(result.stdoutSha256).toBe(originV6.sentHashes.get("curl-v6"));
    await agent.waitForLog(new RegExp(`-> \\[::1\\]:${originV6.port} .* ok$`));
  });

  it("reports a refused port as SOCKS reply 0x05", async () => {
    const closedPort = await freePort();
    const result = await curl(["--proxy", proxy, `http://127.0.0.1:${closedPort}/`]);
    expect(result.exitCode).toBe(97); // CURLE_PROXY: the proxy answered with a failure
    expect(result.stderr).toContain("(5)");
    await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${closedPort} via edge .*connection refused`));
  });

  it("reports port 25 as SOCKS reply 0x02 without dialing it", async () => {
    const result = await curl(["--proxy", proxy, "http://127.0.0.1:25/"]);
    expect(result.exitCode).toBe(97);
    expect(result.stderr).toContain("(2)");
  });
});
