// Runs curl (a client nobody here wrote) without blocking the event loop the test origins use.

import { spawn } from "node:child_process";

export type CurlRun = { exitCode: number; stdout: Buffer; stderr: string };

/** Runs `curl --silent --show-error --max-time N ...args`; resolves with its exit code and output. */
export function runCurl(args: string[], maxTimeSeconds = 30): Promise<CurlRun> {
  return new Promise((resolve) => {
    const child = spawn("curl", ["--silent", "--show-error", "--max-time", String(maxTimeSeconds), ...args]);
    const chunks: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("close", (code) => resolve({ exitCode: code ?? -1, stdout: Buffer.concat(chunks), stderr }));
  });
}
