// The agent's command line: every bad input exits 2 with one clear line; good input runs.

import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./processes.ts";
import { AGENT_OPTIONS } from "../../local-agent/config/config.ts";

function runAgent(args: string[], env: Record<string, string> = { EDGESOCKS_TOKEN: "cli-test-token-0123456789" }) {
  const result = spawnSync(process.execPath, [join(repoRoot, "local-agent", "cli", "main.ts"), ...args], {
    env: { PATH: process.env.PATH ?? "", ...env },
    encoding: "utf8",
    timeout: 20_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const EDGE = ["--edge", "http://127.0.0.1:8787"];

describe("edgesocks command line", () => {
  it("documents every flag in --help and exits 0", () => {
    const { status, stdout } = runAgent(["--help"]);
    expect(status).toBe(0);
    // Every option the parser takes, read from the parser itself: a new flag cannot go undocumented.
    const flags = Object.keys(AGENT_OPTIONS).map((name) => `--${name}`);
    expect(flags).toEqual(expect.arrayContaining(["--pool-size", "--zero-rtt", "--drain-timeout-ms", "--on-cloudflare"]));
    for (const flag of flags) expect(stdout).toMatch(new RegExp(`^\\s+(-\\w, )?${flag}\\b`, "m"));
    expect(stdout).toContain("EDGESOCKS_TOKEN");
    expect(stdout).toContain("EDGESOCKS_PASSWORD_NAME");
    expect(stdout).toMatch(/first match wins: --rule flags, then the config\s+file's rules, then those --bypass adds/);
  });

  it.each([
    [["--bogus", ...EDGE], /^edgesocks: Unknown option '--bogus'/],
    [[], /^edgesocks: --edge URL is required/],
    [["--edge", "ftp://example.test"], /^edgesocks: --edge must be an http, https, ws or wss URL/],
    [[...EDGE, "--listen", "0.0.0.0:1080"], /^edgesocks: refusing to listen on 0\.0\.0\.0: no users are configured, .*add users/],
    [[...EDGE, "--listen", "1080"], /^edgesocks: --listen "1080" is not HOST:PORT/],
    [[...EDGE, "--window-bytes", "12"], /^edgesocks: --window-bytes must be an integer from 16384 to/],
    [[...EDGE, "--log-level", "loud"], /^edgesocks: --log-level must be one of error, warn, info, debug/],
    [[...EDGE, "--token-file", "/nonexistent/token"], /^edgesocks: --token-file \/nonexistent\/token cannot be read \(ENOENT\)/],
  ])("exits 2 with one line for %j", (args, message) => {
    const { status, stderr, stdout } = runAgent(args);
    expect(status).toBe(2);
    expect(stdout).toBe("");
    expect(stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(stderr).toMatch(message);
  });

  it("exits 2 when no token is given, and never prints a token", () => {
    const { status, stderr } = runAgent(EDGE, {});
    expect(status).toBe(2);
    expect(stderr).toBe("edgesocks: no token: set EDGESOCKS_TOKEN in the environment or pass --token-file PATH\n");
  });

  it("exits 1 with one line when the listen address is taken", async () => {
    const { createServer } = await import("node:net");
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      const { status, stderr } = runAgent([...EDGE, "--listen", `127.0.0.1:${port}`]);
      expect(status).toBe(1);
      expect(stderr).toBe(`edgesocks: cannot listen on 127.0.0.1:${port}: the address is in use\n`);
    } finally {
      server.close();
    }
  });
});
