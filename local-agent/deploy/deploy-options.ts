// `edgesocks deploy`'s command line: argv in, checked options or a one-line usage error out.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { argvProblem } from "../config/argv-errors.ts";
import { ConfigError, parseEdgeUrl } from "../config/config-values.ts";
import { defaultConfigPath } from "../config/default-path.ts";
import { WORKER_NAME, workerNameFromToml } from "./wrangler-output.ts";

/** The Worker's name when wrangler.toml names none. */
export const FALLBACK_WORKER_NAME = "edgesocks";

export const DEPLOY_USAGE = `Usage: edgesocks deploy [options]

Deploys the edgesocks Worker to your Cloudflare account with wrangler (log in first:
wrangler login), checks that it answers and accepts the token, and writes the agent's config
file, so that \`edgesocks\` alone then runs the proxy through it. The token is made once (32
random bytes) and kept in a file beside the config (mode 0600); it reaches Cloudflare on
wrangler's standard input (wrangler secret put EDGESOCKS_TOKEN), never in its arguments.
Running it again redeploys the Worker and keeps the token, the config and the secret as they are.

Options:
  --name NAME      the Worker's name (default: wrangler.toml's, ${FALLBACK_WORKER_NAME}); another
                   name deploys a second Worker with the same token, added to the config's edges
  --config PATH    the agent's config file to write (default ~/.config/edgesocks/config.json,
                   or $XDG_CONFIG_HOME/edgesocks/config.json); a tokenFile it names is the token
  --url URL        the Worker's URL, when wrangler prints no workers.dev URL (a custom domain or
                   a route)
  --dry-run        say what would be run and written, and do nothing
  -h, --help       show this help
`;

export const DEPLOY_OPTIONS = {
  name: { type: "string" },
  config: { type: "string" },
  url: { type: "string" },
  "dry-run": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export type DeployOptions = { kind: "help" } | { kind: "deploy"; workerName: string; configPath: string; url?: string; dryRun: boolean };

/** Parses `edgesocks deploy`'s arguments; throws ConfigError with a one-line message. */
export function parseDeployOptions(argv: string[], env: Readonly<Record<string, string | undefined>>, packageRoot: string): DeployOptions {
  const problem = argvProblem(argv, { options: DEPLOY_OPTIONS, usage: DEPLOY_USAGE, helpCommand: "edgesocks deploy --help", secretFollowers: [] });
  if (problem !== undefined) throw new ConfigError(problem);
  const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: DEPLOY_OPTIONS });
  if (values.help) return { kind: "help" };
  const workerName = values.name ?? configuredWorkerName(packageRoot);
  if (!WORKER_NAME.test(workerName)) {
    throw new ConfigError(`--name ${JSON.stringify(workerName.slice(0, 80))} is not a Worker name: lower-case letters, digits and dashes, at most 63, not starting or ending with a dash`);
  }
  if (values.url !== undefined) parseEdgeUrl(values.url, "--url");
  if (values.config === "") throw new ConfigError("--config must not be empty");
  return { kind: "deploy", workerName, configPath: values.config ?? defaultConfigPath(env), url: values.url?.replace(/\/+$/, ""), dryRun: values["dry-run"] ?? false };
}

/** The name wrangler.toml gives the Worker, else the fallback. */
function configuredWorkerName(packageRoot: string): string {
  try {
    return workerNameFromToml(readFileSync(join(packageRoot, "wrangler.toml"), "utf8")) ?? FALLBACK_WORKER_NAME;
  } catch {
    return FALLBACK_WORKER_NAME;
  }
}
