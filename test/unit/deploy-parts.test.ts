// The pure parts of `edgesocks deploy` (local-agent/deploy/): what it reads in wrangler's output,
// how it merges the config file, where it finds wrangler, and the default config path the agent
// reads (local-agent/config/default-path.ts) when its command line names neither a config nor an edge.

import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseAgentCommand } from "../../local-agent/config/config.ts";
import { defaultConfigPath } from "../../local-agent/config/default-path.ts";
import { mergeConfig, readExistingConfig, tokenFileFor } from "../../local-agent/deploy/config-writer.ts";
import { TokenFileError, readOrCreateToken } from "../../local-agent/deploy/token-store.ts";
import { deployedUrl, saysNotLoggedIn, workerNameFromToml, wranglerFailure } from "../../local-agent/deploy/wrangler-output.ts";
import { findWrangler } from "../../local-agent/deploy/wrangler-runner.ts";

const tempDir = mkdtempSync(join(tmpdir(), "edgesocks-deploy-parts-"));
afterAll(() => rmSync(tempDir, { recursive: true, force: true }));
let counter = 0;
function freshDir(): string {
  const dir = join(tempDir, String(counter++));
  mkdirSync(dir, { recursive: true });
  return dir;
}

describe("wrangler's output", () => {
  // wrangler 4's deploy, as node_modules/wrangler/wrangler-dist/cli.js logs it.
  const WRANGLER_4 = [
    " ⛅️ wrangler 4.164.0",
    "───────────────────",
    "Total Upload: 412.03 KiB / gzip: 79.88 KiB",
    "Uploaded edgesocks (3.21 sec)",
    "Deployed edgesocks triggers (1.02 sec)",
    "  https://edgesocks.alice.workers.dev",
    "Current Version ID: 6f0b3c1e-0d2a-4c57-9a43-1f7b2d8e9c10",
  ].join("\n");

  it("finds the workers.dev URL under Deployed NAME triggers", () => {
    expect(deployedUrl(WRANGLER_4)).toBe("https://edgesocks.alice.workers.dev");
  });

  it("reads it through colour codes and CRLF line ends", () => {
    expect(deployedUrl(WRANGLER_4.replaceAll("\n", "\r\n").replace("https://", "\x1b[36mhttps://").replace(".dev", ".dev\x1b[39m"))).toBe("https://edgesocks.alice.workers.dev");
  });

  it("prefers the workers.dev target to a route or custom domain listed first", () => {
    const output = "Deployed edgesocks triggers (1.02 sec)\n  proxy.example.com (custom domain)\n  example.com/* (zone name: example.com)\n  https://edgesocks.alice.workers.dev\nCurrent Version ID: x";
    expect(deployedUrl(output)).toBe("https://edgesocks.alice.workers.dev");
  });

  it("reads wrangler 2's Published NAME line", () => {
    expect(deployedUrl("Uploaded edgesocks (1.23 sec)\nPublished edgesocks (0.31 sec)\n  https://edgesocks.bob.workers.dev\n")).toBe("https://edgesocks.bob.workers.dev");
  });

  it("finds no URL when only a custom domain or no target was deployed", () => {
    expect(deployedUrl("Deployed edgesocks triggers (1.02 sec)\n  proxy.example.com (custom domain)\nCurrent Version ID: x")).toBeUndefined();
    expect(deployedUrl("Uploaded edgesocks (1.2 sec)\nNo targets deployed for edgesocks (0.3 sec)\n")).toBeUndefined();
  });

  it("tells a not-logged-in whoami from a logged-in one", () => {
    expect(saysNotLoggedIn("Getting User settings...\nYou are not authenticated. Please run `wrangler login`.\n")).toBe(true);
    expect(saysNotLoggedIn("Getting User settings...\n👋 You are logged in with an OAuth Token, associated with the email a@example.com.\n")).toBe(false);
    expect(saysNotLoggedIn("You are logged in with an User API Token.\nℹ️  The API Token is read from the CLOUDFLARE_API_TOKEN environment variable.")).toBe(false);
  });

  it("makes one line of wrangler's error: its [ERROR] summary and first detail", () => {
    const output = "\n✘ [ERROR] A request to the Cloudflare API (/accounts/x/workers/scripts/edgesocks) failed.\n\n  Authentication error [code: 10000]\n\n📎 It looks like you are authenticating...\n";
    expect(wranglerFailure(output)).toBe("A request to the Cloudflare API (/accounts/x/workers/scripts/edgesocks) failed: Authentication error [code: 10000]");
    expect(wranglerFailure("\x1b[31m✘ \x1b[41;31m[\x1b[41;97mERROR\x1b[41;31m]\x1b[0m \x1b[1mMissing entry-point\x1b[0m\n")).toBe("Missing entry-point");
    expect(wranglerFailure("something odd\nthe last words\n\n")).toBe("the last words");
    expect(wranglerFailure(`✘ [ERROR] ${"x".repeat(1000)}`)).toHaveLength(301);
  });

  it("reads the Worker's name from wrangler.toml, top level only", () => {
    expect(workerNameFromToml(readFileSync(join(import.meta.dirname, "..", "..", "wrangler.toml"), "utf8"))).toBe("edgesocks");
    expect(workerNameFromToml("main = 'x.ts'\nname = 'mine'\n")).toBe("mine");
    expect(workerNameFromToml('[env.staging]\nname = "staging"\n')).toBeUndefined();
  });
});

describe("the config file deploy writes", () => {
  const URL_A = "https://edgesocks.alice.workers.dev";
  const URL_B = "https://second.alice.workers.dev";

  it("starts a new file with the edge and a tokenFile beside it", () => {
    const dir = freshDir();
    const config = join(dir, "config.json");
    const plan = mergeConfig(undefined, config, URL_A, join(dir, "token"));
    expect(plan.changed).toBe(true);
    expect(JSON.parse(plan.text)).toEqual({ edge: URL_A, tokenFile: "token" });
  });

  it("turns one edge into a list for a second Worker and keeps every other setting", () => {
    const dir = freshDir();
    const config = join(dir, "config.json");
    const user = { listen: "127.0.0.1:1081", edge: URL_A, tokenFile: "/elsewhere/token", rules: [{ route: "direct", suffix: "corp.example" }], logLevel: "debug" };
    writeFileSync(config, JSON.stringify(user));
    const existing = readExistingConfig(config);
    expect(tokenFileFor(config, existing)).toBe("/elsewhere/token");
    const plan = mergeConfig(existing, config, URL_B, "/elsewhere/token");
    expect(plan.addedEdge).toBe(true);
    expect(JSON.parse(plan.text)).toEqual({ ...user, edge: [URL_A, URL_B] });
  });

  it("leaves a file that already names the edge byte for byte as it was, however the URL is written there", () => {
    const dir = freshDir();
    const config = join(dir, "config.json");
    const text = `{"edge": ["${URL_A}/", "${URL_B}"],   "tokenFile": "token"}`;
    writeFileSync(config, text);
    const plan = mergeConfig(readExistingConfig(config), config, URL_A, join(dir, "token"));
    expect(plan).toEqual({ text, changed: false, edges: [`${URL_A}/`, URL_B], addedEdge: false });
  });

  it("adds a tokenFile to a file that had none, by absolute path when it is not beside it", () => {
    const dir = freshDir();
    const config = join(dir, "config.json");
    writeFileSync(config, JSON.stringify({ edge: URL_A }));
    const plan = mergeConfig(readExistingConfig(config), config, URL_A, "/var/lib/edgesocks/token");
    expect(JSON.parse(plan.text)).toEqual({ edge: URL_A, tokenFile: "/var/lib/edgesocks/token" });
  });

  it("refuses an existing file the agent would refuse, naming the field", () => {
    const dir = freshDir();
    const config = join(dir, "config.json");
    writeFileSync(config, JSON.stringify({ edge: URL_A, tokn: "x" }));
    expect(() => readExistingConfig(config)).toThrow(/config\.json: tokn: unknown field/);
  });
});

describe("the token file", () => {
  it("is made with 43 base64url characters, mode 0600, and kept as it is the next time", () => {
    const path = join(freshDir(), "sub", "token");
    const made = readOrCreateToken(path);
    expect(made.created).toBe(true);
    expect(made.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readOrCreateToken(path)).toEqual({ token: made.token, created: false, tightened: false });
  });

  it("is tightened to 0600 when others could read it", () => {
    const path = join(freshDir(), "token");
    writeFileSync(path, "kept-token-0123456789-abcdef\n", { mode: 0o644 });
    chmodSync(path, 0o644);
    expect(readOrCreateToken(path)).toEqual({ token: "kept-token-0123456789-abcdef", created: false, tightened: true });
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it.each([["", /is empty/], ["tiny-x", /shorter than/], ["two-tokens-0123456789,another-0123456789", /one token/]])("refuses a file holding %j, without quoting it", (content, message) => {
    const path = join(freshDir(), "token");
    writeFileSync(path, content, { mode: 0o600 });
    expect(() => readOrCreateToken(path)).toThrow(TokenFileError);
    expect(() => readOrCreateToken(path)).toThrow(message);
    if (content !== "") expect(() => readOrCreateToken(path)).not.toThrow(content);
  });
});

describe("finding wrangler", () => {
  it("takes the first executable wrangler on PATH, then the package's own, else none", () => {
    const noExec = freshDir();
    writeFileSync(join(noExec, "wrangler"), "#!/bin/sh\n", { mode: 0o644 });
    const onPath = freshDir();
    writeFileSync(join(onPath, "wrangler"), "#!/bin/sh\n", { mode: 0o755 });
    const pkg = freshDir();
    mkdirSync(join(pkg, "node_modules", ".bin"), { recursive: true });
    mkdirSync(join(pkg, "node_modules", "wrangler", "bin"), { recursive: true });
    writeFileSync(join(pkg, "node_modules", "wrangler", "bin", "wrangler.js"), "");
    symlinkSync("../wrangler/bin/wrangler.js", join(pkg, "node_modules", ".bin", "wrangler"));
    const empty = freshDir();

    expect(findWrangler(`${noExec}:${onPath}`, pkg, "linux")).toEqual({ command: join(onPath, "wrangler"), prefixArgs: [], label: join(onPath, "wrangler"), shell: false });
    // The package's bin runs with this Node, not the `node` on PATH.
    expect(findWrangler(noExec, pkg, "linux")).toEqual({ command: process.execPath, prefixArgs: [join(pkg, "node_modules", "wrangler", "bin", "wrangler.js")], label: join(pkg, "node_modules", ".bin", "wrangler"), shell: false });
    expect(findWrangler(noExec, empty, "linux")).toBeUndefined();
    expect(findWrangler(undefined, empty, "linux")).toBeUndefined();
  });
});

describe("the default config file", () => {
  it("is under XDG_CONFIG_HOME when it is absolute, else ~/.config, and %APPDATA% on Windows", () => {
    expect(defaultConfigPath({ HOME: "/home/a" }, "linux")).toBe("/home/a/.config/edgesocks/config.json");
    expect(defaultConfigPath({ HOME: "/Users/a" }, "darwin")).toBe("/Users/a/.config/edgesocks/config.json");
    expect(defaultConfigPath({ HOME: "/home/a", XDG_CONFIG_HOME: "/xdg" }, "linux")).toBe("/xdg/edgesocks/config.json");
    expect(defaultConfigPath({ HOME: "/home/a", XDG_CONFIG_HOME: "relative/dir" }, "linux")).toBe("/home/a/.config/edgesocks/config.json");
    expect(defaultConfigPath({ APPDATA: "C:\\Users\\a\\AppData\\Roaming", HOME: "/x" }, "win32")).toMatch(/AppData.Roaming.edgesocks.config\.json$/);
  });

  it("is read by the agent when its command line names neither --config nor --edge", () => {
    const home = freshDir();
    mkdirSync(join(home, ".config", "edgesocks"), { recursive: true });
    writeFileSync(join(home, ".config", "edgesocks", "config.json"), JSON.stringify({ edge: "https://edgesocks.alice.workers.dev", tokenFile: "token", listen: "127.0.0.1:1081" }));
    writeFileSync(join(home, ".config", "edgesocks", "token"), "default-config-token-0123456789\n", { mode: 0o600 });
    const env = { HOME: home };
    const alone = parseAgentCommand([], env);
    if (alone.kind !== "run") throw new Error("expected a run");
    expect(alone.config.edgeLabel).toBe("https://edgesocks.alice.workers.dev");
    expect(alone.config.token).toBe("default-config-token-0123456789");
    expect(alone.config.listenPort).toBe(1081);
    // An edge on the command line is a setup of its own: the default file is not read.
    const named = parseAgentCommand(["--edge", "http://127.0.0.1:8787"], { ...env, EDGESOCKS_TOKEN: "env-token-0123456789-abcdef" });
    if (named.kind !== "run") throw new Error("expected a run");
    expect(named.config.token).toBe("env-token-0123456789-abcdef");
    expect(named.config.listenPort).toBe(1080);
  });
});
