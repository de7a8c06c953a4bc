// The agent's config file as `edgesocks deploy` leaves it: the deployed Worker among its edges,
// its tokenFile set, and whatever else the user put there untouched. The merge is pure; the
// result is checked by the agent's own parser before it is written, so deploy never leaves a
// file `edgesocks` would refuse. The token itself is never written here.

import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { parseConfigFile } from "../config/config-file.ts";
import { ConfigError, parseEdgeUrl } from "../config/config-values.ts";
import { TOKEN_FILE_NAME } from "../config/default-path.ts";

type JsonObject = Record<string, unknown>;

/** A config file as read: its text and its top-level object, already checked. */
export type ExistingConfig = { text: string; root: JsonObject };

/** What the merge gives: the text to write, whether it differs from the file, and the edges it names. */
export type ConfigPlan = { text: string; changed: boolean; edges: string[]; addedEdge: boolean };

/** The config at `path`, checked as the agent checks it; undefined when there is none. Throws ConfigError. */
export function readExistingConfig(path: string): ExistingConfig | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    throw new ConfigError(`${path} cannot be read (${code ?? "error"})`);
  }
  // The agent's parser names the field at fault, and never quotes a secret.
  parseConfigFile(text, path);
  return { text, root: JSON.parse(text) as JsonObject };
}

/** The token file the config names (absolute), or the default one beside the config file. */
export function tokenFileFor(configPath: string, existing: ExistingConfig | undefined): string {
  const named = existing?.root.tokenFile;
  return typeof named === "string" ? resolve(dirname(configPath), named) : join(dirname(resolve(configPath)), TOKEN_FILE_NAME);
}

/**
 * The config with `edgeUrl` among its edges ("edge" stays one URL until a second is added, then
 * becomes a list) and `tokenFile` set if it was not; everything else as it was. Pure.
 */
export function mergeConfig(existing: ExistingConfig | undefined, configPath: string, edgeUrl: string, tokenFile: string): ConfigPlan {
  const root: JsonObject = existing === undefined ? {} : structuredClone(existing.root);
  const given = root.edge === undefined ? [] : Array.isArray(root.edge) ? (root.edge as string[]) : [root.edge as string];
  const target = parseEdgeUrl(edgeUrl).tunnelUrl;
  const addedEdge = !given.some((text) => parseEdgeUrl(text).tunnelUrl === target);
  const edges = addedEdge ? [...given, edgeUrl] : given;
  if (addedEdge) root.edge = edges.length === 1 ? edgeUrl : edges;
  const addedTokenFile = root.tokenFile === undefined;
  // Relative paths in the file are relative to it: a token file beside it is named alone.
  if (addedTokenFile) root.tokenFile = dirname(resolve(tokenFile)) === dirname(resolve(configPath)) ? basename(tokenFile) : resolve(tokenFile);
  const changed = existing === undefined || addedEdge || addedTokenFile;
  // An unchanged file keeps its own text (its layout); a changed one is written anew, new fields last.
  const text = changed ? `${JSON.stringify(root, null, 2)}\n` : (existing?.text ?? "");
  parseConfigFile(text, configPath);
  return { text, changed, edges, addedEdge };
}

/** Writes `text` to `path` in one step (a temporary file renamed over it), mode 0600; its directory 0700 if new. */
export function writeConfigFile(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    writeFileSync(temporary, text, { mode: 0o600, flag: "wx" });
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw new ConfigError(`${path} cannot be written (${(error as NodeJS.ErrnoException).code ?? "error"})`);
  }
}
