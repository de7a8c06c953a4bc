// `edgesocks deploy`: the Worker on Cloudflare and the agent's config file in one command, with
// wrangler doing the Cloudflare part. The steps, each with one line of progress on stdout and
// one line on stderr if it fails (exit 1; 2 for a bad command line):
//   wrangler whoami; the token file (made if missing); wrangler secret put EDGESOCKS_TOKEN (token
//   on stdin) before the first deploy with a new token; wrangler deploy; /healthz and the token
//   against the deployed URL, again for a few seconds while the new version spreads (and, when
//   the Worker refuses a kept token, wrangler secret put and again); the config file.
// A second run with the same token finds the Worker accepting it and puts no secret: the
// Worker's EDGESOCKS_TOKEN, which may hold other devices' tokens too, stays as it is.

import type { EdgeEnv } from "../../worker/config.ts";
import { ConfigError } from "../config/config-values.ts";
import { mergeConfig, readExistingConfig, tokenFileFor, writeConfigFile } from "../deploy/config-writer.ts";
import { DEPLOY_USAGE, parseDeployOptions } from "../deploy/deploy-options.ts";
import { TokenFileError, readOrCreateToken } from "../deploy/token-store.ts";
import { describeProbe, isLive, lacksToken, probeUntil } from "../deploy/worker-checks.ts";
import { PACKAGE_ROOT, WRANGLER_TIMEOUT_MS, findWrangler, runWrangler, type WranglerRun } from "../deploy/wrangler-runner.ts";
import { deployedUrl, saysNotLoggedIn, wranglerFailure } from "../deploy/wrangler-output.ts";
import { defaultConfigPath } from "../config/default-path.ts";

/** The Worker's secret that holds the tokens it accepts (worker/config.ts). */
const TOKEN_SECRET = "EDGESOCKS_TOKEN" satisfies keyof EdgeEnv;
/** How long the new Worker gets to answer /healthz as this release and accept the token, after deploy and after a secret put. */
const LIVE_TIMEOUT_MS = 60_000;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;
const PREFIX = "edgesocks deploy: ";

/** A step that failed: its one line goes to stderr and the command exits 1. */
class DeployFailure extends Error {
  override readonly name = "DeployFailure";
}

/** Runs `edgesocks deploy` with the arguments after the subcommand; resolves to the exit status. */
export async function deployCommand(argv: string[]): Promise<number> {
  let options;
  try {
    options = parseDeployOptions(argv, process.env, PACKAGE_ROOT);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${PREFIX}${error.message}\n`);
    return EXIT_USAGE;
  }
  if (options.kind === "help") {
    process.stdout.write(DEPLOY_USAGE);
    return 0;
  }
  try {
    await deploy(options);
    return 0;
  } catch (error) {
    if (!(error instanceof DeployFailure || error instanceof ConfigError || error instanceof TokenFileError)) throw error;
    process.stderr.write(`${PREFIX}${error.message}\n`);
    return EXIT_FAILURE;
  }
}

async function deploy({ workerName, configPath, url: givenUrl, dryRun }: { workerName: string; configPath: string; url?: string; dryRun: boolean }): Promise<void> {
  const say = (line: string) => process.stdout.write(`${PREFIX}${line}\n`);
  // A config file the agent would refuse is reported before anything is deployed.
  const tokenFile = tokenFileFor(configPath, readExistingConfig(configPath));
  const wrangler = findWrangler(process.env.PATH);
  if (wrangler === undefined) {
    throw new DeployFailure("wrangler is not installed (not on PATH, nor in this package's node_modules): install it with `npm install -g wrangler`, run `wrangler login`, then edgesocks deploy again");
  }
  if (dryRun) {
    say(`would run ${wrangler.label} in ${PACKAGE_ROOT}: whoami; secret put ${TOKEN_SECRET} --name ${workerName} (the token on stdin, from ${tokenFile}, made if missing; only if the Worker does not accept it yet); deploy --name ${workerName}`);
    say(`would then check ${givenUrl ?? "the deployed URL"}/healthz and the token, and add it to the edges of ${configPath}; nothing was run or written`);
    return;
  }
  // Wrangler needs the user's environment (HOME, CLOUDFLARE_API_TOKEN, proxies), not the agent's secrets.
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== TOKEN_SECRET && !name.startsWith("EDGESOCKS_PASSWORD_")));
  const wranglerRun = (args: string[], stdin?: string) => runWrangler(wrangler, args, { cwd: PACKAGE_ROOT, env, ...(stdin === undefined ? {} : { stdin }) });

  const whoami = await wranglerRun(["whoami"]);
  if (failed(whoami) || saysNotLoggedIn(whoami.output)) {
    if (saysNotLoggedIn(whoami.output)) throw new DeployFailure("wrangler is not logged in to Cloudflare: run `wrangler login` (or set CLOUDFLARE_API_TOKEN), then edgesocks deploy again");
    throw new DeployFailure(`wrangler whoami failed (${wrangler.label}): ${failureText(whoami)}`);
  }
  say(`logged in to Cloudflare (wrangler whoami, ${wrangler.label})`);

  const stored = readOrCreateToken(tokenFile);
  say(stored.created ? `new token in ${tokenFile} (mode 0600)` : `token from ${tokenFile}${stored.tightened ? " (its mode tightened to 0600)" : ""}`);
  let secretPut = false;
  const putSecret = async () => {
    const put = await wranglerRun(["secret", "put", TOKEN_SECRET, "--name", workerName], stored.token);
    if (failed(put)) throw new DeployFailure(`wrangler secret put ${TOKEN_SECRET} --name ${workerName} failed: ${failureText(put)}`);
    secretPut = true;
    say(`the token is now the secret ${TOKEN_SECRET} of the Worker ${workerName} (wrangler secret put, on stdin)`);
  };
  // A new token cannot be the Worker's yet: put first, so the new Worker never runs without it.
  if (stored.created) await putSecret();

  const deployed = await wranglerRun(["deploy", "--name", workerName]);
  if (failed(deployed)) throw new DeployFailure(`wrangler deploy --name ${workerName} failed: ${failureText(deployed)}`);
  const url = givenUrl ?? deployedUrl(deployed.output);
  if (url === undefined) {
    throw new DeployFailure(`deployed ${workerName}, but wrangler printed no workers.dev URL (is it served on a custom domain or route only?); give its URL: edgesocks deploy --name ${workerName} --url https://...`);
  }
  say(`deployed ${workerName}: ${url}`);

  let probe = await probeUntil(url, stored.token, (check) => isLive(check) || (!secretPut && lacksToken(check)), Date.now() + LIVE_TIMEOUT_MS);
  if (!isLive(probe) && !secretPut && lacksToken(probe)) {
    say(`${describeProbe(probe, url)}; setting it as the Worker's secret`);
    await putSecret();
    probe = await probeUntil(url, stored.token, isLive, Date.now() + LIVE_TIMEOUT_MS);
  }
  if (!isLive(probe)) {
    throw new DeployFailure(`${describeProbe(probe, url)} after ${LIVE_TIMEOUT_MS / 1000} s; the config file was not written. Deploy again (the token is kept), or see edgesocks doctor`);
  }
  say(`${url}/healthz answers as this release, and the Worker accepts the token`);

  // Read again: the user may have edited it while wrangler ran.
  const plan = mergeConfig(readExistingConfig(configPath), configPath, url, tokenFile);
  if (plan.changed) writeConfigFile(configPath, plan.text);
  say(plan.changed ? `wrote ${configPath} (mode 0600): edges ${plan.edges.join(", ")}` : `${configPath} already names ${url}; left as it is`);
  say(configPath === defaultConfigPath(process.env) ? "ready: run `edgesocks` to start the proxy" : `ready: run \`edgesocks --config ${configPath}\` to start the proxy`);
}

function failed(run: WranglerRun): boolean {
  return run.status !== 0 || run.timedOut || run.spawnError !== undefined;
}

/** Why a wrangler run failed, in one line. */
function failureText(run: WranglerRun): string {
  if (run.spawnError !== undefined) return `could not start it (${run.spawnError})`;
  const said = wranglerFailure(run.output);
  const why = run.timedOut ? `stopped after ${WRANGLER_TIMEOUT_MS / 60_000} minutes` : `exit status ${run.status}`;
  return said === "" ? why : `${said} (${why})`;
}
