// What every doctor check hands back, and the deadline each one runs under.

import { errorText } from "../error-text.ts";

/**
 * pass: works as this agent expects. warn: works, with a limit the user may accept (an older
 * edge, no fallback for Cloudflare-hosted sites, a clock a little off); it does not fail the
 * doctor's exit status. fail: what it checks does not work. skip: not run, because an earlier
 * check failed or it does not apply (TLS for an http:// edge).
 */
export const CHECK_STATUSES = ["pass", "warn", "fail", "skip"] as const;
export type CheckStatus = (typeof CHECK_STATUSES)[number];

/** One row of the doctor's table. `fix` is one short sentence, set for every warn and fail. */
export type CheckResult = { name: string; status: CheckStatus; detail: string; fix?: string };

/** The checks in the order the doctor runs them for each edge, by the label its table shows. */
export const CheckName = {
  Name: "name resolves",
  Tcp: "TCP connect",
  Tls: "TLS handshake",
  Healthz: "healthz/protocol",
  Token: "token accepted",
  Stream: "test stream",
  Dns: "DNS over edge",
  Cloudflare: "Cloudflare-hosted",
  Clock: "clock",
} as const;
export type CheckName = (typeof CheckName)[keyof typeof CheckName];

/**
 * How long a check waits for one answer: on loopback an answer takes milliseconds and across
 * the internet a few hundred; an edge silent this long is reported as not answering.
 */
export const CHECK_TIMEOUT_MS = 5_000;

export function pass(name: string, detail: string): CheckResult {
  return { name, status: "pass", detail };
}

export function warn(name: string, detail: string, fix: string): CheckResult {
  return { name, status: "warn", detail, fix };
}

export function fail(name: string, detail: string, fix: string): CheckResult {
  return { name, status: "fail", detail, fix };
}

export function skip(name: string, detail: string): CheckResult {
  return { name, status: "skip", detail };
}

/**
 * `run`'s result, or a fail naming the timeout once `timeoutMs` have passed: the backstop that
 * keeps one check from holding the doctor. (Each check also bounds its own sockets and timers,
 * so nothing it started outlives it.) A throw becomes a fail with its message.
 */
export async function withDeadline(name: string, timeoutMs: number, fix: string, run: () => Promise<CheckResult>): Promise<CheckResult> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(() => resolve(fail(name, `no answer within ${timeoutMs} ms`, fix)), timeoutMs);
  });
  try {
    return await Promise.race([run().catch((error: unknown) => fail(name, errorText(error), fix)), expired]);
  } finally {
    clearTimeout(timer);
  }
}


/** The code a Node socket or DNS error carries (ECONNREFUSED, ENOTFOUND, CERT_HAS_EXPIRED), if any. */
export function errorCode(error: unknown): string | undefined {
  const withCode = (error instanceof Error && error.cause instanceof Error ? error.cause : error) as { code?: unknown };
  return typeof withCode?.code === "string" ? withCode.code : undefined;
}
