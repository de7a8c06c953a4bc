// Leveled, one-line logging to stderr. Callers never pass secrets; nothing here prints stacks.

import type { LogLevel } from "./config/config.ts";

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export type Logger = {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
};

/** A logger that writes lines at `level` and above to stderr, each with a timestamp and level. */
export function createLogger(level: LogLevel, write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  const at = (lineLevel: LogLevel) => (message: string) => {
    if (RANK[lineLevel] <= RANK[level]) write(`${new Date().toISOString()} ${lineLevel} ${message}\n`);
  };
  return { error: at("error"), warn: at("warn"), info: at("info"), debug: at("debug") };
}

/** Bytes in a short human unit for log lines: 512B, 1.5KiB, 64.0MiB. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes}B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)}KiB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)}MiB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(2)}GiB`;
}
