// The agent's token as `edgesocks deploy` keeps it: a file only its owner can read, beside the
// config file. An existing file is kept, so every deploy (and every Worker) shares one token.

import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { MIN_TOKEN_LENGTH } from "../../worker/protocol/index.ts";

/** Random bytes in a new token: 256 bits, 43 base64url characters. */
export const TOKEN_BYTES = 32;

/** A token file that cannot be used; the message names the file, never its content. */
export class TokenFileError extends Error {
  override readonly name = "TokenFileError";
}

/** The token, and what was done to its file: `created` new, or kept, with its mode `tightened` to 0600. */
export type StoredToken = { token: string; created: boolean; tightened: boolean };

/** Reads the token in `path`, or writes a new one there (mode 0600, its directory 0700 if new). */
export function readOrCreateToken(path: string): StoredToken {
  let text: string | undefined;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw new TokenFileError(`${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? "error"})`);
  }
  if (text === undefined) {
    const token = randomBytes(TOKEN_BYTES).toString("base64url");
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      // "wx": never over a file that appeared meanwhile; the mode is set as the file is made, so no other user can read it at any moment.
      writeFileSync(path, `${token}\n`, { mode: 0o600, flag: "wx" });
    } catch (error) {
      throw new TokenFileError(`${path} cannot be written (${(error as NodeJS.ErrnoException).code ?? "error"})`);
    }
    return { token, created: true, tightened: false };
  }
  const token = text.trim();
  if (token === "") throw new TokenFileError(`${path} is empty; remove it and deploy again for a new token`);
  if (/\s|,/.test(token)) throw new TokenFileError(`${path} must hold one token, without white space or commas`);
  if (token.length < MIN_TOKEN_LENGTH) throw new TokenFileError(`${path} holds a token shorter than ${MIN_TOKEN_LENGTH} characters, which the Worker would refuse`);
  let tightened = false;
  if (process.platform !== "win32" && (statSync(path).mode & 0o077) !== 0) {
    chmodSync(path, 0o600);
    tightened = true;
  }
  return { token, created: false, tightened };
}
