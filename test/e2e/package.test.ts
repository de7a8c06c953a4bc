// The package as a user gets it. `npm pack` compiles the agent into dist/ and packs what runs and
// what `edgesocks deploy` needs (the Worker's sources and wrangler.toml), without the tests and
// benchmarks. Installed globally and into a project, its `edgesocks` command starts on every Node
// here that `engines` admits, and carries curl through a real edge run from the packed Worker.
//
// The dependencies come from a registry on loopback that serves the very tarballs `npm ci` left
// in npm's cache, at the versions package-lock.json pins. `npm install --offline` cannot stand in
// for it: npm 11 resolves a new dependency from the full packument, `npm ci` caches only the
// abbreviated one, and so an offline install of the tarball fails (ENOTCACHED for hono).

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCurl } from "./curl-run.ts";
import { startHttpOrigin, type HttpOrigin } from "./origins.ts";
import { repoRoot, startEdge, type RunningEdge } from "./processes.ts";
import { EDGESOCKS_VERSION } from "../../worker/version.ts";

type Run = { status: number | null; stdout: string; stderr: string };

/** Runs a command to its end without blocking the event loop (the loopback registry lives in it). */
function run(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
    child.once("error", reject);
    child.once("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** Fails with everything the command printed unless it exited 0. */
function succeeded(result: Run, what: string): Run {
  if (result.status !== 0) throw new Error(`${what} exited ${result.status}:\n${result.stdout}\n${result.stderr}`);
  return result;
}

const packageJson = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
  name: string;
  version: string;
  engines: { node: string };
  dependencies: Record<string, string>;
  optionalDependencies?: Record<string, string>;
};

/** PATH without this checkout's node_modules/.bin: the installed command must not lean on the clone. */
const basePath = (process.env.PATH ?? "")
  .split(delimiter)
  .filter((entry) => entry !== "" && !entry.startsWith(join(repoRoot, "node_modules")))
  .join(delimiter);

/** The environment a user's shell gives npm and the command: none of the npm_* settings `npm test` exported. */
function userEnv(path: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!/^npm_/i.test(key)) env[key] = value;
  return { ...env, PATH: path, EDGESOCKS_TOKEN: "", ...extra };
}

/** `engines.node` as its one lower bound; any other form is a change this test must hear about. */
function enginesMinimum(): [number, number, number] {
  const match = /^>=(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(packageJson.engines.node);
  if (!match) throw new Error(`engines.node is ${JSON.stringify(packageJson.engines.node)}; this test reads only ">=MAJOR[.MINOR[.PATCH]]"`);
  return [Number(match[1]), Number(match[2] ?? 0), Number(match[3] ?? 0)];
}

function versionAtLeast(version: string, minimum: [number, number, number]): boolean {
  const parts = version.replace(/^v/, "").split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const part = parts[i] ?? 0;
    const wanted = minimum[i] ?? 0;
    if (part !== wanted) return part > wanted;
  }
  return true;
}

type NodeHere = { version: string; binary: string };

/** Every distinct Node on this machine: the one running the tests and each `node` on PATH. */
function nodesHere(): NodeHere[] {
  const candidates = [process.execPath, ...basePath.split(delimiter).map((entry) => join(entry, "node"))];
  const seen = new Map<string, NodeHere>();
  for (const candidate of candidates) {
    if (!existsSync(candidate)) continue;
    const binary = realpathSync(candidate);
    if (seen.has(binary)) continue;
    const result = spawnSync(binary, ["--version"], { encoding: "utf8" });
    if (result.status === 0) seen.set(binary, { version: result.stdout.trim(), binary });
  }
  return [...seen.values()];
}

const allNodes = nodesHere();
const nodes = allNodes.filter((node) => versionAtLeast(node.version, enginesMinimum()));
const nodesWithoutTypeStripping = allNodes.filter((node) => !versionAtLeast(node.version, [22, 18, 0]) && versionAtLeast(node.version, [20, 0, 0]));

type LockedPackage = { name: string; version: string; integrity: string; location: string };

/** The package's dependencies and theirs, as package-lock.json pins them. */
function lockedDependencies(): LockedPackage[] {
  const lock = JSON.parse(readFileSync(join(repoRoot, "package-lock.json"), "utf8")) as {
    packages: Record<string, { version?: string; integrity?: string; dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> }>;
  };
  const found = new Map<string, LockedPackage>();
  const visit = (name: string, from: string) => {
    // Node's lookup: the dependent's own node_modules first, then each folder above it.
    let location: string | undefined;
    for (let base = from; ; base = base.includes("/node_modules/") ? base.slice(0, base.lastIndexOf("/node_modules/")) : "") {
      const candidate = base === "" ? `node_modules/${name}` : `${base}/node_modules/${name}`;
      if (lock.packages[candidate]) {
        location = candidate;
        break;
      }
      if (base === "") break;
    }
    const entry = location === undefined ? undefined : lock.packages[location];
    if (location === undefined || !entry?.version || !entry.integrity) throw new Error(`package-lock.json pins no ${name} for ${from || "the package"}`);
    if (found.has(location)) return;
    found.set(location, { name, version: entry.version, integrity: entry.integrity, location });
    for (const child of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies })) visit(child, location);
  };
  for (const name of Object.keys({ ...packageJson.dependencies, ...packageJson.optionalDependencies })) visit(name, "");
  return [...found.values()];
}

type Registry = { url: string; served: string[]; close(): Promise<void> };

/** An npm registry on loopback holding one version of each package: the tarball npm's cache has. */
async function startLoopbackRegistry(packages: (LockedPackage & { tarball: Buffer; manifest: Record<string, unknown> })[]): Promise<Registry> {
  const served: string[] = [];
  let url = "";
  const server: Server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? "/", "http://registry").pathname).slice(1);
    served.push(path);
    const tarballOf = packages.find((entry) => path === `${entry.name}/-/${tarballName(entry)}`);
    if (tarballOf) {
      response.writeHead(200, { "Content-Type": "application/octet-stream" }).end(tarballOf.tarball);
      return;
    }
    const entry = packages.find((candidate) => candidate.name === path);
    if (!entry) {
      response.writeHead(404, { "Content-Type": "application/json" }).end(`{"error":"not found"}`);
      return;
    }
    const dist = { tarball: `${url}/${entry.name}/-/${tarballName(entry)}`, integrity: entry.integrity };
    const packument = { name: entry.name, "dist-tags": { latest: entry.version }, versions: { [entry.version]: { ...entry.manifest, dist } } };
    response.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(packument));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    url,
    served,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function tarballName(entry: { name: string; version: string }): string {
  return `${entry.name.replace(/^@[^/]+\//, "")}-${entry.version}.tgz`;
}

type RunningInstalledAgent = { port: number; child: ChildProcess; waitForLog(pattern: RegExp): Promise<string> };

const running = new Set<ChildProcess>();

/** Starts the installed command `bin` (its `#!/usr/bin/env node` finds the Node first on `path`) in a process group of its own. */
async function startInstalledAgent(bin: string, path: string, edge: RunningEdge): Promise<RunningInstalledAgent> {
  const child = spawn(bin, ["--edge", edge.url, "--listen", "127.0.0.1:0", "--bypass", "none"], {
    cwd: tempDir,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: userEnv(path, { EDGESOCKS_TOKEN: edge.token }),
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  let stdout = "";
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within 20 s; stdout: ${stdout}\nstderr: ${stderr}`)), 20_000);
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /proxy on 127\.0\.0\.1:(\d+) -> edge /.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the installed agent exited ${code}: ${stderr}`));
    });
  });
  const waitForLog = async (pattern: RegExp): Promise<string> => {
    for (const deadline = Date.now() + 10_000; ; await new Promise((resolve) => setTimeout(resolve, 20))) {
      const line = stderr.split("\n").find((candidate) => pattern.test(candidate));
      if (line !== undefined) return line;
      if (Date.now() > deadline) throw new Error(`no log line of the installed agent matches ${pattern}; its log:\n${stderr}`);
    }
  };
  return { port, child, waitForLog };
}

/** SIGTERM to the agent's process group, SIGKILL after 5 s; resolves with how it ended. */
async function stopGroup(child: ChildProcess): Promise<number | string> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? child.signalCode ?? -1;
  const exited = new Promise<number | string>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? -1)));
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-(child.pid ?? 0), signal);
    } catch {
      // already gone
    }
  };
  signalGroup("SIGTERM");
  const timer = setTimeout(() => signalGroup("SIGKILL"), 5_000);
  const how = await exited;
  clearTimeout(timer);
  signalGroup("SIGKILL");
  return how;
}

/** A folder holding only `node`, for the front of PATH: which Node a `#!/usr/bin/env node` script gets. */
function pathWithNode(node: NodeHere): string {
  const dir = join(tempDir, "nodes", node.version);
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true });
    symlinkSync(node.binary, join(dir, "node"));
  }
  return `${dir}${delimiter}${basePath}`;
}

const tempDir = mkdtempSync(join(tmpdir(), "edgesocks-e2e-package-"));
const globalPrefix = join(tempDir, "global");
const projectDir = join(tempDir, "project");
const installedBin = join(globalPrefix, "bin", "edgesocks");
const installedPackage = join(globalPrefix, "lib", "node_modules", packageJson.name);
/** The Node running the tests (the project's pinned one), which runs npm for the installs. */
const testNode = nodes.find((node) => node.binary === realpathSync(process.execPath));
let packedFiles: string[] = [];
/** The .ts files under local-agent/ and worker/ just before `npm pack` (others may add some while tests run). */
let sourcesBeforePack: string[] = [];
let registry: Registry | undefined;
let edge: RunningEdge | undefined;
let origin: HttpOrigin | undefined;

beforeAll(async () => {
  if (!testNode) throw new Error(`the Node running the tests (${process.version}) is outside engines.node ${packageJson.engines.node}`);
  const npmPath = pathWithNode(testNode);

  // npm pack runs prepack, which builds dist/ from this checkout's sources.
  sourcesBeforePack = ["local-agent", "worker"].flatMap((dir) =>
    (readdirSync(join(repoRoot, dir), { recursive: true }) as string[]).filter((file) => file.endsWith(".ts")).map((file) => `${dir}/${file.split("\\").join("/")}`),
  );
  const packed = succeeded(await run("npm", ["pack", "--json", "--pack-destination", tempDir], { cwd: repoRoot, env: userEnv(npmPath) }), "npm pack");
  const [report] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  if (!report) throw new Error(`npm pack reported nothing: ${packed.stdout}`);
  packedFiles = report.files.map((file) => file.path).sort();
  const tarball = join(tempDir, report.filename);

  // The dependencies' own tarballs, from npm's cache (what `npm ci` downloaded), never the internet.
  const locked = lockedDependencies();
  const depsDir = join(tempDir, "deps");
  mkdirSync(depsDir);
  const fromCache = await run("npm", ["pack", "--offline", "--json", "--pack-destination", depsDir, ...locked.map((entry) => `${entry.name}@${entry.version}`)], { cwd: depsDir, env: userEnv(npmPath) });
  succeeded(fromCache, "npm pack --offline of the locked dependencies (npm's cache must hold what npm ci fetched)");
  const cached = JSON.parse(fromCache.stdout) as { name: string; version: string; filename: string; integrity: string }[];
  registry = await startLoopbackRegistry(
    locked.map((entry) => {
      const tarballReport = cached.find((candidate) => candidate.name === entry.name && candidate.version === entry.version);
      if (tarballReport?.integrity !== entry.integrity) throw new Error(`npm's cache gave ${entry.name}@${entry.version} with integrity ${tarballReport?.integrity}, not the lock's ${entry.integrity}`);
      const manifest = JSON.parse(readFileSync(join(repoRoot, entry.location, "package.json"), "utf8")) as Record<string, unknown>;
      return { ...entry, tarball: readFileSync(join(depsDir, tarballReport.filename)), manifest };
    }),
  );

  // A cache of its own: what the installs fetch can only come from the loopback registry.
  const npmFlags = ["--registry", `${registry.url}/`, "--cache", join(tempDir, "npm-cache"), "--no-audit", "--no-fund", "--no-update-notifier"];
  succeeded(await run("npm", ["install", "--global", "--prefix", globalPrefix, ...npmFlags, tarball], { cwd: tempDir, env: userEnv(npmPath) }), "npm install --global");
  mkdirSync(projectDir);
  writeFileSync(join(projectDir, "package.json"), `${JSON.stringify({ name: "uses-edgesocks", private: true })}\n`);
  const intoProject = run("npm", ["install", ...npmFlags, tarball], { cwd: projectDir, env: userEnv(npmPath) }).then((result) => succeeded(result, "npm install in a project"));
  // Meanwhile the edge starts, running the Worker from the global install (its worker/ and
  // wrangler.toml, and the hono npm installed beside it): what `edgesocks deploy` hands wrangler.
  const edgeStarted = startEdge({}, installedPackage).then((started) => (edge = started));
  const failed = (await Promise.allSettled([intoProject, edgeStarted])).find((outcome) => outcome.status === "rejected");
  if (failed) throw failed.reason;
  origin = await startHttpOrigin();
}, 120_000);

afterAll(async () => {
  await Promise.all([...running].map((child) => stopGroup(child)));
  await edge?.stop();
  await origin?.close();
  await registry?.close();
  rmSync(tempDir, { recursive: true, force: true });
});

describe("the npm package", () => {
  it("holds the compiled agent with every module under local-agent/, the Worker's sources, wrangler.toml and the docs", () => {
    expect(packedFiles).toEqual(expect.arrayContaining(["package.json", "README.md", "bin/edgesocks.js", "wrangler.toml", "worker/index.ts", "worker/protocol/index.ts", "docs/protocol.md"]));
    // Every agent module, read from the tree as npm pack found it: one the build missed fails here.
    const agentModules = sourcesBeforePack.filter((file) => file.startsWith("local-agent/") && file !== "local-agent/cli/dev.ts").map((file) => `dist/${file.replace(/\.ts$/, ".js")}`);
    expect(agentModules.length).toBeGreaterThan(20);
    expect(packedFiles).toEqual(expect.arrayContaining([...agentModules, "dist/worker/protocol/index.js", "dist/worker/version.js"]));
    // Every Worker source ships as TypeScript, for wrangler to bundle.
    const workerSources = sourcesBeforePack.filter((file) => file.startsWith("worker/"));
    expect(workerSources.length).toBeGreaterThan(20);
    expect(packedFiles).toEqual(expect.arrayContaining(workerSources));
  });

  it("holds no tests, benchmarks, CI, TypeScript sources of the agent or npm start's dev script", () => {
    expect(packedFiles.length).toBeGreaterThan(0);
    const unwanted = packedFiles.filter(
      (file) => /^(test|\.ci|local-agent|node_modules|\.wrangler|test-results)\//.test(file) || /bench/i.test(file.replace(/^docs\/benchmarks\.md$/, "")) || /tsconfig/.test(file) || file === "dist/local-agent/cli/dev.js" || (file.startsWith("dist/") && !file.endsWith(".js")),
    );
    expect(unwanted).toEqual([]);
  });

  it("installs with its dependencies from nothing but the registry npm is given", () => {
    // A fresh cache and a loopback registry: a package that needed anything else would not have installed.
    const names = registry?.served.filter((path) => !path.includes("/-/")).sort();
    expect(names).toEqual(expect.arrayContaining(Object.keys(packageJson.dependencies)));
    expect(existsSync(join(installedPackage, "node_modules", "ws", "package.json"))).toBe(true);
    expect(relative(globalPrefix, realpathSync(installedBin))).toBe(join("lib", "node_modules", packageJson.name, "bin", "edgesocks.js"));
  });

  it("names in engines.node a Node this machine has", () => {
    expect(nodes.map((node) => node.version)).toContain(process.version);
  });

  describe.each(nodes.map((node) => [node.version, node] as const))("on Node %s", (_version, node) => {
    it("the global command answers --version and --help", async () => {
      const env = userEnv(pathWithNode(node));
      const version = await run(installedBin, ["--version"], { cwd: tempDir, env, timeoutMs: 20_000 });
      expect(version).toEqual({ status: 0, stdout: `edgesocks ${EDGESOCKS_VERSION}\n`, stderr: "" });
      const help = await run(installedBin, ["--help"], { cwd: tempDir, env, timeoutMs: 20_000 });
      expect(help.stderr).toBe("");
      expect(help.status).toBe(0);
      expect(help.stdout).toMatch(/^Usage: edgesocks \[run\] \[options\]/);
      expect(help.stdout).toContain("--edge URL");
    });

    it("the installed deploy finds the package's own wrangler.toml and Worker (dist/ sits one folder deeper than the sources)", async () => {
      // --dry-run runs nothing; the stand-in wrangler on PATH only has to be found.
      const env = userEnv(`${join(repoRoot, "test", "e2e", "stand-in")}${delimiter}${pathWithNode(node)}`, { HOME: tempDir, XDG_CONFIG_HOME: join(tempDir, "xdg") });
      const result = await run(installedBin, ["deploy", "--dry-run"], { cwd: tempDir, env, timeoutMs: 20_000 });
      expect(result.stderr).toBe("");
      expect(result.status).toBe(0);
      expect(result.stdout).toContain(` in ${realpathSync(installedPackage)}: whoami;`);
    });

    it("npx edgesocks in a project that installed the package answers --version", async () => {
      const result = await run("npx", ["--no-install", "edgesocks", "--version"], { cwd: projectDir, env: userEnv(pathWithNode(node)), timeoutMs: 30_000 });
      expect(result).toEqual({ status: 0, stdout: `edgesocks ${EDGESOCKS_VERSION}\n`, stderr: "" });
    });

    it("the installed agent carries curl's download through the edge intact, then stops cleanly on SIGTERM", async () => {
      if (!edge || !origin) throw new Error("no edge or origin");
      const agent = await startInstalledAgent(installedBin, pathWithNode(node), edge);
      const id = `package-${node.version}`;
      const bytes = 3 * 1024 * 1024 + 17;
      const curl = await runCurl(["--socks5-hostname", `127.0.0.1:${agent.port}`, `http://127.0.0.1:${origin.port}/blob?bytes=${bytes}&id=${id}`]);
      expect(curl.stderr).toBe("");
      expect(curl.exitCode).toBe(0);
      expect(curl.stdout.byteLength).toBe(bytes);
      expect(createHash("sha256").update(curl.stdout).digest("hex")).toBe(origin.sentHashes.get(id));
      // --bypass none: the loopback origin is reached through the edge, not directly.
      await agent.waitForLog(new RegExp(`-> 127\\.0\\.0\\.1:${origin.port} via edge .* ok$`));
      expect(await stopGroup(agent.child)).toBe(0);
    });
  });

  it("in the clone, npx edgesocks answers --version on the project's Node", async () => {
    // PATH as `npm test` has it: npx finds the project's own bin and its node_modules/.bin/node.
    const result = await run("npx", ["--no-install", "edgesocks", "--version"], { cwd: repoRoot, env: userEnv(process.env.PATH ?? ""), timeoutMs: 30_000 });
    expect(result).toEqual({ status: 0, stdout: `edgesocks ${EDGESOCKS_VERSION}\n`, stderr: "" });
  });

  it.runIf(nodesWithoutTypeStripping.length > 0)("in the clone, a Node without type stripping gets one line saying which Node it needs, even with dist/ built", async () => {
    const [oldNode] = nodesWithoutTypeStripping;
    if (!oldNode) return;
    expect(existsSync(join(repoRoot, "dist", "local-agent", "cli", "main.js"))).toBe(true);
    const result = await run(oldNode.binary, [join(repoRoot, "bin", "edgesocks.js"), "--version"], { cwd: repoRoot, env: userEnv(basePath), timeoutMs: 20_000 });
    expect(result.status).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(new RegExp(`^edgesocks: this checkout runs its TypeScript sources, which need Node 22\\.18 or newer, and this is Node ${oldNode.version.replaceAll(".", "\\.")} \\(.*\\); run npx edgesocks inside the checkout, which uses the project's Node 22\\n$`));
  });
});

