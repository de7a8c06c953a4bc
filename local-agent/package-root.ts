// Where the edgesocks package is on disk: the folder that holds its package.json, wrangler.toml
// and worker/. Counting "../" from a module does not find it, since the same module runs from
// local-agent/ in a clone and from dist/local-agent/ in the installed package.

import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The nearest folder at or above `from` holding both package.json and wrangler.toml; throws if there is none. */
export function packageRootFrom(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "wrangler.toml"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no edgesocks package (package.json beside wrangler.toml) at or above ${from}`);
  }
}

/** The package this module belongs to. */
export const PACKAGE_ROOT = packageRootFrom(dirname(fileURLToPath(import.meta.url)));
