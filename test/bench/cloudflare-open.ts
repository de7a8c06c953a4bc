// `npm run bench:cloudflare`: what the first and a repeated connection to a Cloudflare-hosted site
// cost through each fallback, on loopback, with production's refusal emulated for 127.0.0.2.
// The first connection to a name pays for the refused dial and the DoH lookups; a repeated one
// goes straight to the fallback from the isolate's name cache (or, with --on-cloudflare direct,
// from the agent's memory, with no Worker request at all). Each round uses a destination never
// seen: a name for the edge's fallbacks; an IP literal for direct (the agent dials from this
// machine, where the stub's names do not resolve), which the edge recognises before dialing.
//
//   npm run bench:cloudflare -- [--rounds N]

import { parseArgs } from "node:util";
import { CLOUDFLARE_HOSTED_NAME, STUB_RECORDS } from "../dns/dns-message.ts";
import { DohStubPath, startDohStub } from "../dns/doh-stub.ts";
import { runCurl } from "../e2e/curl-run.ts";
import { startHttpOrigin } from "../e2e/origins.ts";
import { startAgent, startEdge, type RunningAgent } from "../e2e/processes.ts";
import { startMicrosocks } from "../upstreams/proxies.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "20" } } });
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds must be a whole number of at least 1");

const nameFor = (setup: string, round: number) => `r${round}-${setup}.${CLOUDFLARE_HOSTED_NAME}`;
/** Direct rounds use 127.0.2.1, 127.0.2.2, ...: each one an origin of its own, emulated as Cloudflare's. */
const literalFor = (round: number) => `127.0.2.${round + 1}`;
if (rounds > 250) throw new Error("--rounds is at most 250 (one loopback address per direct round)");
const setups = ["upstream", "direct", "refuse"] as const;
const records = { ...STUB_RECORDS };
for (const setup of setups) for (let round = 0; round < rounds; round++) records[nameFor(setup, round)] = { a: ["127.0.0.2"], ttlSeconds: 300 };

const stub = await startDohStub(records);
const origin = await startHttpOrigin("127.0.0.2");
const microsocks = await startMicrosocks({ user: "bench", password: "bench-password" });
const baselineOrigin = await startHttpOrigin("127.0.0.1", origin.port);
const literalOrigins = await Promise.all(Array.from({ length: rounds }, (_, round) => startHttpOrigin(literalFor(round), origin.port)));
const vars = { EDGESOCKS_DOH_URL: stub.url(DohStubPath.Answer), EDGESOCKS_EMULATE_CLOUDFLARE_CIDRS: "127.0.0.2/32,127.0.2.0/24" };

/** curl's total time in ms for one request through the agent; throws when the answer is not `expectExit`. */
async function timeOne(agent: RunningAgent, host: string, expectExit: number): Promise<number> {
  const run = await runCurl(["--proxy", `socks5h://127.0.0.1:${agent.port}`, "--write-out", "\n%{time_total}", `http://${host}:${origin.port}/data.json`]);
  if (run.exitCode !== expectExit) throw new Error(`${host}: curl exited ${run.exitCode}: ${run.stderr}`);
  return Number(run.stdout.toString().split("\n").pop()) * 1000;
}

const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)] ?? NaN;
const rows: string[] = [];
try {
  for (const setup of setups) {
    const edge = await startEdge(setup === "upstream" ? { ...vars, EDGESOCKS_UPSTREAM: `socks5://bench:bench-password@127.0.0.1:${microsocks.port}` } : vars);
    const agent = await startAgent(edge.url, edge.token, setup === "direct" ? ["--on-cloudflare", "direct"] : []);
    try {
      const expectExit = setup === "refuse" ? 97 : 0;
      await timeOne(agent, "127.0.0.2", expectExit); // warm-up: the isolate's first request
      const first: number[] = [];
      const repeated: number[] = [];
      for (let round = 0; round < rounds; round++) {
        const host = setup === "direct" ? literalFor(round) : nameFor(setup, round);
        first.push(await timeOne(agent, host, expectExit));
        repeated.push(await timeOne(agent, host, expectExit));
      }
      if (setup === "refuse") {
        // The baseline: a destination not on Cloudflare, relayed by the edge as any other.
        const plain = Array.from({ length: rounds }, () => 0);
        for (let round = 0; round < rounds; round++) plain[round] = await timeOne(agent, "127.0.0.1", 0);
        rows.push(`| not on Cloudflare (127.0.0.1, baseline) | ${median(plain).toFixed(1)} | | |`);
      }
      rows.push(`| ${setup} (${setup === "direct" ? "IP literal" : "name"}) | ${median(first).toFixed(1)} | ${median(repeated).toFixed(1)} | ${(median(repeated) / median(first)).toFixed(2)} |`);
    } finally {
      await agent.stop();
      await edge.stop();
    }
  }
} finally {
  await microsocks.stop();
  await baselineOrigin.close();
  await Promise.all(literalOrigins.map((literal) => literal.close()));
  await origin.close();
  await stub.close();
}
console.log(`rounds: ${rounds} names per setup, p50 of curl's time_total (SOCKS5 handshake to last byte)\n`);
console.log("| setup | first connection (ms) | repeated (ms) | repeated / first |\n| --- | --- | --- | --- |");
console.log(rows.join("\n"));
