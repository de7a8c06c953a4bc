#!/usr/bin/env node
// The `edgesocks` command. An installed package runs the JavaScript that `npm pack` compiled into
// dist/ (Node 20 or newer); a clone, which has the TypeScript sources, runs them as `npm start`
// does, through Node's type stripping (Node 22.18 or newer; `npx edgesocks` there uses the
// project's own Node 22), so a stale dist/ left by an `npm pack` there is never what runs.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const source = new URL("../local-agent/cli/main.ts", import.meta.url);
const built = new URL("../dist/local-agent/cli/main.js", import.meta.url);
const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);

function fail(message) {
  process.stderr.write(`edgesocks: ${message}\n`);
  process.exit(1);
}

if (existsSync(fileURLToPath(source))) {
  const stripsTypes = major >= 24 || (major === 23 && minor >= 6) || (major === 22 && minor >= 18);
  if (!stripsTypes) {
    fail(`this checkout runs its TypeScript sources, which need Node 22.18 or newer, and this is Node ${process.version} (${process.execPath}); run npx edgesocks inside the checkout, which uses the project's Node 22`);
  }
  await import(source.href);
} else {
  if (major < 20) fail(`needs Node 20 or newer, and this is Node ${process.version} (${process.execPath})`);
  if (!existsSync(fileURLToPath(built))) fail(`${fileURLToPath(built)} is missing: this copy of edgesocks was not built (npm pack builds it)`);
  await import(built.href);
}
