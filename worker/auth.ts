// Bearer-token checks for the Worker's endpoints (refusal.ts turns them into the 401).

const encoder = new TextEncoder();

/** The token from an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(authorization: string | null): string | undefined {
  if (!authorization) return undefined;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
  return match?.[1];
}

/**
 * True when `presented` equals one of `configured`, in time that depends on neither value:
 * both sides are hashed to equal-length digests and compared with timingSafeEqual, and every
 * configured token is checked even after a match.
 */
export async function tokenMatches(presented: string, configured: readonly string[]): Promise<boolean> {
  const presentedDigest = await sha256(presented);
  let matched = false;
  for (const token of configured) {
    const equal = crypto.subtle.timingSafeEqual(presentedDigest, await sha256(token));
    matched = matched || equal;
  }
  return matched;
}

async function sha256(text: string): Promise<ArrayBuffer> {
  return crypto.subtle.digest("SHA-256", encoder.encode(text));
}
