// The destinations a soak talks to, all on loopback in this process, and a count of the
// connections still open on them once the clients are done: a stream the client reset must be
// reset at its destination too, and one left open there is a leak in the agent or the Worker.

import { readFileSync } from "node:fs";
import type { Server, Socket } from "node:net";
import { echo, startHttpOrigin, startTcpOrigin, type HttpOrigin, type Listening } from "../e2e/origins.ts";
import { startUploadChecker } from "./checked-transfer.ts";
import { startOrigin, type Origin } from "./origin.ts";

export type SoakOrigins = {
  /** origin.ts: 'D' + length answers that many bytes of its PATTERN. */
  pattern: Origin;
  /** checked-transfer.ts: 'U' + length answers with the count of bytes that matched the PATTERN. */
  uploadChecker: Listening<Server>;
  /** e2e/origins.ts: GET /blob and POST /upload with SHA-256 kept per id. */
  http: HttpOrigin;
  /** Echoes every byte; answers a FIN with its own. */
  echo: Listening<Server>;
  /** How the upload checker's connections ended, as the destination saw them. */
  uploadEnds: UploadEnds;
  ports(): number[];
  close(): Promise<void>;
};

/**
 * How uploads ended at the destination: answered once complete, or cut short by a FIN or by a
 * reset. A client's reset of an upload reaches the destination as whichever of the last two the
 * edge's close of its socket produces.
 */
export type UploadEnds = { answered: number; endedShort: number; reset: number };

/** Starts the four destinations on loopback ports of their own. */
export async function startSoakOrigins(): Promise<SoakOrigins> {
  const [pattern, uploadChecker, http, echoOrigin] = await Promise.all([startOrigin(), startUploadChecker(), startHttpOrigin(), startTcpOrigin(echo)]);
  // Listening.close() waits for these servers' connections to end; at the end of a soak any left
  // are a finding already reported, and are destroyed so that closing cannot wait on them.
  const connections = new Set<Socket>();
  for (const { server } of [uploadChecker, echoOrigin]) {
    server.on("connection", (socket: Socket) => {
      connections.add(socket);
      socket.once("close", () => connections.delete(socket));
    });
  }
  const uploadEnds: UploadEnds = { answered: 0, endedShort: 0, reset: 0 };
  uploadChecker.server.on("connection", (socket: Socket) => {
    let seen = false;
    const note = (how: keyof UploadEnds) => {
      if (seen) return;
      seen = true;
      uploadEnds[how]++;
    };
    // The checker answers (ends its side) once every byte is in; a FIN before that ends an
    // upload that is short. It keeps such a connection half-open: close it here.
    socket.once("end", () => {
      if (socket.writableEnded) return note("answered");
      note("endedShort");
      socket.destroy();
    });
    socket.once("error", () => note("reset"));
  });
  return {
    pattern,
    uploadChecker,
    http,
    echo: echoOrigin,
    uploadEnds,
    ports: () => [pattern.port, uploadChecker.port, http.port, echoOrigin.port],
    close: async () => {
      for (const socket of connections) socket.destroy();
      await Promise.all([pattern.close(), uploadChecker.close(), http.close(), echoOrigin.close()]);
    },
  };
}

/** TCP states in /proc/net/tcp's st column (include/net/tcp_states.h) that hold no connection. */
const CLOSED_STATES = new Set(["06" /* TIME_WAIT */, "07" /* CLOSE */, "0A" /* LISTEN */]);
const STATE_NAMES: Record<string, string> = { "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0B": "CLOSING" };

/** Connections whose local end is one of `ports` on 127.0.0.1 (the destination's side), by TCP state name. */
export function openDestinationSockets(ports: number[]): Map<string, number> {
  const wanted = new Set(ports);
  const byState = new Map<string, number>();
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    const portHex = (fields[1] ?? "").split(":")[1];
    const state = fields[3] ?? "";
    if (portHex === undefined || CLOSED_STATES.has(state) || !wanted.has(Number.parseInt(portHex, 16))) continue;
    const name = STATE_NAMES[state] ?? state;
    byState.set(name, (byState.get(name) ?? 0) + 1);
  }
  return byState;
}
