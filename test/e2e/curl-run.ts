// Runs curl (a client nobody here wrote) without blocking the event loop the test origins use.

import { spawn } from "node:child_process";

export type CurlRun = { exitCode: number; stdout: string; stderr: string };

/** Runs `curl --silent --show-error --max-time 30 ...args` and resolves with its exit code and output. */
export function runCurl(args: string[]): Promise<CurlRun> {
  return new Promise((resolve) => {
    const child = spawn("curl", ["--silent", "--show-error", "--max-time", "30", ...args]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("close", (code) => resolve({ exitCode: code ?? -1, stdout, stderr }));
  });
}
