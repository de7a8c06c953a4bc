// What a failed request or socket says, in a few words, for a log line or a check's detail:
// fetch wraps every network error in "fetch failed" and keeps the socket's own in `cause`.

import { isTimeout } from "../worker/dial/bounded-body.ts";

/** An error's message in a few words: its cause's, when fetch wrapped it ("fetch failed"). */
export function errorText(error: unknown): string {
  if (error instanceof Error && error.cause instanceof Error) return error.cause.message;
  return error instanceof Error ? error.message : String(error);
}

/** Why a fetch with AbortSignal.timeout(timeoutMs) got no answer: the timeout, or the socket's error. */
export function fetchFailureText(error: unknown, timeoutMs: number): string {
  return isTimeout(error) ? `no answer within ${timeoutMs} ms` : errorText(error);
}
