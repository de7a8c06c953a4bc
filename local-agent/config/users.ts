// Client credentials: the users allowed to use the agent when it authenticates clients.

import { createHash, timingSafeEqual } from "node:crypto";

/** User name to password. Empty: the agent serves without authentication (loopback only). */
export type Users = ReadonlyMap<string, string>;

/**
 * True when `name` is a user and `password` is theirs. Both sides are hashed first, so the
 * comparison takes the same time whatever the lengths, and a wrong name costs what a wrong
 * password does.
 */
export function checkCredentials(users: Users, name: string, password: string): boolean {
  const expected = users.get(name);
  const given = digest(password);
  const wanted = digest(expected ?? `\u0000no such user\u0000${password}`);
  return timingSafeEqual(given, wanted) && expected !== undefined;
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
