// Finding and running wrangler for `edgesocks deploy`. Wrangler is a dev dependency: a clone has
// it in node_modules/.bin, an installed package does not, so the one on PATH comes first.
// Every run has a deadline, its output is kept (bounded) rather than shown, and a secret goes
// to its stdin only: argv is visible to every user in the process list.

import { spawn } from "node:child_process";
import { accessSync, constants, realpathSync, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { PACKAGE_ROOT } from "../package-root.ts";

/** The package's root: where wrangler.toml and worker/ are, in a clone and in the packed package alike. */
export { PACKAGE_ROOT };
/** A wrangler command still running after this long is stopped (a deploy uploads a few hundred KiB). */
export const WRANGLER_TIMEOUT_MS = 5 * 60_000;
/** What is kept of a command's output: its last bytes, where the result and the errors are. */
const MAX_OUTPUT_CHARS = 256 * 1024;

/** How to start wrangler: the executable and the arguments that come before wrangler's own. */
export type Wrangler = { command: string; prefixArgs: string[]; label: string; shell: boolean };

export type WranglerRun = { status: number | null; output: string; timedOut: boolean; spawnError?: string };

/** Wrangler on `pathEnv` first, else `packageRoot`'s node_modules/.bin/wrangler (run with this Node); undefined when neither exists. */
export function findWrangler(pathEnv: string | undefined, packageRoot = PACKAGE_ROOT, platform: NodeJS.Platform = process.platform): Wrangler | undefined {
  const names = platform === "win32" ? ["wrangler.cmd", "wrangler.exe", "wrangler"] : ["wrangler"];
  for (const dir of (pathEnv ?? "").split(delimiter)) {
    if (dir === "") continue;
    for (const name of names) {
      const candidate = join(dir, name);
      if (isExecutable(candidate)) return { command: candidate, prefixArgs: [], label: candidate, shell: name.endsWith(".cmd") };
    }
  }
  const local = join(packageRoot, "node_modules", ".bin", "wrangler");
  try {
    // The bin is a `#!/usr/bin/env node` script: run it with this Node (22), not whatever `node`
    // PATH has, which may be older than wrangler's minimum.
    const script = realpathSync(local);
    if (statSync(script).isFile()) return { command: process.execPath, prefixArgs: [script], label: local, shell: false };
  } catch {
    // not installed here either
  }
  return undefined;
}

function isExecutable(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `wrangler ...args` in `cwd`; `stdin`, when given, is written to its standard input and
 * closed (otherwise stdin is closed at once, so no prompt waits for a terminal). Never rejects.
 */
export function runWrangler(wrangler: Wrangler, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv; stdin?: string; timeoutMs?: number }): Promise<WranglerRun> {
  return new Promise((resolve) => {
    let output = "";
    let timedOut = false;
    const child = spawn(wrangler.command, [...wrangler.prefixArgs, ...args], {
      cwd: options.cwd,
      env: options.env,
      stdio: ["pipe", "pipe", "pipe"],
      shell: wrangler.shell,
      windowsHide: true,
    });
    const keep = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      if (output.length > MAX_OUTPUT_CHARS) output = output.slice(-MAX_OUTPUT_CHARS);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    // A wrangler that exits before reading its stdin closes the pipe: that is its exit to report, not ours.
    child.stdin.on("error", () => {});
    child.stdin.end(options.stdin ?? "");
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGTERM");
    }, options.timeoutMs ?? WRANGLER_TIMEOUT_MS);
    child.once("error", (error) => {
      clearTimeout(timer);
      resolve({ status: null, output, timedOut, spawnError: error.message });
    });
    child.once("close", (status) => {
      clearTimeout(timer);
      resolve({ status, output, timedOut });
    });
  });
}
