// Where the agent's own config file lives when no --config names one: the file `edgesocks deploy`
// writes and `edgesocks` alone reads. XDG's base directory rule on Linux, and the same ~/.config
// on macOS (a command-line tool's dot-directory, as git and gh use there, rather than
// ~/Library/Application Support); %APPDATA% on Windows.

import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";

/** The config file's name inside its directory. */
export const CONFIG_FILE_NAME = "config.json";
/** The token file `edgesocks deploy` writes beside the config file. */
export const TOKEN_FILE_NAME = "token";

type PathEnv = Readonly<Record<string, string | undefined>>;

/** The directory of the default config file for `env` (XDG_CONFIG_HOME, HOME, APPDATA) on `platform`. */
export function defaultConfigDir(env: PathEnv, platform: NodeJS.Platform = process.platform): string {
  if (platform === "win32" && env.APPDATA) return join(env.APPDATA, "edgesocks");
  // XDG Base Directory: a relative XDG_CONFIG_HOME is invalid and ignored.
  const xdg = env.XDG_CONFIG_HOME;
  if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, "edgesocks");
  return join(env.HOME || homedir(), ".config", "edgesocks");
}

/** The default config file's path: $XDG_CONFIG_HOME/edgesocks/config.json, else ~/.config/edgesocks/config.json. */
export function defaultConfigPath(env: PathEnv, platform: NodeJS.Platform = process.platform): string {
  return join(defaultConfigDir(env, platform), CONFIG_FILE_NAME);
}

/** The default config file's path when that file exists, else undefined. */
export function existingDefaultConfig(env: PathEnv): string | undefined {
  const path = defaultConfigPath(env);
  return existsSync(path) ? path : undefined;
}
