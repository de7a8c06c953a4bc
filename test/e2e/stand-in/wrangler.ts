// A stand-in for wrangler, for `edgesocks deploy` where Cloudflare cannot be reached: it answers
// `whoami`, `secret put` and `deploy` as wrangler 4 does (the lines of
// node_modules/wrangler/wrangler-dist/cli.js), and records each call to calls.jsonl in
// $STANDIN_WRANGLER_STATE: its argv, working directory, the names (never the values) of its
// environment, how many bytes came on stdin, and the names of any variables whose value holds a
// secret it was given. The "account" is that directory: a secret put is stored in
// workers/NAME/secrets/KEY, a deploy marks workers/NAME/deployed. After either, it asks the test
// (cloudflare-account.ts) to bring a real local edge in line with the account and waits for its
// answer, the Worker's URL, as wrangler returns once the new version is uploaded.
//
// Marker files in the state directory change what it answers: logged-out (whoami: not
// authenticated), deploy-fails (deploy: an API error, exit 1), no-workers-dev (deploy: no target).

import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync, appendFileSync } from "node:fs";
import { join } from "node:path";

/** How long a call waits for the test to bring the edge in line (wrangler dev starts in 3-30 s here). */
const SYNC_TIMEOUT_MS = 150_000;

const stateDir = process.env.STANDIN_WRANGLER_STATE;
if (stateDir === undefined || stateDir === "") {
  process.stderr.write("✘ [ERROR] stand-in wrangler: STANDIN_WRANGLER_STATE is not set\n");
  process.exit(1);
}
const state = stateDir;
const argv = process.argv.slice(2);
const stdin = process.stdin.isTTY ? "" : await readStdin();

record();
const [command, ...rest] = argv;
if (command === "whoami") whoami();
else if (command === "secret" && rest[0] === "put" && rest[1] !== undefined) await secretPut(rest[1]);
else if (command === "deploy") await deploy();
else fail(`Unknown arguments: ${argv.join(" ")} (the stand-in wrangler knows whoami, secret put and deploy)`);

function whoami(): void {
  console.log("Getting User settings...");
  if (existsSync(join(state, "logged-out"))) {
    console.log("You are not authenticated. Please run `wrangler login`.");
    console.log("To deploy without logging in, run a command like `wrangler deploy --temporary` to use a temporary preview account.");
    return;
  }
  console.log("👋 You are logged in with an OAuth Token, associated with the email stand-in@example.com.");
}

async function secretPut(key: string): Promise<void> {
  const name = workerName();
  // wrangler: trimTrailingWhitespace(await readFromStdin()) when stdin is not a terminal.
  const value = stdin.replace(/\s+$/, "");
  if (value === "") fail("Secret value cannot be empty");
  console.log(`🌀 Creating the secret for the Worker "${name}" `);
  mkdirSync(join(state, "workers", name, "secrets"), { recursive: true, mode: 0o700 });
  writeFileSync(join(state, "workers", name, "secrets", key), value, { mode: 0o600 });
  await sync(name);
  console.log(`✨ Success! Uploaded secret ${key}`);
}

async function deploy(): Promise<void> {
  const name = workerName();
  const toml = readToml();
  const main = /^\s*main\s*=\s*"([^"]+)"/m.exec(toml)?.[1];
  if (main === undefined || !existsSync(join(process.cwd(), main))) fail("Missing entry-point to Worker script or to assets directory");
  if (existsSync(join(state, "deploy-fails"))) {
    process.stderr.write(`\n✘ [ERROR] A request to the Cloudflare API (/accounts/0123456789abcdef/workers/scripts/${name}) failed.\n\n  Authentication error [code: 10000]\n\n`);
    process.exit(1);
  }
  mkdirSync(join(state, "workers", name), { recursive: true });
  appendFileSync(join(state, "workers", name, "deployed"), `${Date.now()}\n`);
  const url = await sync(name);
  console.log("Total Upload: 412.03 KiB / gzip: 79.88 KiB");
  console.log(`Uploaded ${name} (1.52 sec)`);
  if (existsSync(join(state, "no-workers-dev")) || url === undefined) {
    console.log(`No targets deployed for ${name} (0.31 sec)`);
  } else {
    console.log(`Deployed ${name} triggers (0.48 sec)`);
    console.log(`  ${url}`);
  }
  console.log("Current Version ID: 6f0b3c1e-0d2a-4c57-9a43-1f7b2d8e9c10");
}

/** Asks the test to bring the local edge for `name` in line with the account; resolves with the Worker's URL, if it is deployed. */
async function sync(name: string): Promise<string | undefined> {
  const dir = join(state, "sync");
  mkdirSync(dir, { recursive: true });
  const id = `${Date.now()}-${process.pid}-${readdirSync(dir).length}`;
  writeFileSync(join(dir, `${id}.tmp`), name);
  renameSync(join(dir, `${id}.tmp`), join(dir, `${id}.request`));
  const deadline = Date.now() + SYNC_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const reply = join(dir, `${id}.reply`);
    if (existsSync(reply)) {
      const answer = JSON.parse(readFileSync(reply, "utf8")) as { url?: string; error?: string };
      if (answer.error !== undefined) fail(`the stand-in's account could not start the Worker: ${answer.error}`);
      return answer.url;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  fail(`the stand-in's account did not answer within ${SYNC_TIMEOUT_MS} ms`);
}

function workerName(): string {
  const index = argv.indexOf("--name");
  const name = index >= 0 ? argv[index + 1] : /^\s*name\s*=\s*"([^"]+)"/m.exec(readToml())?.[1];
  if (name === undefined) fail("Required Worker name missing. Please specify the Worker name in your wrangler.toml file, or pass it as an argument with `--name <worker-name>`");
  return name;
}

function readToml(): string {
  try {
    return readFileSync(join(process.cwd(), "wrangler.toml"), "utf8");
  } catch {
    return fail(`Could not find a wrangler.toml in ${process.cwd()}`);
  }
}

/** One line per call; what it holds is safe to print: no secret value, only names and sizes. */
function record(): void {
  const secrets = storedSecrets();
  if (stdin.trim() !== "") secrets.push(stdin.trim());
  const envNamesHoldingASecret = Object.entries(process.env)
    .filter(([, value]) => value !== undefined && secrets.some((secret) => value.includes(secret)))
    .map(([name]) => name);
  const call = { argv, cwd: process.cwd(), envNames: Object.keys(process.env).sort(), stdinBytes: Buffer.byteLength(stdin), stdinIsTty: process.stdin.isTTY === true, envNamesHoldingASecret };
  appendFileSync(join(state, "calls.jsonl"), `${JSON.stringify(call)}\n`);
}

function storedSecrets(): string[] {
  const workers = join(state, "workers");
  if (!existsSync(workers)) return [];
  return readdirSync(workers).flatMap((name) => {
    const dir = join(workers, name, "secrets");
    return existsSync(dir) ? readdirSync(dir).map((key) => readFileSync(join(dir, key), "utf8")) : [];
  });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function fail(message: string): never {
  process.stderr.write(`\n✘ [ERROR] ${message}\n\n`);
  process.exit(1);
}
