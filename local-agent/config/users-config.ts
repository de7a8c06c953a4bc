// Where the users' passwords come from (--user, --users-file, the config file's `users`) and the
// one place that reads them, checks them and refuses duplicates. Messages never hold a password.

import { ConfigError, readText } from "./config-values.ts";
import type { Users } from "./users.ts";

/** RFC 1929: user name and password are each one length byte and 1..255 bytes. */
export const MAX_CREDENTIAL_BYTES = 255;

/** Where one user's password is: written out, in an environment variable, or in a file. */
export type PasswordSource =
  | { kind: "literal"; password: string }
  | { kind: "env"; variable: string; label: string }
  | { kind: "file"; path: string; label: string };

/** One user as configured; `label` says where (`--user alice`, `users.txt line 3`) for messages. */
export type UserSource = { name: string; label: string; password: PasswordSource };

/** The variable `--user NAME` reads: EDGESOCKS_PASSWORD_ and the name upper-cased, other characters as _. */
export function passwordEnvName(name: string): string {
  return `EDGESOCKS_PASSWORD_${name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}

/** Throws unless `name` is 1..255 bytes without ':' (HTTP Basic splits at the first ':'). */
export function checkUserName(name: string, label: string): void {
  const bytes = Buffer.byteLength(name, "utf8");
  if (bytes < 1 || bytes > MAX_CREDENTIAL_BYTES) throw new ConfigError(`${label}: a user name must be 1..${MAX_CREDENTIAL_BYTES} bytes, not ${bytes}`);
  if (name.includes(":")) throw new ConfigError(`${label}: a user name must not contain ':'`);
}

/** Throws unless `password` is 1..255 bytes; the message gives its length, never the password. */
export function checkPassword(password: string, label: string): void {
  const bytes = Buffer.byteLength(password, "utf8");
  if (bytes < 1 || bytes > MAX_CREDENTIAL_BYTES) throw new ConfigError(`${label}: a password must be 1..${MAX_CREDENTIAL_BYTES} bytes (RFC 1929), not ${bytes}`);
}

/** `--user NAME:PASS` (split at the first ':'), or `--user NAME` with the password in passwordEnvName(NAME). */
export function parseUserFlag(text: string): UserSource {
  const colon = text.indexOf(":");
  const name = colon < 0 ? text : text.slice(0, colon);
  const label = `--user ${name}`;
  checkUserName(name, "--user");
  if (colon < 0) return { name, label, password: { kind: "env", variable: passwordEnvName(name), label } };
  const password = text.slice(colon + 1);
  checkPassword(password, label);
  return { name, label, password: { kind: "literal", password } };
}

/** The lines `name:password` of a users file; blank lines and lines starting with # are skipped. */
export function parseUsersFile(text: string, path: string): UserSource[] {
  const users: UserSource[] = [];
  text.split("\n").forEach((rawLine, index) => {
    const line = rawLine.replace(/\r$/, "");
    if (line.trim() === "" || line.trimStart().startsWith("#")) return;
    const label = `--users-file ${path} line ${index + 1}`;
    const colon = line.indexOf(":");
    // The line is not echoed: it may be a password alone.
    if (colon < 0) throw new ConfigError(`${label}: expected name:password`);
    const name = line.slice(0, colon);
    checkUserName(name, label);
    const password = line.slice(colon + 1);
    checkPassword(password, label);
    users.push({ name, label, password: { kind: "literal", password } });
  });
  return users;
}

/** Reads a --users-file and parses it. */
export function readUsersFile(path: string): UserSource[] {
  return parseUsersFile(readText(path, `--users-file ${path}`), path);
}

/** The users with their passwords read from the environment and files; a name given twice is an error. */
export function resolveUsers(sources: readonly UserSource[], env: Record<string, string | undefined>): Users {
  const users = new Map<string, string>();
  const labels = new Map<string, string>();
  for (const source of sources) {
    const earlier = labels.get(source.name);
    if (earlier !== undefined) throw new ConfigError(`user "${source.name}" is configured twice: ${earlier} and ${source.label}`);
    labels.set(source.name, source.label);
    users.set(source.name, readPassword(source.password, env));
  }
  return users;
}

function readPassword(source: PasswordSource, env: Record<string, string | undefined>): string {
  if (source.kind === "literal") return source.password;
  if (source.kind === "env") {
    const password = env[source.variable];
    if (password === undefined || password === "") throw new ConfigError(`${source.label}: the environment variable ${source.variable} holding the password is not set`);
    checkPassword(password, `${source.label}: ${source.variable}`);
    return password;
  }
  // A file's final line break is the editor's, not the password's.
  const password = readText(source.path, `${source.label}: ${source.path}`).replace(/(\r?\n)+$/, "");
  if (password === "") throw new ConfigError(`${source.label}: ${source.path} is empty`);
  checkPassword(password, `${source.label}: ${source.path}`);
  return password;
}
