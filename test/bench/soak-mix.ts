// What a soak's connections do, drawn at random by weight: bulk downloads and uploads through
// SOCKS5, HTTP CONNECT and plain http:// forwarding, short exchanges, and transfers the client
// resets midway. Each step checks every byte it can (soak-streams.ts, soak-http.ts) and reports
// what it moved; one that throws is a failure.

import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import type { SoakOrigins } from "./soak-origins.ts";
import { httpGetBlob, httpPostUpload, httpShortExchanges, type HttpRoute } from "./soak-http.ts";
import { echoExchange, openStream, patternDownload, patternUpload, type StreamFront } from "./soak-streams.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
/** Bulk transfers: log-uniform, so most are small and a few are large, as a browser's are. */
const BULK_BYTES = { min: 16 * KIB, max: 16 * MIB };
/** Transfers the client resets: long enough to be cut in the middle of a window, not at its edge. */
const RESET_TOTAL_BYTES = { min: 4 * MIB, max: 32 * MIB };
const RESET_AT_FRACTION = { min: 0.05, max: 0.9 };
/** Short exchanges: an HTTP keep-alive connection's requests, and echo round trips. */
const SHORT_REQUESTS = { min: 3, max: 6 };
const SHORT_RESPONSE_BYTES = { min: 64, max: 32 * KIB };
const ECHO_ROUNDS = { min: 3, max: 8 };
const ECHO_PAYLOAD_BYTES = { min: 1, max: 4 * KIB };
/** Upload write sizes, so frames start at every offset of the pattern. */
const UPLOAD_WRITE_BYTES = { min: 1, max: 256 * KIB };

/** A seeded generator (mulberry32): the same --seed draws the same steps in each worker. */
export class Random {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** A whole number in [min, max]. */
  int({ min, max }: { min: number; max: number }): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  /** A whole number in [min, max], uniform in its logarithm. */
  logUniform({ min, max }: { min: number; max: number }): number {
    return Math.round(Math.exp(Math.log(min) + this.next() * (Math.log(max) - Math.log(min))));
  }
  fraction({ min, max }: { min: number; max: number }): number {
    return min + this.next() * (max - min);
  }
}

/** What one step did, when it passed every check. */
export type StepOutcome = { connections: number; downloadBytes: number; uploadBytes: number; resetByClient: boolean };

export type StepContext = {
  proxyPort: number;
  origins: SoakOrigins;
  random: Random;
  /** Unique per step: names the origin's hash records. */
  id: string;
  /** Every socket the step opens, so that a timeout can destroy them. */
  track: (socket: Socket) => void;
};

type Step = { kind: string; weight: number; run(context: StepContext): Promise<StepOutcome> };

const down = (front: StreamFront): Step["run"] => async (context) => {
  const totalBytes = context.random.logUniform(BULK_BYTES);
  const socket = await openStream(front, context.proxyPort, context.origins.pattern.port, context.track);
  const result = await patternDownload(socket, totalBytes);
  return { connections: 1, downloadBytes: result.checkedBytes, uploadBytes: 0, resetByClient: false };
};

const up = (front: StreamFront): Step["run"] => async (context) => {
  const totalBytes = context.random.logUniform(BULK_BYTES);
  const socket = await openStream(front, context.proxyPort, context.origins.uploadChecker.port, context.track);
  const result = await patternUpload(socket, totalBytes, () => context.random.logUniform(UPLOAD_WRITE_BYTES));
  return { connections: 1, downloadBytes: 0, uploadBytes: result.checkedBytes, resetByClient: false };
};

const echo = (front: StreamFront): Step["run"] => async (context) => {
  const payloads = Array.from({ length: context.random.int(ECHO_ROUNDS) }, () => randomBytes(context.random.logUniform(ECHO_PAYLOAD_BYTES)));
  const socket = await openStream(front, context.proxyPort, context.origins.echo.port, context.track);
  const result = await echoExchange(socket, payloads);
  return { connections: 1, downloadBytes: result.checkedBytes, uploadBytes: result.checkedBytes, resetByClient: false };
};

const httpRoute = (context: StepContext): HttpRoute => ({ proxyPort: context.proxyPort, origin: context.origins.http, track: context.track });

/** A reset point inside a transfer of RESET_TOTAL_BYTES. */
function resetPlan(random: Random): { totalBytes: number; resetAfterBytes: number } {
  const totalBytes = random.logUniform(RESET_TOTAL_BYTES);
  return { totalBytes, resetAfterBytes: Math.floor(totalBytes * random.fraction(RESET_AT_FRACTION)) };
}

/** The mix, by weight: about one step in seven is reset by its client. */
const STEPS: Step[] = [
  { kind: "SOCKS5 download", weight: 3, run: down("socks5") },
  { kind: "SOCKS5 upload", weight: 2, run: up("socks5") },
  { kind: "SOCKS5 echo exchange", weight: 3, run: echo("socks5") },
  { kind: "CONNECT download", weight: 2, run: down("connect") },
  { kind: "CONNECT upload", weight: 2, run: up("connect") },
  { kind: "CONNECT echo exchange", weight: 1, run: echo("connect") },
  {
    kind: "http:// GET",
    weight: 2,
    run: async (context) => ({ connections: 1, downloadBytes: (await httpGetBlob(httpRoute(context), context.id, context.random.logUniform(BULK_BYTES), false)).checkedBytes, uploadBytes: 0, resetByClient: false }),
  },
  {
    kind: "http:// POST",
    weight: 1,
    run: async (context) => ({ connections: 1, downloadBytes: 0, uploadBytes: (await httpPostUpload(httpRoute(context), context.id, context.random.logUniform(BULK_BYTES))).checkedBytes, resetByClient: false }),
  },
  {
    kind: "http:// short GETs (keep-alive)",
    weight: 3,
    run: async (context) => {
      const sizes = Array.from({ length: context.random.int(SHORT_REQUESTS) }, () => context.random.logUniform(SHORT_RESPONSE_BYTES));
      const result = await httpShortExchanges(httpRoute(context), context.id, sizes);
      return { connections: result.connections, downloadBytes: result.checkedBytes, uploadBytes: 0, resetByClient: false };
    },
  },
  {
    kind: "SOCKS5 download, client resets",
    weight: 1,
    run: async (context) => {
      const { totalBytes, resetAfterBytes } = resetPlan(context.random);
      const socket = await openStream("socks5", context.proxyPort, context.origins.pattern.port, context.track);
      const result = await patternDownload(socket, totalBytes, resetAfterBytes);
      return { connections: 1, downloadBytes: result.checkedBytes, uploadBytes: 0, resetByClient: result.resetByClient };
    },
  },
  {
    kind: "CONNECT upload, client resets",
    weight: 1,
    run: async (context) => {
      const { totalBytes, resetAfterBytes } = resetPlan(context.random);
      const socket = await openStream("connect", context.proxyPort, context.origins.uploadChecker.port, context.track);
      const result = await patternUpload(socket, totalBytes, () => context.random.logUniform(UPLOAD_WRITE_BYTES), resetAfterBytes);
      return { connections: 1, downloadBytes: 0, uploadBytes: 0, resetByClient: result.resetByClient };
    },
  },
  {
    kind: "http:// GET, client resets",
    weight: 1,
    run: async (context) => {
      const { totalBytes, resetAfterBytes } = resetPlan(context.random);
      const result = await httpGetBlob(httpRoute(context), context.id, totalBytes, false, resetAfterBytes);
      return { connections: 1, downloadBytes: 0, uploadBytes: 0, resetByClient: result.resetByClient };
    },
  },
];

/** Every kind of step, in the order the summary lists them. */
export const STEP_KINDS: readonly string[] = STEPS.map((step) => step.kind);
const TOTAL_WEIGHT = STEPS.reduce((sum, step) => sum + step.weight, 0);

/** A step drawn by weight. */
export function drawStep(random: Random): Step {
  let point = random.next() * TOTAL_WEIGHT;
  for (const step of STEPS) {
    point -= step.weight;
    if (point < 0) return step;
  }
  return STEPS[STEPS.length - 1] as Step;
}

/** A step that did not finish within its deadline: its sockets were destroyed. */
export class StepTimeout extends Error {
  override name = "StepTimeout";
}

/** Runs `step`; after `timeoutMs` destroys every socket it opened and rejects with a StepTimeout. */
export async function runStep(step: Step, context: Omit<StepContext, "track">, timeoutMs: number): Promise<StepOutcome> {
  const sockets = new Set<Socket>();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      for (const socket of sockets) socket.destroy();
      reject(new StepTimeout(`not done within ${timeoutMs / 1000} s`));
    }, timeoutMs);
  });
  const running = step.run({ ...context, track: (socket) => sockets.add(socket) });
  running.catch(() => {}); // after a timeout its own failure is the timeout's consequence
  try {
    return await Promise.race([running, timedOut]);
  } finally {
    clearTimeout(timer);
    for (const socket of sockets) socket.destroy();
  }
}
