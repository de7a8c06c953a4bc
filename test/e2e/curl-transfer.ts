// curl (a client nobody here wrote) running one long transfer that a test watches while it goes:
// when its first bytes came, and how and when it ended. curl-run.ts is for transfers that are
// awaited whole.

import { spawn } from "node:child_process";

/** Bytes per write and the pause between writes of an `--upload-file -` body fed on stdin. */
const FEED_BYTES = 16 * 1024;
const FEED_INTERVAL_MS = 10;

export type CurlEnd = { exitCode: number; stderr: string; stdoutBytes: number; atMs: number };

export type CurlTransfer = {
  /** Resolves once curl has written its first downloaded bytes to stdout. */
  firstBytes: Promise<void>;
  /** Resolves when curl exits, with Date.now() of the exit. */
  ended: Promise<CurlEnd>;
  /** Ends curl if it still runs (the test's cleanup). */
  kill(): void;
};

/**
 * Starts `curl --silent --show-error --no-buffer --max-time N ...args`. With `feedStdin`, curl's
 * stdin gets a body that never ends on its own (FEED_BYTES every FEED_INTERVAL_MS), for an
 * `--upload-file -` that is in flight for as long as the test needs.
 */
export function startCurlTransfer(args: string[], options: { feedStdin?: boolean; maxTimeSeconds?: number } = {}): CurlTransfer {
  const child = spawn("curl", ["--silent", "--show-error", "--no-buffer", "--max-time", String(options.maxTimeSeconds ?? 60), ...args], {
    stdio: [options.feedStdin ? "pipe" : "ignore", "pipe", "pipe"],
  });
  let stderr = "";
  let stdoutBytes = 0;
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const firstBytes = new Promise<void>((resolve) =>
    child.stdout?.on("data", (chunk: Buffer) => {
      stdoutBytes += chunk.byteLength;
      resolve();
    }),
  );
  let feeder: ReturnType<typeof setInterval> | undefined;
  if (options.feedStdin && child.stdin) {
    const stdin = child.stdin;
    // curl closes its stdin when it gives up: a write after that is expected to fail.
    stdin.on("error", () => {});
    const chunk = Buffer.alloc(FEED_BYTES, 0x75);
    feeder = setInterval(() => {
      if (stdin.writableNeedDrain) return;
      stdin.write(chunk);
    }, FEED_INTERVAL_MS);
  }
  const ended = new Promise<CurlEnd>((resolve) =>
    child.once("close", (code) => {
      clearInterval(feeder);
      resolve({ exitCode: code ?? -1, stderr: stderr.trim(), stdoutBytes, atMs: Date.now() });
    }),
  );
  // 'close' waits for stdio to drain; 'exit' is the moment curl gave up, which is what a test times.
  let exitedAtMs: number | undefined;
  child.once("exit", () => (exitedAtMs = Date.now()));
  return {
    firstBytes,
    ended: ended.then((end) => ({ ...end, atMs: exitedAtMs ?? end.atMs })),
    kill: () => {
      clearInterval(feeder);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
}
